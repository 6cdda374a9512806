//! Upload sessions: created with their repository, read without a write transaction,
//! advanced by compare-and-set on the offset, ended by completion, cancel or the idle purger.

use crate::repositories::{self, RepoRef};
use crate::{MetaStore, Result, now_ms};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UploadRow {
    pub id: String,
    pub repo_id: i64,
    #[sqlx(try_from = "i64")]
    pub offset: u64,
    pub hash_state: Vec<u8>,
    pub updated_at: i64,
}

impl MetaStore {
    /// Records a new upload session of the repository (created by name if missing).
    pub async fn create_upload(
        &self,
        id: &str,
        repo: impl Into<RepoRef>,
        hash_state: &[u8],
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let repo_id = repositories::resolve(&mut tx, &repo.into(), self.repository_limit()).await?;
        sqlx::query(
            "INSERT INTO uploads (id, repo_id, \"offset\", hash_state, created_at, updated_at)
             VALUES ($1, $2, 0, $3, $4, $4)",
        )
        .bind(id)
        .bind(repo_id)
        .bind(hash_state)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A session as it was last committed: a plain read, no write transaction (a PATCH
    /// reads its session, writes its bytes, then moves the offset by compare-and-set).
    pub async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        Ok(sqlx::query_as(
            "SELECT id, repo_id, \"offset\", hash_state, updated_at FROM uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?)
    }

    /// Records a durable append: moves the session from `old_offset` to `new_offset`. False
    /// when the session is gone or another request moved it first (that request won).
    pub async fn advance_upload(
        &self,
        id: &str,
        old_offset: u64,
        new_offset: u64,
        hash_state: &[u8],
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE uploads SET \"offset\" = $3, hash_state = $4, updated_at = $5
             WHERE id = $1 AND \"offset\" = $2",
        )
        .bind(id)
        .bind(old_offset as i64)
        .bind(new_offset as i64)
        .bind(hash_state)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Upload sessions with no activity since `before`.
    pub async fn idle_uploads(&self, before: i64, limit: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?)
    }

    /// Marks an upload as active (a long streamed PATCH calls this as it goes).
    pub async fn touch_upload(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE uploads SET updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an idle upload's row if it is still idle. True if it was deleted.
    pub async fn purge_upload(&self, id: &str, before: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1 AND updated_at < $2")
            .bind(id)
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether an upload id has a session row (scrub uses this for staging files).
    pub async fn upload_exists(&self, id: &str) -> Result<bool> {
        let r: Option<i64> = sqlx::query_scalar("SELECT 1 FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(r.is_some())
    }
}
