//! Repositories: found or created by the write that needs one, inside that write's transaction
//! (so a repository removed by garbage collection a moment before cannot leave the write
//! pointing at a row that is gone), bounded per project (`limits.repositories_per_project`),
//! deleted on request with everything in them, and collected once they hold nothing.

use berth_core::RepoName;
use sqlx::{AnyConnection, Row};

use crate::events::{self, EventKind};
use crate::{MetaError, MetaStore, Result, cache, gc, locking, now_ms};

/// A repository as a write names it: by id (known to exist, e.g. from an upload session) or by
/// name (created if missing).
#[derive(Debug, Clone)]
pub enum RepoRef {
    Id(i64),
    Name(RepoName),
}

impl From<i64> for RepoRef {
    fn from(id: i64) -> RepoRef {
        RepoRef::Id(id)
    }
}

impl From<&RepoName> for RepoRef {
    fn from(name: &RepoName) -> RepoRef {
        RepoRef::Name(name.clone())
    }
}

/// What deleting a repository removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepoDeletion {
    pub manifests: u64,
    pub tags: u64,
    /// Blob links removed (the blobs themselves go with garbage collection if nothing else
    /// uses them).
    pub blobs: u64,
    /// Upload sessions ended; their staged bytes are the caller's to delete.
    pub uploads: Vec<String>,
}

/// What deleting a project found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectDeletion {
    NotFound,
    /// Repositories with content: delete them first.
    HoldsRepositories(Vec<String>),
    /// Deleted, with this many empty repositories.
    Deleted {
        empty_repositories: u64,
    },
}

/// Rows deleted per transaction when a repository is deleted.
const DELETE_BATCH: i64 = 500;

/// The condition "holds nothing", for `repositories r`.
const EMPTY: &str = "NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
      AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = r.id)
      AND NOT EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo_id = r.id)
      AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.repo_id = r.id)";

/// Locks repository `id`'s row for update (PostgreSQL), as its deletion and the collection
/// of empty repositories do; false if it is gone.
async fn lock_repository(conn: &mut AnyConnection, id: i64) -> Result<bool> {
    let dialect = crate::dialect_of(conn);
    let locked: Option<i64> = sqlx::query_scalar(locking!(
        dialect,
        "SELECT id FROM repositories WHERE id = $1",
        "FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(locked.is_some())
}

/// What one batch of a repository's deletion removed.
struct DeletionBatch {
    tags: u64,
    manifests: u64,
    links: u64,
    uploads: Vec<String>,
    removed: bool,
}

/// The id of the repository a write names, creating it (and its project) by name when missing,
/// within the caller's write transaction. On PostgreSQL the repository's row is locked for
/// share until the transaction ends, so that a repository deletion or the collection of empty
/// repositories (which lock it for update, then look again) cannot remove it under the write;
/// creating one locks its project for update, so that concurrent creations count each other
/// against `limits.repositories_per_project` and a project deletion waits.
pub(crate) async fn resolve(conn: &mut AnyConnection, repo: &RepoRef, limit: u64) -> Result<i64> {
    let dialect = crate::dialect_of(conn);
    let name = match repo {
        RepoRef::Id(id) => {
            // A session's or a cached id: make sure it still exists, and keep it.
            let found: Option<i64> = sqlx::query_scalar(locking!(
                dialect,
                "SELECT id FROM repositories WHERE id = $1",
                "FOR SHARE"
            ))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            return found.ok_or(MetaError::RepositoryGone(*id));
        }
        RepoRef::Name(n) => n,
    };
    let by_name = locking!(
        dialect,
        "SELECT id FROM repositories WHERE name = $1",
        "FOR SHARE"
    );
    let id: Option<i64> = sqlx::query_scalar(by_name)
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(id) = id {
        return Ok(id);
    }
    let now = now_ms();
    // A project deleted while this waited for its lock is created again.
    let mut project = None;
    for _ in 0..3 {
        sqlx::query(
            "INSERT INTO projects (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.project())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        project = sqlx::query_scalar::<_, i64>(locking!(
            dialect,
            "SELECT id FROM projects WHERE name = $1",
            "FOR UPDATE"
        ))
        .bind(name.project())
        .fetch_optional(&mut *conn)
        .await?;
        if project.is_some() {
            break;
        }
    }
    let Some(project) = project else {
        return Err(MetaError::Corrupt(format!(
            "project {} kept being deleted while a repository was created in it",
            name.project()
        )));
    };
    // Another write may have created the repository while this one waited for the project.
    if let Some(id) = sqlx::query_scalar::<_, i64>(by_name)
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(id);
    }
    if limit > 0 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM repositories WHERE project_id = $1")
            .bind(project)
            .fetch_one(&mut *conn)
            .await?;
        if n as u64 >= limit {
            return Err(MetaError::RepositoryLimit {
                project: name.project().to_owned(),
                limit,
            });
        }
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO repositories (project_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(project)
    .bind(name.as_str())
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

impl MetaStore {
    pub async fn repo_id(&self, name: &RepoName) -> Result<Option<i64>> {
        if let Some(id) = self.cache.repo(name.as_str()) {
            return Ok(Some(id));
        }
        let generation = self.cache.generation();
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.read)
            .await?;
        if let Some(id) = id {
            self.cache.fill_repo(generation, name.as_str(), id);
        }
        Ok(id)
    }

    /// The repository's id, creating it (and its project) on first use.
    pub async fn ensure_repo(&self, name: &RepoName) -> Result<i64> {
        if let Some(id) = self.repo_id(name).await? {
            return Ok(id);
        }
        let mut tx = self.begin_write().await?;
        let id = resolve(&mut tx, &RepoRef::from(name), self.repository_limit()).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Repository names after `last`, in bytewise order, at most `n`.
    pub async fn list_repos(&self, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        let rows = sqlx::query_scalar(
            "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    /// Sets `limits.repositories_per_project` (0: no limit).
    pub fn set_repository_limit(&self, limit: u64) {
        self.repo_limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn repository_limit(&self) -> u64 {
        self.repo_limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Removes repositories created before `before` that hold nothing (no manifest, tag, blob
    /// link or upload session), at most `limit`; returns how many went. An upload POST creates
    /// its repository, so abandoned uploads would otherwise leave empty ones behind.
    pub async fn collect_empty_repositories(&self, before: i64, limit: u32) -> Result<u64> {
        let candidates: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM repositories r WHERE created_at <= $1 AND {EMPTY} LIMIT $2"
        )))
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        let mut removed = 0;
        for id in candidates {
            let mut tx = self.begin_write().await?;
            // Locked, then checked again: a push may have arrived since (a write into the
            // repository holds its row for share, so this waits for it and then sees it).
            if !lock_repository(&mut tx, id).await? {
                continue;
            }
            let gone = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM repositories WHERE id = $1 AND id IN (SELECT id FROM repositories r WHERE {EMPTY})"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if gone > 0 {
                self.cache.notify(&mut *tx, cache::NOTE_MANIFESTS).await?;
            }
            tx.commit().await?;
            if gone > 0 {
                self.cache.clear();
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes a repository with everything in it: its tags, manifests (their blobs are queued
    /// for garbage collection), blob links and upload sessions, in batches of short
    /// transactions. `None` when there is no such repository.
    pub async fn delete_repository(
        &self,
        name: &RepoName,
        actor: &str,
    ) -> Result<Option<RepoDeletion>> {
        let Some(id) = self.repo_id(name).await? else {
            return Ok(None);
        };
        let mut done = RepoDeletion::default();
        let mut announced = false;
        // A push racing the deletion can add rows between batches; a few rounds catch it.
        for _ in 0..100 {
            let batch =
                crate::retrying(|| self.delete_repository_batch(id, actor, !announced)).await?;
            let Some(batch) = batch else {
                return Ok(Some(done));
            };
            announced = true;
            done.tags += batch.tags;
            done.manifests += batch.manifests;
            done.blobs += batch.links;
            done.uploads.extend(batch.uploads);
            if batch.removed {
                return Ok(Some(done));
            }
        }
        Err(MetaError::Corrupt(format!(
            "repository {name} kept receiving content while it was being deleted"
        )))
    }

    /// One batch of a repository's deletion, in a transaction of its own; `None` when the
    /// repository is gone. The first batch that commits announces the deletion.
    async fn delete_repository_batch(
        &self,
        id: i64,
        actor: &str,
        announce: bool,
    ) -> Result<Option<DeletionBatch>> {
        let mut tx = self.begin_write().await?;
        // Writes into the repository hold its row for share: this batch waits for those
        // in flight, and new ones wait for this batch.
        if !lock_repository(&mut tx, id).await? {
            return Ok(None);
        }
        let now = now_ms();
        if announce {
            // Announced with the first batch: what it deletes is gone once it commits.
            let event = events::NewEvent {
                kind: EventKind::RepositoryDeleted,
                repo_id: id,
                digest: None,
                tag: None,
                actor,
                detail: serde_json::json!({}),
            };
            events::record(&mut tx, event, now).await?;
        }
        // Each manifest is locked before its rows go, as a manifest delete or a GC review
        // locks it first: neither then waits for this batch while holding what it wants.
        let manifests: Vec<String> = sqlx::query_scalar(locking!(
            self.dialect,
            "SELECT digest FROM manifests WHERE repo_id = $1 ORDER BY digest LIMIT $2",
            "FOR UPDATE"
        ))
        .bind(id)
        .bind(DELETE_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut tags = 0;
        for d in &manifests {
            tags += sqlx::query("DELETE FROM tags WHERE repo_id = $1 AND digest = $2")
                .bind(id)
                .bind(d)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let blobs: Vec<String> = sqlx::query_scalar(
                "DELETE FROM manifest_refs WHERE repo_id = $1 AND manifest = $2 RETURNING blob",
            )
            .bind(id)
            .bind(d)
            .fetch_all(&mut *tx)
            .await?;
            for b in blobs {
                gc::enqueue_blob(&mut tx, &b, now).await?;
            }
            sqlx::query("DELETE FROM manifest_children WHERE repo_id = $1 AND parent = $2")
                .bind(id)
                .bind(d)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
                .bind(id)
                .bind(d)
                .execute(&mut *tx)
                .await?;
        }
        if manifests.is_empty() {
            // Tags name manifests of the repository; none should be left, but none may stay.
            tags += sqlx::query("DELETE FROM tags WHERE repo_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        let links: Vec<String> = sqlx::query_scalar(
            "DELETE FROM repo_blobs WHERE repo_id = $1 AND digest IN
               (SELECT digest FROM repo_blobs WHERE repo_id = $1 LIMIT $2) RETURNING digest",
        )
        .bind(id)
        .bind(DELETE_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        for b in &links {
            gc::enqueue_blob(&mut tx, b, now).await?;
        }
        let uploads: Vec<String> = sqlx::query_scalar(
            "DELETE FROM uploads WHERE repo_id = $1 AND id IN
               (SELECT id FROM uploads WHERE repo_id = $1 LIMIT $2) RETURNING id",
        )
        .bind(id)
        .bind(DELETE_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let finished = tags == 0 && manifests.is_empty() && links.is_empty() && uploads.is_empty();
        let removed = if finished {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM repositories WHERE id = $1 AND id IN (SELECT id FROM repositories r WHERE {EMPTY})"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0
        } else {
            false
        };
        self.cache.notify(&mut *tx, cache::NOTE_MANIFESTS).await?;
        tx.commit().await?;
        self.cache.clear();
        Ok(Some(DeletionBatch {
            tags,
            manifests: manifests.len() as u64,
            links: links.len() as u64,
            uploads,
            removed,
        }))
    }

    /// Deletes a project with its members and robots' permissions on it, and its empty
    /// repositories; refused while a repository holds anything.
    pub async fn delete_project(&self, name: &str) -> Result<ProjectDeletion> {
        let mut tx = self.begin_write().await?;
        // Creating a repository in the project locks the project for update too: none can be
        // created while this decides.
        let id: Option<i64> = sqlx::query_scalar(locking!(
            self.dialect,
            "SELECT id FROM projects WHERE name = $1",
            "FOR UPDATE"
        ))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(ProjectDeletion::NotFound);
        };
        // Writes into an existing repository hold it for share: they finish first, and what
        // they wrote is seen below.
        sqlx::query(locking!(
            self.dialect,
            "SELECT id FROM repositories WHERE project_id = $1 ORDER BY id",
            "FOR UPDATE"
        ))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let full: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM repositories r WHERE project_id = $1 AND NOT ({EMPTY}) ORDER BY name LIMIT 20"
        )))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
        if !full.is_empty() {
            return Ok(ProjectDeletion::HoldsRepositories(full));
        }
        let empty = sqlx::query("DELETE FROM repositories WHERE project_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM members WHERE project_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // A project created later under the same name must not inherit robots' rights.
        sqlx::query("DELETE FROM robot_permissions WHERE project = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if empty > 0 {
            self.cache.notify(&mut *tx, cache::NOTE_MANIFESTS).await?;
        }
        tx.commit().await?;
        self.cache.clear();
        self.auth_changed();
        Ok(ProjectDeletion::Deleted {
            empty_repositories: empty,
        })
    }
}
