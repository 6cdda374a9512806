//! Garbage collection's side of the MetaStore: the review queue, the liveness rules and the
//! two-phase sweep of blob rows (a manifest's delete cascade is in `manifests.rs`).
//!
//! Whatever drops a reference queues the object in `gc_review` in the same transaction.
//! A review decides one item in one short write transaction, so a decision can never be
//! invalidated between its read and its write: on SQLite every writer is serialized against
//! it (`BEGIN IMMEDIATE`); on PostgreSQL it locks the manifest or blob row for update before
//! it looks, and every write that relies on that row (a tag write, a manifest push, a link, a
//! touch) locks it too. Review items are claimed with `FOR UPDATE SKIP LOCKED`. The cost of
//! GC thus follows the churn, not the size of the registry.

use sqlx::{Any, AnyConnection, Row, Transaction};

use crate::{MetaStore, Result, locking, now_ms};

/// The rules a review applies.
#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Fresh uploads, links and touches younger than this are kept, and so are referrers
    /// whose subject has not arrived yet.
    pub grace_ms: i64,
    /// Untagged manifests (neither tagged, nor listed by an index, nor referring to a live
    /// subject) are deleted this long after they lost their last tag; `None` keeps them.
    pub untagged_age_ms: Option<i64>,
    /// How long a blob marked `deleting` stays claimed by its sweeper before another run
    /// finishes the sweep.
    pub lease_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewItem {
    Manifest { repo_id: i64, digest: String },
    Blob { digest: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestReview {
    /// Already deleted.
    Gone,
    Live,
    /// Not deletable before this time; the item is requeued for then.
    KeepUntil(i64),
    /// Deleted, with this many manifests in all (cascade included).
    Deleted(usize),
}

/// A blob generation marked `deleting`: its bytes may be removed, then [`MetaStore::finish_sweep`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Sweep {
    pub digest: String,
    pub generation: String,
    #[sqlx(try_from = "i64")]
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobReview {
    Gone,
    Live,
    KeepUntil(i64),
    Sweep(Sweep),
}

/// How storage is used, per repository and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StorageUsage {
    /// Bytes of all live blobs (each stored once).
    pub stored_bytes: u64,
    pub blob_count: u64,
    /// Bytes of blobs that some manifest references.
    pub referenced_bytes: u64,
    /// Bytes of blobs no manifest references: collected once their grace period is over.
    pub reclaimable_bytes: u64,
    pub repositories: Vec<RepoUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepoUsage {
    pub name: String,
    /// Bytes of the blobs this repository's manifests reference.
    pub referenced_bytes: u64,
    /// The part of `referenced_bytes` that other repositories' manifests reference too.
    pub shared_bytes: u64,
    /// Bytes of manifest documents.
    pub manifest_bytes: u64,
}

pub(crate) async fn enqueue(
    conn: &mut AnyConnection,
    kind: &str,
    key: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO gc_review (kind, key, review_after) VALUES ($1, $2, $3)
         ON CONFLICT (kind, key) DO UPDATE SET review_after = CASE WHEN excluded.review_after < gc_review.review_after
                 THEN excluded.review_after ELSE gc_review.review_after END",
    )
    .bind(kind)
    .bind(key)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) fn manifest_key(repo_id: i64, digest: &str) -> String {
    format!("{repo_id}@{digest}")
}

pub(crate) async fn enqueue_blob(
    tx: &mut Transaction<'static, Any>,
    digest: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    enqueue(tx, "blob", digest, at).await
}

pub(crate) async fn enqueue_manifest(
    tx: &mut Transaction<'static, Any>,
    repo_id: i64,
    digest: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    enqueue(tx, "manifest", &manifest_key(repo_id, digest), at).await
}

/// Locks an item's review row for the rest of a review, before the review looks at what the
/// item depends on. A change that releases the item (a delete that drops its last reference
/// or tag) queues it again in its own transaction; without the lock the review could read the
/// state from before that change, wait for the change to commit, and then delete the row the
/// change had just re-queued, so the item would never be reviewed again. With it, the change
/// either commits first and the review sees it, or waits and queues the item anew.
async fn lock_review(conn: &mut AnyConnection, kind: &str, key: &str) -> Result<(), sqlx::Error> {
    let dialect = crate::dialect_of(conn);
    sqlx::query(locking!(
        dialect,
        "SELECT 1 FROM gc_review WHERE kind = $1 AND key = $2",
        "FOR UPDATE"
    ))
    .bind(kind)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    Ok(())
}

pub(crate) async fn dequeue(
    conn: &mut AnyConnection,
    kind: &str,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM gc_review WHERE kind = $1 AND key = $2")
        .bind(kind)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

async fn requeue(
    conn: &mut AnyConnection,
    kind: &str,
    key: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE gc_review SET review_after = $3 WHERE kind = $1 AND key = $2")
        .bind(kind)
        .bind(key)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// A GC transaction: one review in the real run, the whole run (rolled back) in a dry run.
pub struct GcTx {
    tx: Transaction<'static, Any>,
    dialect: crate::Dialect,
    cache: std::sync::Arc<crate::cache::ReadCache>,
    deleted_manifests: bool,
}

impl MetaStore {
    pub async fn gc_tx(&self) -> Result<GcTx> {
        Ok(GcTx {
            tx: self.begin_write().await?,
            dialect: self.dialect,
            cache: self.cache.clone(),
            deleted_manifests: false,
        })
    }

    /// Removes the row of a swept blob once its bytes are gone.
    pub async fn finish_sweep(&self, sweep: &Sweep) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM blobs WHERE digest = $1 AND generation = $2 AND state = 'deleting'",
        )
        .bind(&sweep.digest)
        .bind(&sweep.generation)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Blob rows left `deleting` by a sweeper whose lease ran out (it died); they are leased
    /// again to the caller, which finishes them.
    pub async fn expired_sweeps(&self, lease_ms: i64, limit: u32) -> Result<Vec<Sweep>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let sweeps: Vec<Sweep> = sqlx::query_as(locking!(
            self.dialect,
            "SELECT digest, generation, size FROM blobs WHERE state = 'deleting' AND lease_until < $1 LIMIT $2",
            "FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        for s in &sweeps {
            sqlx::query("UPDATE blobs SET lease_until = $3 WHERE digest = $1 AND generation = $2")
                .bind(&s.digest)
                .bind(&s.generation)
                .bind(now + lease_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(sweeps)
    }

    /// Makes up to `limit` review items that are due after `now` due at `now`, and returns
    /// how many. A run with a shorter grace than the configured one calls this first, so that
    /// items an earlier run deferred are reviewed under the shorter grace; the review then sets
    /// each item's time again from its data, so nothing is lost by bringing it forward.
    pub async fn bring_reviews_forward(&self, now: i64, limit: u32) -> Result<u64> {
        self.write_batch(
            "UPDATE gc_review SET review_after = $1 WHERE review_after > $1 AND (kind, key) IN
               (SELECT kind, key FROM gc_review WHERE review_after > $1 LIMIT $2)",
            now,
            limit,
        )
        .await
    }

    /// Queues every blob and every manifest for review: the occasional full audit.
    pub async fn enqueue_everything(&self) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let a = sqlx::query(
            "INSERT INTO gc_review (kind, key, review_after) SELECT 'blob', digest, $1 FROM blobs WHERE state = 'live'
             ON CONFLICT (kind, key) DO UPDATE SET review_after = CASE WHEN excluded.review_after < gc_review.review_after
                 THEN excluded.review_after ELSE gc_review.review_after END",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let b = sqlx::query(
            "INSERT INTO gc_review (kind, key, review_after)
             SELECT 'manifest', repo_id || '@' || digest, $1 FROM manifests WHERE true
             ON CONFLICT (kind, key) DO UPDATE SET review_after = CASE WHEN excluded.review_after < gc_review.review_after
                 THEN excluded.review_after ELSE gc_review.review_after END",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(a + b)
    }

    /// The live blob row of `digest` whatever its state (scrub compares it with the store).
    pub async fn blob_generations(&self, digest: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT generation, state FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Live blob rows after `after` (digest order), for scrub.
    pub async fn live_blobs_page(&self, after: &str, limit: u32) -> Result<Vec<Sweep>> {
        Ok(sqlx::query_as(
            "SELECT digest, generation, size FROM blobs WHERE state = 'live' AND digest > $1 ORDER BY digest LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?)
    }

    /// Referenced, shared and reclaimable bytes, per repository and in total.
    pub async fn storage_usage(&self) -> Result<StorageUsage> {
        let mut u = StorageUsage::default();
        let r =
            sqlx::query("SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs WHERE state = 'live'")
                .fetch_one(&self.read)
                .await?;
        u.blob_count = r.get::<i64, _>(0) as u64;
        u.stored_bytes = r.get::<i64, _>(1) as u64;
        u.referenced_bytes = sqlx::query_scalar::<_, i64>(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs b WHERE state = 'live'
               AND EXISTS (SELECT 1 FROM manifest_refs mr WHERE mr.blob = b.digest)",
        )
        .fetch_one(&self.read)
        .await? as u64;
        u.reclaimable_bytes = u.stored_bytes - u.referenced_bytes.min(u.stored_bytes);
        let rows = sqlx::query(
            "SELECT r.name,
                    CAST(COALESCE((SELECT SUM(b.size) FROM blobs b WHERE b.state = 'live' AND b.digest IN
                        (SELECT blob FROM manifest_refs WHERE repo_id = r.id)), 0) AS BIGINT),
                    CAST(COALESCE((SELECT SUM(b.size) FROM blobs b WHERE b.state = 'live' AND b.digest IN
                        (SELECT blob FROM manifest_refs WHERE repo_id = r.id)
                        AND EXISTS (SELECT 1 FROM manifest_refs o WHERE o.blob = b.digest AND o.repo_id <> r.id)), 0) AS BIGINT),
                    CAST(COALESCE((SELECT SUM(size) FROM manifests WHERE repo_id = r.id), 0) AS BIGINT)
             FROM repositories r ORDER BY r.name",
        )
        .fetch_all(&self.read)
        .await?;
        u.repositories = rows
            .iter()
            .map(|r| RepoUsage {
                name: r.get(0),
                referenced_bytes: r.get::<i64, _>(1) as u64,
                shared_bytes: r.get::<i64, _>(2) as u64,
                manifest_bytes: r.get::<i64, _>(3) as u64,
            })
            .collect();
        Ok(u)
    }
}

impl GcTx {
    pub async fn commit(mut self) -> Result<()> {
        if self.deleted_manifests {
            self.cache
                .notify(&mut *self.tx, crate::cache::NOTE_MANIFESTS)
                .await?;
        }
        self.tx.commit().await?;
        if self.deleted_manifests {
            self.cache.clear();
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }

    /// Blob rows left `deleting` whose lease ran out: what the run would finish (count, bytes).
    pub async fn expired_sweep_totals(&mut self, now: i64) -> Result<(u64, u64)> {
        let r = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs WHERE state = 'deleting' AND lease_until < $1",
        )
        .bind(now)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok((r.get::<i64, _>(0) as u64, r.get::<i64, _>(1) as u64))
    }

    /// Review items due at `now`, oldest first.
    pub async fn due_reviews(&mut self, now: i64, limit: u32) -> Result<Vec<ReviewItem>> {
        // Claimed: another node's collector skips what this one holds.
        let rows = sqlx::query(locking!(
            self.dialect,
            "SELECT kind, key FROM gc_review WHERE review_after <= $1 ORDER BY review_after, kind, key LIMIT $2",
            "FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let kind: &str = r.get(0);
                let key: String = r.get(1);
                match kind {
                    "blob" => Some(ReviewItem::Blob { digest: key }),
                    _ => {
                        let (repo, digest) = key.split_once('@')?;
                        Some(ReviewItem::Manifest {
                            repo_id: repo.parse().ok()?,
                            digest: digest.to_owned(),
                        })
                    }
                }
            })
            .collect())
    }

    /// Decides whether a manifest is live and deletes it (with its dependents) if not.
    pub async fn review_manifest(
        &mut self,
        repo_id: i64,
        digest: &str,
        policy: &GcPolicy,
        now: i64,
    ) -> Result<ManifestReview> {
        let key = manifest_key(repo_id, digest);
        let dialect = self.dialect;
        let conn = &mut *self.tx;
        // Locked for update first: a push that tags, lists or refers to it holds it for share,
        // so the checks below see such a push once it committed, or it waits for this review.
        let row = sqlx::query(locking!(
            dialect,
            "SELECT created_at, untagged_at, subject FROM manifests WHERE repo_id = $1 AND digest = $2",
            "FOR UPDATE"
        ))
        .bind(repo_id)
        .bind(digest)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            dequeue(conn, "manifest", &key).await?;
            return Ok(ManifestReview::Gone);
        };
        lock_review(conn, "manifest", &key).await?;
        let created: i64 = row.get(0);
        let untagged_at: Option<i64> = row.get(1);
        let subject: Option<String> = row.get(2);
        if crate::manifests::tagged_or_listed(conn, repo_id, digest).await? {
            dequeue(conn, "manifest", &key).await?;
            return Ok(ManifestReview::Live);
        }
        let delete_after = if let Some(subject) = subject {
            let present: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2")
                    .bind(repo_id)
                    .bind(&subject)
                    .fetch_optional(&mut *conn)
                    .await?;
            if present.is_some() {
                dequeue(conn, "manifest", &key).await?;
                return Ok(ManifestReview::Live);
            }
            // The spec lets a referrer arrive before its subject: wait for it a grace period.
            created + policy.grace_ms
        } else {
            match policy.untagged_age_ms {
                None => {
                    dequeue(conn, "manifest", &key).await?;
                    return Ok(ManifestReview::Live);
                }
                Some(age) => untagged_at.unwrap_or(created) + age,
            }
        };
        if delete_after > now {
            requeue(conn, "manifest", &key, delete_after).await?;
            return Ok(ManifestReview::KeepUntil(delete_after));
        }
        let n = crate::manifests::delete_manifest_cascade(
            conn,
            repo_id,
            digest,
            now,
            crate::events::GC,
        )
        .await?;
        self.deleted_manifests = true;
        Ok(ManifestReview::Deleted(n))
    }

    /// Decides whether a blob is live; if not, marks it `deleting` under a lease and returns
    /// the generation whose bytes the caller removes next. Links of repositories that no
    /// longer reference the blob are dropped once they are older than the grace period.
    pub async fn review_blob(
        &mut self,
        digest: &str,
        policy: &GcPolicy,
        now: i64,
    ) -> Result<BlobReview> {
        let dialect = self.dialect;
        let conn = &mut *self.tx;
        // Locked for update first: a push, mount, upload or touch that relies on the blob
        // locks its row too, so the checks below see it once it committed.
        let row = sqlx::query(locking!(
            dialect,
            "SELECT generation, size, created_at, touched_at FROM blobs WHERE digest = $1 AND state = 'live'",
            "FOR UPDATE"
        ))
        .bind(digest)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            dequeue(conn, "blob", digest).await?;
            return Ok(BlobReview::Gone);
        };
        lock_review(conn, "blob", digest).await?;
        let generation: String = row.get(0);
        let size = row.get::<i64, _>(1) as u64;
        let newest_row = row.get::<i64, _>(2).max(row.get::<i64, _>(3));
        sqlx::query(
            "DELETE FROM repo_blobs WHERE digest = $1 AND linked_at < $2
               AND repo_id NOT IN (SELECT repo_id FROM manifest_refs WHERE blob = $1)",
        )
        .bind(digest)
        .bind(now - policy.grace_ms)
        .execute(&mut *conn)
        .await?;
        let referenced: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM manifest_refs WHERE blob = $1 LIMIT 1")
                .bind(digest)
                .fetch_optional(&mut *conn)
                .await?;
        if referenced.is_some() {
            dequeue(conn, "blob", digest).await?;
            return Ok(BlobReview::Live);
        }
        let newest_link: Option<i64> =
            sqlx::query_scalar("SELECT MAX(linked_at) FROM repo_blobs WHERE digest = $1")
                .bind(digest)
                .fetch_one(&mut *conn)
                .await?;
        let keep_until = newest_row.max(newest_link.unwrap_or(0)) + policy.grace_ms;
        if keep_until > now {
            requeue(conn, "blob", digest, keep_until).await?;
            return Ok(BlobReview::KeepUntil(keep_until));
        }
        sqlx::query("UPDATE blobs SET state = 'deleting', lease_until = $3 WHERE digest = $1 AND generation = $2")
            .bind(digest)
            .bind(&generation)
            .bind(now + policy.lease_ms)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM repo_blobs WHERE digest = $1")
            .bind(digest)
            .execute(&mut *conn)
            .await?;
        dequeue(conn, "blob", digest).await?;
        Ok(BlobReview::Sweep(Sweep {
            digest: digest.to_owned(),
            generation,
            size,
        }))
    }
}
