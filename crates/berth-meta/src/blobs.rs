//! Blobs: the live row of a digest, its links into repositories, touches that keep a blob
//! through the grace period, mounts and unlinks, and the group commit of finished uploads.

use berth_core::Digest;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::repositories::{self, RepoRef};
use crate::{Dialect, MetaError, MetaStore, Result, begin_on, gc, now_ms};

/// A live blob as a repository sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub digest: Digest,
    pub generation: String,
    pub size: u64,
    pub touched_at: i64,
    /// When the repository's link was written or last refreshed (0 when not asked through a
    /// repository).
    pub linked_at: i64,
}

/// What committing an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// This upload's bytes became the live generation.
    Stored,
    /// A live generation already existed (deduplicated); the upload's bytes are not needed.
    AlreadyLive { generation: String },
    /// No live generation exists and the caller offered none: nothing was changed.
    NotLive,
    /// The upload session is gone (purged as idle, or its repository deleted): nothing was
    /// changed, and the caller's bytes are not needed.
    SessionGone,
}

impl MetaStore {
    /// The live blob `digest` if it is linked into repository `repo_id`.
    pub async fn blob_in_repo(&self, repo_id: i64, digest: &Digest) -> Result<Option<BlobRow>> {
        let row = sqlx::query(
            "SELECT b.generation, b.size, b.touched_at, rb.linked_at FROM repo_blobs rb
             JOIN blobs b ON b.digest = rb.digest AND b.state = 'live'
             WHERE rb.repo_id = $1 AND rb.digest = $2",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| BlobRow {
            digest: digest.clone(),
            generation: r.get(0),
            size: r.get::<i64, _>(1) as u64,
            touched_at: r.get(2),
            linked_at: r.get(3),
        }))
    }

    /// The live blob `digest`, whatever repository holds it.
    pub async fn live_blob(&self, digest: &Digest) -> Result<Option<BlobRow>> {
        let row = sqlx::query(
            "SELECT generation, size, touched_at FROM blobs WHERE digest = $1 AND state = 'live'",
        )
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| BlobRow {
            digest: digest.clone(),
            generation: r.get(0),
            size: r.get::<i64, _>(1) as u64,
            touched_at: r.get(2),
            linked_at: 0,
        }))
    }

    /// Names of the repositories that hold a link to `digest`.
    pub async fn repos_with_blob(&self, digest: &Digest) -> Result<Vec<String>> {
        let rows = sqlx::query_scalar(
            "SELECT r.name FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id
             WHERE rb.digest = $1 ORDER BY r.name",
        )
        .bind(digest.to_string())
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    /// Records that a client relied on a blob through a repository (HEAD, GET), so garbage
    /// collection keeps both the blob and the repository's link through the grace period.
    /// Callers only call this when the stored times are stale, so pulls do not write on every
    /// request. False when a sweep took the blob or the link first: the caller must then
    /// answer as if the blob did not exist (a client that saw 200 would skip its upload).
    pub async fn touch_blob(&self, repo_id: i64, digest: &Digest, now: i64) -> Result<bool> {
        let d = digest.to_string();
        let mut tx = self.begin_write().await?;
        let blob = touch_live(&mut tx, &d, now).await?;
        let link =
            sqlx::query("UPDATE repo_blobs SET linked_at = $3 WHERE repo_id = $1 AND digest = $2")
                .bind(repo_id)
                .bind(&d)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if !blob || link == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Links a live blob into a repository (a cross-repository mount). False if no live blob.
    pub async fn link_blob(&self, repo: impl Into<RepoRef>, digest: &Digest) -> Result<bool> {
        let repo = repo.into();
        crate::retrying(|| self.link_blob_once(repo.clone(), digest)).await
    }

    async fn link_blob_once(&self, repo: RepoRef, digest: &Digest) -> Result<bool> {
        let now = now_ms();
        let d = digest.to_string();
        let mut tx = self.begin_write().await?;
        // The touch checks that the blob is live and locks its row (a sweep locks it for
        // update and sees the new link once this commits, or has marked it deleting, and then
        // nothing is touched and the mount is refused).
        if !touch_live(&mut tx, &d, now).await? {
            return Ok(false);
        }
        let repo_id = repositories::resolve(&mut tx, &repo, self.repository_limit()).await?;
        sqlx::query(
            "INSERT INTO repo_blobs (repo_id, digest, linked_at) VALUES ($1, $2, $3)
             ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at",
        )
        .bind(repo_id)
        .bind(&d)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        gc::enqueue_blob(&mut tx, &d, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a blob's link from a repository. False if it was not linked.
    pub async fn unlink_blob(&self, repo_id: i64, digest: &Digest) -> Result<bool> {
        crate::retrying(|| self.unlink_blob_once(repo_id, digest)).await
    }

    async fn unlink_blob_once(&self, repo_id: i64, digest: &Digest) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM repo_blobs WHERE repo_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        gc::enqueue_blob(&mut tx, &digest.to_string(), now_ms()).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a finished upload: the blob (unless a live generation exists) and the
    /// repository's link, and ends the session.
    ///
    /// On SQLite concurrent calls are committed together in one transaction (group commit):
    /// with many small pushes in flight, one WAL fsync covers them all instead of one each.
    /// On PostgreSQL each runs its own transaction: the server already flushes concurrent
    /// commits together, and one commit waiting for a row lock (a repository being deleted)
    /// must not hold up the others behind it.
    pub async fn commit_blob(
        &self,
        upload_id: &str,
        repo: impl Into<RepoRef>,
        digest: &Digest,
        stored: Option<(&str, u64)>,
    ) -> Result<CommitOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let req = CommitRequest {
            upload_id: upload_id.to_owned(),
            repo: repo.into(),
            digest: digest.clone(),
            stored: stored.map(|(g, s)| (g.to_owned(), s)),
            reply,
        };
        if self.dialect == Dialect::Postgres {
            return commit_alone(&self.write, self.dialect, &req, self.repository_limit()).await;
        }
        if self.committer.send(req).await.is_err() {
            return Err(MetaError::Corrupt("the blob committer has stopped".into()));
        }
        answer
            .await
            .map_err(|_| MetaError::Corrupt("the blob committer has stopped".into()))?
    }
}

/// Touches `digest`'s live row, which also locks it against a sweep until the transaction
/// ends; false when there is no live row.
async fn touch_live(conn: &mut AnyConnection, digest: &str, now: i64) -> Result<bool> {
    let n = sqlx::query("UPDATE blobs SET touched_at = $2 WHERE digest = $1 AND state = 'live'")
        .bind(digest)
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Commits one request in a transaction of its own; a lock conflict is tried again.
async fn commit_alone(
    write: &AnyPool,
    dialect: Dialect,
    req: &CommitRequest,
    limit: u64,
) -> Result<CommitOutcome> {
    let mut attempt = 1;
    loop {
        match commit_batch(write, dialect, std::slice::from_ref(req), limit).await {
            Err(e) if e.is_retryable_conflict() && attempt < crate::WRITE_ATTEMPTS => {
                attempt += 1;
            }
            other => return other.map(|mut v| v.remove(0)),
        }
    }
}

/// One `commit_blob` waiting for the group committer.
pub(crate) struct CommitRequest {
    upload_id: String,
    repo: RepoRef,
    digest: Digest,
    stored: Option<(String, u64)>,
    reply: tokio::sync::oneshot::Sender<Result<CommitOutcome>>,
}

/// Requests committed together at most.
pub(crate) const GROUP_COMMIT_MAX: usize = 64;

/// Commits queued `commit_blob` requests: each batch is whatever queued while the previous
/// one committed, in one transaction. If a batch fails, its requests are retried one by one
/// so each caller gets its own answer.
pub(crate) async fn group_committer(
    write: AnyPool,
    dialect: Dialect,
    mut rx: tokio::sync::mpsc::Receiver<CommitRequest>,
    repo_limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let limit = repo_limit.load(std::sync::atomic::Ordering::Relaxed);
        match commit_batch(&write, dialect, &batch, limit).await {
            Ok(outcomes) => {
                for (req, o) in batch.into_iter().zip(outcomes) {
                    let _ = req.reply.send(Ok(o));
                }
            }
            // One by one, so each gets its own answer.
            Err(_) => {
                for req in batch {
                    let r = commit_alone(&write, dialect, &req, limit).await;
                    let _ = req.reply.send(r);
                }
            }
        }
    }
}

async fn commit_batch(
    write: &AnyPool,
    dialect: Dialect,
    batch: &[CommitRequest],
    repo_limit: u64,
) -> Result<Vec<CommitOutcome>> {
    let now = now_ms();
    let mut tx = begin_on(write, dialect).await?;
    let mut outcomes = vec![CommitOutcome::NotLive; batch.len()];
    // Blob rows are locked in digest order, as a manifest push locks them, so two batches
    // (of two nodes) or a batch and a push never wait on each other in a circle.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| batch[a].digest.cmp(&batch[b].digest));
    for i in order {
        let req = &batch[i];
        outcomes[i] = commit_one(&mut tx, req, repo_limit, now).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn commit_one(
    conn: &mut AnyConnection,
    req: &CommitRequest,
    repo_limit: u64,
    now: i64,
) -> Result<CommitOutcome> {
    let repo_id = match repositories::resolve(conn, &req.repo, repo_limit).await {
        Ok(id) => id,
        Err(MetaError::RepositoryGone(_)) => return Ok(CommitOutcome::SessionGone),
        Err(e) => return Err(e),
    };
    let session = matches!(req.repo, RepoRef::Id(_));
    if session {
        // The session's row is locked until this ends it: one that the idle purger or a
        // repository deletion took first is not committed.
        let present: Option<i64> = sqlx::query_scalar(crate::locking!(
            crate::dialect_of(conn),
            "SELECT 1 FROM uploads WHERE id = $1",
            "FOR UPDATE"
        ))
        .bind(&req.upload_id)
        .fetch_optional(&mut *conn)
        .await?;
        if present.is_none() {
            return Ok(CommitOutcome::SessionGone);
        }
    }
    let d = req.digest.to_string();
    // The touch finds the live generation and locks its row against a sweep; two uploads of
    // a new digest race on the insert, and the loser finds the winner's row.
    let mut outcome = None;
    for _ in 0..2 {
        let existing: Option<String> = sqlx::query_scalar(
            "UPDATE blobs SET touched_at = $2 WHERE digest = $1 AND state = 'live' RETURNING generation",
        )
        .bind(&d)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(generation) = existing {
            outcome = Some(CommitOutcome::AlreadyLive { generation });
            break;
        }
        let Some((generation, size)) = &req.stored else {
            return Ok(CommitOutcome::NotLive);
        };
        let inserted = sqlx::query(
            "INSERT INTO blobs (digest, generation, size, state, created_at, touched_at)
             VALUES ($1, $2, $3, 'live', $4, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&d)
        .bind(generation)
        .bind(*size as i64)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 1 {
            outcome = Some(CommitOutcome::Stored);
            break;
        }
    }
    let Some(outcome) = outcome else {
        return Err(MetaError::Corrupt(format!(
            "blob {d}: no live row, and one could not be inserted"
        )));
    };
    sqlx::query(
        "INSERT INTO repo_blobs (repo_id, digest, linked_at) VALUES ($1, $2, $3)
         ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at",
    )
    .bind(repo_id)
    .bind(&d)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if session {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(&req.upload_id)
            .execute(&mut *conn)
            .await?;
    }
    // A blob that no manifest ever references is collected after the grace period.
    gc::enqueue(conn, "blob", &d, now).await?;
    Ok(outcome)
}
