//! Manifests: a push (checked against the blobs and child manifests it references, written
//! with its references and tags in one transaction), a read, a delete with everything that
//! depends on it (`delete_manifest_cascade`, which garbage collection uses too), referrers,
//! and the admin API's artifact listing.

use std::sync::Arc;

use berth_core::Digest;
use sqlx::{AnyConnection, Row};

use crate::events::{self, EventKind, NewEvent};
use crate::repositories::{self, RepoRef};
use crate::{MetaError, MetaStore, Result, cache, gc, locking, now_ms, parse_digest, tags};

/// A manifest to store, with what it references.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub payload: Vec<u8>,
    pub subject: Option<Digest>,
    pub config_digest: Option<Digest>,
    pub annotations: Option<String>,
    /// Blobs (config and distributable layers) with the sizes their descriptors claim.
    pub blobs: Vec<(Digest, u64)>,
    /// Child manifests of an index, with the sizes their descriptors claim.
    pub children: Vec<(Digest, u64)>,
    pub pushed_by: Option<String>,
    /// Cached from a proxy project's upstream: its blobs and children are fetched when asked
    /// for, so they need not exist yet.
    pub from_upstream: bool,
    /// A sparse manifest (distribution-spec): blobs and children that are not in the
    /// repository are accepted; those that are must have the sizes their descriptors claim.
    pub sparse: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub payload: bytes::Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReferrerRow {
    #[sqlx(try_from = "String")]
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    #[sqlx(try_from = "i64")]
    pub size: u64,
    pub annotations: Option<String>,
}

/// Why a manifest could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PutManifestError {
    #[error("blob {0} is not in this repository")]
    MissingBlob(Digest),
    #[error("manifest {0} is not in this repository")]
    MissingManifest(Digest),
    #[error("descriptor of {digest} says {claimed} bytes but the stored content has {actual}")]
    SizeMismatch {
        digest: Digest,
        claimed: u64,
        actual: u64,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<sqlx::Error> for PutManifestError {
    fn from(e: sqlx::Error) -> Self {
        PutManifestError::Meta(MetaError::Db(e))
    }
}

/// What deleting a manifest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Deleted, with this many manifests in all (referrers and orphaned children included).
    Deleted(usize),
    NotFound,
    /// An index of the repository still lists it: these parents.
    Listed(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRow {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: i64,
    pub created_at: i64,
    pub pushed_by: Option<String>,
    pub tags: Vec<String>,
}

impl MetaStore {
    /// Stores a manifest and points `tags` at it, in one transaction that first checks every
    /// referenced blob and child manifest is present (and live) in the repository. On
    /// PostgreSQL what the decision rests on is locked: the referenced blob rows and child
    /// manifests for share (a sweep or a delete locks them for update, so it either waits for
    /// this push and then sees it, or has removed them and this push is refused), the
    /// subject of a referrer for share, the tags being moved for update. Rows are locked in
    /// digest (and name) order; a push PostgreSQL aborts as a deadlock is run again.
    pub async fn put_manifest(
        &self,
        repo: impl Into<RepoRef>,
        m: &NewManifest,
        tags: &[&str],
    ) -> Result<(), PutManifestError> {
        let repo = repo.into();
        let mut attempt = 1;
        loop {
            match self.put_manifest_once(&repo, m, tags).await {
                Err(PutManifestError::Meta(e))
                    if e.is_retryable_conflict() && attempt < crate::WRITE_ATTEMPTS =>
                {
                    tracing::debug!(error = %e, attempt, "manifest push aborted by a lock conflict; running it again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn put_manifest_once(
        &self,
        repo: &RepoRef,
        m: &NewManifest,
        tags: &[&str],
    ) -> Result<(), PutManifestError> {
        let now = now_ms();
        let digest = m.digest.to_string();
        let mut tx = self.begin_write().await?;
        let repo_id = repositories::resolve(&mut tx, repo, self.repository_limit()).await?;
        if !m.from_upstream {
            let mut blobs: Vec<&(Digest, u64)> = m.blobs.iter().collect();
            blobs.sort();
            blobs.dedup();
            for (blob, claimed) in blobs {
                let size: Option<i64> = sqlx::query_scalar(locking!(
                    self.dialect,
                    "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest AND b.state = 'live'
                     WHERE rb.repo_id = $1 AND rb.digest = $2",
                    "FOR SHARE OF b"
                ))
                .bind(repo_id)
                .bind(blob.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                if size.is_none() && m.sparse {
                    continue;
                }
                check_reference(blob, *claimed, size, PutManifestError::MissingBlob)?;
            }
        }
        // Child manifests and a referrer's subject are manifest rows of this repository:
        // locked for share in digest order.
        let mut manifests: Vec<(&Digest, Option<u64>)> = Vec::new();
        if !m.from_upstream {
            manifests.extend(m.children.iter().map(|(d, size)| (d, Some(*size))));
        }
        if let Some(subject) = &m.subject {
            manifests.push((subject, None));
        }
        manifests.sort();
        manifests.dedup();
        for (d, claimed) in manifests {
            let size: Option<i64> = sqlx::query_scalar(locking!(
                self.dialect,
                "SELECT size FROM manifests WHERE repo_id = $1 AND digest = $2",
                "FOR SHARE"
            ))
            .bind(repo_id)
            .bind(d.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            // A referrer may arrive before its subject (the spec says it must be accepted).
            let Some(claimed) = claimed else { continue };
            if size.is_none() && m.sparse {
                continue;
            }
            check_reference(d, claimed, size, PutManifestError::MissingManifest)?;
        }
        let inserted = self
            .insert_or_lock_manifest(&mut tx, repo_id, m, !tags.is_empty(), now)
            .await?;
        if inserted && tags.is_empty() {
            gc::enqueue_manifest(&mut tx, repo_id, &digest, now).await?;
        }
        let mut sorted_tags: Vec<&str> = tags.to_vec();
        sorted_tags.sort_unstable();
        sorted_tags.dedup();
        let actor = if m.from_upstream {
            events::PROXY
        } else {
            m.pushed_by.as_deref().unwrap_or("")
        };
        if inserted {
            let event = NewEvent {
                kind: if m.from_upstream {
                    EventKind::ArtifactCached
                } else {
                    EventKind::ArtifactPushed
                },
                repo_id,
                digest: Some(&digest),
                tag: None,
                actor,
                detail: serde_json::json!({
                    "media_type": m.media_type,
                    "artifact_type": m.artifact_type,
                    "size": m.payload.len(),
                    "subject": m.subject.as_ref().map(|d| d.to_string()),
                    "tags": sorted_tags,
                }),
            };
            events::record(&mut tx, event, now).await?;
            for (blob, _) in &m.blobs {
                sqlx::query("INSERT INTO manifest_refs (repo_id, manifest, blob) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(repo_id)
                    .bind(&digest)
                    .bind(blob.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            for (child, _) in &m.children {
                sqlx::query(
                    "INSERT INTO manifest_children (repo_id, parent, child) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(repo_id)
                .bind(&digest)
                .bind(child.to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        for &tag in &sorted_tags {
            let previous =
                tags::point_tag(&mut tx, self.dialect, repo_id, tag, &digest, now).await?;
            if previous.as_deref() == Some(digest.as_str()) {
                continue;
            }
            if let Some(prev) = &previous {
                tags::mark_untagged_if_orphan(&mut tx, repo_id, prev, now).await?;
                gc::enqueue_manifest(&mut tx, repo_id, prev, now).await?;
            }
            let event = NewEvent {
                kind: EventKind::TagSet,
                repo_id,
                digest: Some(&digest),
                tag: Some(tag),
                actor,
                detail: serde_json::json!({ "previous": previous }),
            };
            events::record(&mut tx, event, now).await?;
        }
        if !tags.is_empty() {
            sqlx::query(
                "UPDATE manifests SET untagged_at = NULL
                 WHERE repo_id = $1 AND digest = $2 AND untagged_at IS NOT NULL",
            )
            .bind(repo_id)
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for &tag in tags {
            self.cache.forget_tag(repo_id, tag);
        }
        Ok(())
    }

    /// Inserts the manifest row, or locks the one already there (for update when `tagging`,
    /// since the push then changes it; for share otherwise), so that a review or a delete
    /// cannot remove it before this push commits. True when it was inserted.
    async fn insert_or_lock_manifest(
        &self,
        conn: &mut AnyConnection,
        repo_id: i64,
        m: &NewManifest,
        tagging: bool,
        now: i64,
    ) -> Result<bool, PutManifestError> {
        let digest = m.digest.to_string();
        // A row deleted between the insert and the lock is inserted again, at most twice.
        for _ in 0..3 {
            let inserted = sqlx::query(
                "INSERT INTO manifests (repo_id, digest, media_type, artifact_type, size, payload, subject,
                                        config_digest, annotations, created_at, untagged_at, pushed_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (repo_id, digest) DO NOTHING",
            )
            .bind(repo_id)
            .bind(&digest)
            .bind(&m.media_type)
            .bind(&m.artifact_type)
            .bind(m.payload.len() as i64)
            .bind(&m.payload)
            .bind(m.subject.as_ref().map(|d| d.to_string()))
            .bind(m.config_digest.as_ref().map(|d| d.to_string()))
            .bind(&m.annotations)
            .bind(now)
            .bind(if tagging { None } else { Some(now) })
            .bind(&m.pushed_by)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                return Ok(true);
            }
            let lock = if tagging {
                locking!(
                    self.dialect,
                    "SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2",
                    "FOR UPDATE"
                )
            } else {
                locking!(
                    self.dialect,
                    "SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2",
                    "FOR SHARE"
                )
            };
            let present: Option<i64> = sqlx::query_scalar(lock)
                .bind(repo_id)
                .bind(&digest)
                .fetch_optional(&mut *conn)
                .await?;
            if present.is_some() {
                return Ok(false);
            }
        }
        Err(PutManifestError::Meta(MetaError::Corrupt(format!(
            "manifest {digest} kept disappearing while it was pushed"
        ))))
    }

    pub async fn get_manifest(
        &self,
        repo_id: i64,
        digest: &Digest,
    ) -> Result<Option<Arc<ManifestRow>>> {
        if let Some(row) = self.cache.manifest(repo_id, digest) {
            return Ok(Some(row));
        }
        let generation = self.cache.generation();
        let row = sqlx::query(
            "SELECT media_type, payload FROM manifests WHERE repo_id = $1 AND digest = $2",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let row = Arc::new(ManifestRow {
            digest: digest.clone(),
            media_type: r.get(0),
            payload: bytes::Bytes::from(r.get::<Vec<u8>, _>(1)),
        });
        self.cache.fill_manifest(generation, repo_id, row.clone());
        Ok(Some(row))
    }

    /// Deletes a manifest with everything that depends on it: its tags, its referrers, the
    /// cosign-style `sha256-<hex>.sig/.att/.sbom` tags of this repository, and the index
    /// children nothing else uses. Their blobs are queued for garbage collection. A manifest
    /// that an index of the repository still lists is refused (`Listed`).
    pub async fn delete_manifest(
        &self,
        repo_id: i64,
        digest: &Digest,
        actor: &str,
    ) -> Result<DeleteOutcome> {
        let mut attempt = 1;
        loop {
            match self.delete_manifest_once(repo_id, digest, actor).await {
                Err(e) if e.is_retryable_conflict() && attempt < crate::WRITE_ATTEMPTS => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn delete_manifest_once(
        &self,
        repo_id: i64,
        digest: &Digest,
        actor: &str,
    ) -> Result<DeleteOutcome> {
        let d = digest.to_string();
        let mut tx = self.begin_write().await?;
        // Locked for update, then the indexes that list it are read: an index push that
        // lists it holds it for share, so this either sees that index or comes first.
        let exists: Option<i64> = sqlx::query_scalar(locking!(
            self.dialect,
            "SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2",
            "FOR UPDATE"
        ))
        .bind(repo_id)
        .bind(&d)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Ok(DeleteOutcome::NotFound);
        }
        let parents: Vec<String> =
            sqlx::query_scalar("SELECT parent FROM manifest_children WHERE repo_id = $1 AND child = $2 ORDER BY parent")
                .bind(repo_id)
                .bind(&d)
                .fetch_all(&mut *tx)
                .await?;
        if !parents.is_empty() {
            return Ok(DeleteOutcome::Listed(parents));
        }
        let deleted = delete_manifest_cascade(&mut tx, repo_id, &d, now_ms(), actor).await?;
        self.cache.notify(&mut *tx, cache::NOTE_MANIFESTS).await?;
        tx.commit().await?;
        self.cache.clear();
        Ok(DeleteOutcome::Deleted(deleted))
    }

    /// Manifests of the repository whose `subject` is `subject`, ordered by digest, after
    /// `last`, optionally only those of one artifact type.
    pub async fn referrers(
        &self,
        repo_id: i64,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> Result<Vec<ReferrerRow>> {
        Ok(sqlx::query_as(
            "SELECT digest, media_type, artifact_type, size, annotations FROM manifests
             WHERE repo_id = $1 AND subject = $2 AND digest > $3
               AND ($4 IS NULL OR artifact_type = $4)
             ORDER BY digest LIMIT $5",
        )
        .bind(repo_id)
        .bind(subject.to_string())
        .bind(last.unwrap_or(""))
        .bind(artifact_type)
        .bind(n as i64)
        .fetch_all(&self.read)
        .await?)
    }

    /// The repository's manifests, newest first, with their tags; or one of them.
    pub async fn artifacts(&self, repo_id: i64, only: Option<&Digest>) -> Result<Vec<ArtifactRow>> {
        let rows = sqlx::query(self.dialect.pick(
            "SELECT m.digest, m.media_type, m.artifact_type, m.size, m.created_at, m.pushed_by,
                    (SELECT json_group_array(t.name) FROM tags t
                      WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
             FROM manifests m WHERE m.repo_id = $1 AND ($2 IS NULL OR m.digest = $2)
             ORDER BY m.created_at DESC, m.digest",
            "SELECT m.digest, m.media_type, m.artifact_type, m.size, m.created_at, m.pushed_by,
                    (SELECT CAST(COALESCE(json_agg(t.name), CAST('[]' AS json)) AS TEXT) FROM tags t
                      WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
             FROM manifests m WHERE m.repo_id = $1 AND ($2 IS NULL OR m.digest = $2)
             ORDER BY m.created_at DESC, m.digest",
        ))
        .bind(repo_id)
        .bind(only.map(|d| d.to_string()))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let tags: String = r.get(6);
                let mut tags: Vec<String> = serde_json::from_str(&tags)
                    .map_err(|e| MetaError::Corrupt(format!("tag list: {e}")))?;
                tags.sort();
                Ok(ArtifactRow {
                    digest: parse_digest(r.get::<&str, _>(0))?,
                    media_type: r.get(1),
                    artifact_type: r.get(2),
                    size: r.get(3),
                    created_at: r.get(4),
                    pushed_by: r.get(5),
                    tags,
                })
            })
            .collect()
    }
}

/// A manifest's reference must exist with the size its descriptor claims.
fn check_reference(
    digest: &Digest,
    claimed: u64,
    found: Option<i64>,
    missing: fn(Digest) -> PutManifestError,
) -> Result<(), PutManifestError> {
    match found {
        None => Err(missing(digest.clone())),
        Some(actual) if actual as u64 != claimed => Err(PutManifestError::SizeMismatch {
            digest: digest.clone(),
            claimed,
            actual: actual as u64,
        }),
        Some(_) => Ok(()),
    }
}

/// Whether a manifest is kept by a tag or by an index that lists it.
pub(crate) async fn tagged_or_listed(
    conn: &mut AnyConnection,
    repo_id: i64,
    digest: &str,
) -> Result<bool, sqlx::Error> {
    let kept: Option<i64> = sqlx::query_scalar(
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM tags WHERE repo_id = $1 AND digest = $2)
                     OR EXISTS (SELECT 1 FROM manifest_children WHERE repo_id = $1 AND child = $2)",
    )
    .bind(repo_id)
    .bind(digest)
    .fetch_optional(conn)
    .await?;
    Ok(kept.is_some())
}

/// Deletes a manifest and what depends on it, inside the caller's transaction: its tags, its
/// reference rows (its blobs are queued for review), its referrers, the cosign tag-scheme
/// signatures (`sha256-<hex>.sig`, `.att`, `.sbom`) of this repository, and the children of
/// an index that are neither tagged nor listed by another index. The caller has locked
/// `digest`'s row (and decided it goes); every dependant is locked for update before it is
/// looked at again, so one that a concurrent push tagged or listed meanwhile stays. Returns
/// how many manifests were deleted. Each deletion is announced as done by `actor`.
pub(crate) async fn delete_manifest_cascade(
    conn: &mut AnyConnection,
    repo_id: i64,
    digest: &str,
    now: i64,
    actor: &str,
) -> Result<usize, sqlx::Error> {
    let dialect = crate::dialect_of(conn);
    // (digest, whether it still has to be checked: dependants do, the root does not)
    let mut work = vec![(digest.to_owned(), false)];
    let mut deleted = 0;
    while let Some((d, check)) = work.pop() {
        if check {
            let present: Option<i64> = sqlx::query_scalar(locking!(
                dialect,
                "SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2",
                "FOR UPDATE"
            ))
            .bind(repo_id)
            .bind(&d)
            .fetch_optional(&mut *conn)
            .await?;
            // A referrer that a live index lists, or that is tagged, stays (the review keeps
            // it while it is listed or tagged).
            if present.is_none() || tagged_or_listed(conn, repo_id, &d).await? {
                continue;
            }
        }
        let gone = sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(&d)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if gone == 0 {
            continue;
        }
        deleted += 1;
        let mut tags: Vec<String> = sqlx::query_scalar(
            "DELETE FROM tags WHERE repo_id = $1 AND digest = $2 RETURNING name",
        )
        .bind(repo_id)
        .bind(&d)
        .fetch_all(&mut *conn)
        .await?;
        tags.sort_unstable();
        let event = NewEvent {
            kind: EventKind::ArtifactDeleted,
            repo_id,
            digest: Some(&d),
            tag: None,
            actor,
            detail: serde_json::json!({ "tags": tags }),
        };
        events::record(conn, event, now).await?;
        let blobs: Vec<String> = sqlx::query_scalar(
            "DELETE FROM manifest_refs WHERE repo_id = $1 AND manifest = $2 RETURNING blob",
        )
        .bind(repo_id)
        .bind(&d)
        .fetch_all(&mut *conn)
        .await?;
        for b in blobs {
            gc::enqueue(conn, "blob", &b, now).await?;
        }
        let children: Vec<String> = sqlx::query_scalar(
            "DELETE FROM manifest_children WHERE repo_id = $1 AND parent = $2 RETURNING child",
        )
        .bind(repo_id)
        .bind(&d)
        .fetch_all(&mut *conn)
        .await?;
        let referrers: Vec<String> =
            sqlx::query_scalar("SELECT digest FROM manifests WHERE repo_id = $1 AND subject = $2")
                .bind(repo_id)
                .bind(&d)
                .fetch_all(&mut *conn)
                .await?;
        let mut dependants: Vec<String> = children.into_iter().chain(referrers).collect();
        if let Some(hex) = d.strip_prefix("sha256:") {
            let signatures: Vec<(String, String)> = sqlx::query_as(
                "DELETE FROM tags WHERE repo_id = $1 AND name IN ($2, $3, $4) RETURNING name, digest",
            )
            .bind(repo_id)
            .bind(format!("sha256-{hex}.sig"))
            .bind(format!("sha256-{hex}.att"))
            .bind(format!("sha256-{hex}.sbom"))
            .fetch_all(&mut *conn)
            .await?;
            for (tag, digest) in signatures {
                let event = NewEvent {
                    kind: EventKind::TagDeleted,
                    repo_id,
                    digest: Some(&digest),
                    tag: Some(&tag),
                    actor,
                    detail: serde_json::json!({}),
                };
                events::record(conn, event, now).await?;
                dependants.push(digest);
            }
        }
        // Popped last first: pushed in reverse digest order, they are locked in digest order.
        dependants.sort_unstable_by(|a, b| b.cmp(a));
        dependants.dedup();
        work.extend(dependants.into_iter().map(|d| (d, true)));
        gc::dequeue(conn, "manifest", &gc::manifest_key(repo_id, &d)).await?;
    }
    Ok(deleted)
}
