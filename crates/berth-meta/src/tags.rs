//! Tags: resolving one (a primary-key lookup, cached), listing, deleting, the age-based
//! eviction of a proxy project's tags, and the admin API's tag rows.

use berth_core::Digest;
use sqlx::{Any, Transaction};

use crate::events::{self, EventKind};
use crate::{MetaStore, Result, gc, now_ms, parse_digest};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TagRow {
    pub name: String,
    #[sqlx(try_from = "String")]
    pub digest: Digest,
    pub updated_at: i64,
}

impl MetaStore {
    /// The digest `tag` points at. Embedded: from the cache when warm. PostgreSQL: from a
    /// query that starts after this call (shared with the lookups waiting beside it), so a tag
    /// moved on any node before the call is seen.
    pub async fn resolve_tag(&self, repo_id: i64, tag: &str) -> Result<Option<Digest>> {
        if let Some(d) = self.cache.tag(repo_id, tag) {
            return Ok(Some(d));
        }
        if let Some(rounds) = &self.tag_reads
            && let Ok(d) = rounds.lookup(repo_id, tag).await
        {
            return d.as_deref().map(parse_digest).transpose();
        }
        let generation = self.cache.generation();
        let d: Option<String> =
            sqlx::query_scalar("SELECT digest FROM tags WHERE repo_id = $1 AND name = $2")
                .bind(repo_id)
                .bind(tag)
                .fetch_optional(&self.read)
                .await?;
        let d = d.as_deref().map(parse_digest).transpose()?;
        if let Some(d) = &d {
            self.cache.fill_tag(generation, repo_id, tag, d);
        }
        Ok(d)
    }

    /// Deletes a tag (the manifest stays), as `actor` (who the event names). False if there
    /// was no such tag.
    pub async fn delete_tag(&self, repo_id: i64, tag: &str, actor: &str) -> Result<bool> {
        crate::retrying(|| self.delete_tag_once(repo_id, tag, actor)).await
    }

    async fn delete_tag_once(&self, repo_id: i64, tag: &str, actor: &str) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let digest: Option<String> = sqlx::query_scalar(
            "DELETE FROM tags WHERE repo_id = $1 AND name = $2 RETURNING digest",
        )
        .bind(repo_id)
        .bind(tag)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(d) = &digest {
            mark_untagged_if_orphan(&mut tx, repo_id, d, now).await?;
            gc::enqueue_manifest(&mut tx, repo_id, d, now).await?;
            let event = events::NewEvent {
                kind: EventKind::TagDeleted,
                repo_id,
                digest: Some(d),
                tag: Some(tag),
                actor,
                detail: serde_json::json!({}),
            };
            events::record(&mut tx, event, now).await?;
        }
        tx.commit().await?;
        self.cache.forget_tag(repo_id, tag);
        Ok(digest.is_some())
    }

    /// Deletes up to `limit` tags of the project's repositories last written before `before`
    /// (the age-based eviction of a pull-through cache), as tag deletes do: their manifests
    /// are queued for garbage collection. Returns how many went.
    pub async fn expire_project_tags(&self, project: &str, before: i64, limit: u32) -> Result<u64> {
        let old: Vec<(i64, String)> = sqlx::query_as(
            "SELECT t.repo_id, t.name FROM tags t
             JOIN repositories r ON r.id = t.repo_id
             JOIN projects p ON p.id = r.project_id
             WHERE p.name = $1 AND t.updated_at < $2 LIMIT $3",
        )
        .bind(project)
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        let mut n = 0;
        for (repo, tag) in old {
            if self.delete_tag(repo, &tag, events::PROXY).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Tags of a repository after `last`, in bytewise order, at most `n`.
    pub async fn list_tags(&self, repo_id: i64, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        let rows = sqlx::query_scalar(
            "SELECT name FROM tags WHERE repo_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(repo_id)
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    pub async fn tag_rows(&self, repo_id: i64) -> Result<Vec<TagRow>> {
        Ok(sqlx::query_as(
            "SELECT name, digest, updated_at FROM tags WHERE repo_id = $1 ORDER BY name",
        )
        .bind(repo_id)
        .fetch_all(&self.read)
        .await?)
    }
}

/// Points `tag` at `digest` inside the caller's write transaction and returns the digest it
/// pointed at before. The tag's row is locked for update first (PostgreSQL), so two pushes
/// moving one tag take turns and each sees what it replaced. A tag that does not exist yet has
/// no row to lock: it is inserted only if still absent, and a push that lost that race to
/// another (which committed meanwhile) locks the winner's row and replaces it, knowing what it
/// replaced.
pub(crate) async fn point_tag(
    conn: &mut sqlx::AnyConnection,
    dialect: crate::Dialect,
    repo_id: i64,
    tag: &str,
    digest: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    for _ in 0..3 {
        let previous: Option<String> = sqlx::query_scalar(crate::locking!(
            dialect,
            "SELECT digest FROM tags WHERE repo_id = $1 AND name = $2",
            "FOR UPDATE"
        ))
        .bind(repo_id)
        .bind(tag)
        .fetch_optional(&mut *conn)
        .await?;
        if previous.is_some() {
            sqlx::query(
                "UPDATE tags SET digest = $3, updated_at = $4 WHERE repo_id = $1 AND name = $2",
            )
            .bind(repo_id)
            .bind(tag)
            .bind(digest)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            return Ok(previous);
        }
        let inserted = sqlx::query(
            "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo_id, name) DO NOTHING",
        )
        .bind(repo_id)
        .bind(tag)
        .bind(digest)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(None);
        }
    }
    // Created and deleted by others three times over while this waited: let the caller retry.
    Err(sqlx::Error::Protocol(format!(
        "tag {tag} kept changing while it was being set"
    )))
}

/// Marks a manifest as untagged (for the untagged-manifest policy) if no tag points at it.
/// The manifest's row is locked first and the tags are read after, in a statement of their
/// own: a push that tagged the manifest meanwhile has then committed and is seen (one check
/// inside the UPDATE would read the tags as they were before that push).
pub(crate) async fn mark_untagged_if_orphan(
    tx: &mut Transaction<'static, Any>,
    repo_id: i64,
    digest: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let dialect = crate::dialect_of(tx);
    let untagged: Option<Option<i64>> = sqlx::query_scalar(crate::locking!(
        dialect,
        "SELECT untagged_at FROM manifests WHERE repo_id = $1 AND digest = $2",
        "FOR UPDATE"
    ))
    .bind(repo_id)
    .bind(digest)
    .fetch_optional(&mut **tx)
    .await?;
    if !matches!(untagged, Some(None)) {
        return Ok(());
    }
    let tagged: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM tags WHERE repo_id = $1 AND digest = $2 LIMIT 1")
            .bind(repo_id)
            .bind(digest)
            .fetch_optional(&mut **tx)
            .await?;
    if tagged.is_none() {
        sqlx::query("UPDATE manifests SET untagged_at = $3 WHERE repo_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
