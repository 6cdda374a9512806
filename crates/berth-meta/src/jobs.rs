//! The durable job queue of the embedded mode: one row per job with a lease. A worker claims
//! a due job (or one whose lease ran out because its worker died) in a `BEGIN IMMEDIATE`
//! transaction, heartbeats while it runs, and records the result. Schedules are rows with a
//! `next_run`; a node fires one with a compare-and-set on `next_run`, so exactly one node
//! fires each occurrence without any session-level lock.

use sqlx::Row;

use crate::{MetaStore, Result, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
}

impl JobState {
    fn parse(s: &str) -> JobState {
        match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            _ => JobState::Dead,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    pub state: JobState,
    pub attempts: i64,
    pub run_after: i64,
    pub lease_owner: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// The columns [`job_from_row`] reads, as a literal so queries stay static strings.
macro_rules! job_columns {
    () => {
        "id, kind, payload, state, attempts, run_after, lease_owner, created_at, started_at, finished_at, result, error"
    };
}

fn job_from_row(r: &sqlx::any::AnyRow) -> Job {
    let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    Job {
        id: r.get(0),
        kind: r.get(1),
        payload: json(Some(r.get(2))).unwrap_or(serde_json::Value::Null),
        state: JobState::parse(r.get(3)),
        attempts: r.get(4),
        run_after: r.get(5),
        lease_owner: r.get(6),
        created_at: r.get(7),
        started_at: r.get(8),
        finished_at: r.get(9),
        result: json(r.get(10)),
        error: r.get(11),
    }
}

impl MetaStore {
    /// Two nodes queueing a job of one kind at once must queue one: on PostgreSQL a lock
    /// scoped to that kind, held until the transaction ends, orders the "is one queued
    /// already?" checks (SQLite's one writer orders them already). It never touches the data
    /// path: only job queueing takes it.
    async fn lock_job_kind(&self, conn: &mut sqlx::AnyConnection, kind: &str) -> Result<()> {
        if self.dialect == crate::Dialect::Postgres {
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("berth job {kind}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Queues a job. Unless `allow_duplicate`, a job of the same kind that is already queued
    /// or running absorbs the request (its id is returned).
    pub async fn enqueue_job(
        &self,
        kind: &str,
        payload: &serde_json::Value,
        allow_duplicate: bool,
    ) -> Result<i64> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if !allow_duplicate {
            self.lock_job_kind(&mut tx, kind).await?;
            // A running job whose worker died (lease expired) does not absorb new requests.
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE kind = $1
                   AND (state = 'queued' OR (state = 'running' AND lease_until >= $2)) LIMIT 1",
            )
            .bind(kind)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = existing {
                return Ok(id);
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (kind, payload, state, run_after, created_at) VALUES ($1, $2, 'queued', $3, $3) RETURNING id",
        )
        .bind(kind)
        .bind(payload.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Records a job that runs right now in this process (for example `berth gc`).
    pub async fn start_inline_job(
        &self,
        kind: &str,
        payload: &serde_json::Value,
        owner: &str,
        lease_ms: i64,
    ) -> Result<i64> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let id = sqlx::query_scalar(
            "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_after, lease_owner, lease_until, created_at, started_at)
             VALUES ($1, $2, 'running', 1, 1, $3, $4, $5, $3, $3) RETURNING id",
        )
        .bind(kind)
        .bind(payload.to_string())
        .bind(now)
        .bind(owner)
        .bind(now + lease_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Claims the next due job, or one whose worker's lease expired. A job that has used
    /// all its attempts is marked dead instead.
    pub async fn claim_job(&self, owner: &str, lease_ms: i64) -> Result<Option<Job>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE jobs SET state = 'dead', finished_at = $1, lease_owner = NULL,
                    error = COALESCE(error, 'its worker stopped heartbeating on every attempt')
             WHERE state = 'running' AND lease_until < $1 AND attempts >= max_attempts",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Another node claiming at the same moment skips the row this one locked.
        let id: Option<i64> = sqlx::query_scalar(crate::locking!(
            self.dialect,
            "SELECT id FROM jobs
             WHERE (state = 'queued' AND run_after <= $1) OR (state = 'running' AND lease_until < $1)
             ORDER BY run_after, id LIMIT 1",
            "FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $2, lease_until = $3,
                    started_at = $4
             WHERE id = $1 RETURNING ",
            job_columns!()
        ))
        .bind(id)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(job_from_row(&row)))
    }

    /// Expires the leases of running jobs whose owner (named `<host>/<pid>/...`) is a process
    /// of this host that no longer exists, so they are claimed again at once instead of after
    /// their lease. Only meaningful when every worker runs on this host (the embedded mode).
    pub async fn release_jobs_of_dead_local_owners(
        &self,
        host: &str,
        is_alive: impl Fn(u32) -> bool,
    ) -> Result<u64> {
        let owners: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT lease_owner FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL")
                .fetch_all(&self.read)
                .await?;
        let mut released = 0;
        for owner in owners {
            let mut parts = owner.splitn(3, '/');
            let (Some(h), Some(pid)) = (
                parts.next(),
                parts.next().and_then(|p| p.parse::<u32>().ok()),
            ) else {
                continue;
            };
            if h == host && !is_alive(pid) {
                let mut tx = self.begin_write().await?;
                released += sqlx::query(
                    "UPDATE jobs SET lease_until = 0 WHERE state = 'running' AND lease_owner = $1",
                )
                .bind(&owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
            }
        }
        Ok(released)
    }

    /// Extends a running job's lease. False if the job is no longer this worker's.
    pub async fn heartbeat_job(&self, id: i64, owner: &str, lease_ms: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE jobs SET lease_until = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'")
            .bind(id)
            .bind(owner)
            .bind(now_ms() + lease_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn complete_job(
        &self,
        id: i64,
        owner: &str,
        result: &serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            // lease_owner stays: it says which node's worker finished the job.
            "UPDATE jobs SET state = 'succeeded', finished_at = $3, result = $4, lease_until = NULL, error = NULL
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(now_ms())
        .bind(result.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a failure: retried after `retry_in_ms` while attempts remain, else failed.
    pub async fn fail_job(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_in_ms: i64,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE jobs SET
                state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'failed' END,
                run_after = $3 + $5,
                finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE $3 END,
                error = $4, lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(now)
        .bind(error)
        .bind(retry_in_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_job(&self, id: i64) -> Result<Option<Job>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.as_ref().map(job_from_row))
    }

    /// The most recent jobs, optionally of one kind, newest first.
    pub async fn list_jobs(&self, kind: Option<&str>, limit: u32) -> Result<Vec<Job>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE ($1 IS NULL OR kind = $1) ORDER BY id DESC LIMIT $2"
        ))
        .bind(kind)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(job_from_row).collect())
    }

    /// Creates or updates a schedule; `next_run` is kept if the cron expression is unchanged.
    pub async fn upsert_schedule(
        &self,
        name: &str,
        kind: &str,
        cron: &str,
        next_run: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO schedules (name, kind, cron, next_run) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind,
                 next_run = CASE WHEN schedules.cron = excluded.cron THEN schedules.next_run ELSE excluded.next_run END,
                 cron = excluded.cron",
        )
        .bind(name)
        .bind(kind)
        .bind(cron)
        .bind(next_run)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM schedules WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Schedules due at `now`: (name, kind, cron, next_run).
    pub async fn due_schedules(&self, now: i64) -> Result<Vec<(String, String, String, i64)>> {
        let rows =
            sqlx::query("SELECT name, kind, cron, next_run FROM schedules WHERE next_run <= $1")
                .bind(now)
                .fetch_all(&self.read)
                .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Fires a schedule occurrence: moves `next_run` from `due` to `next` and queues its job,
    /// in one transaction. False if another node fired it first.
    pub async fn fire_schedule(&self, name: &str, kind: &str, due: i64, next: i64) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let moved =
            sqlx::query("UPDATE schedules SET next_run = $3 WHERE name = $1 AND next_run = $2")
                .bind(name)
                .bind(due)
                .bind(next)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        self.lock_job_kind(&mut tx, kind).await?;
        let busy: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM jobs WHERE kind = $1 AND state IN ('queued', 'running')",
        )
        .bind(kind)
        .fetch_optional(&mut *tx)
        .await?;
        if busy.is_none() {
            sqlx::query(
                "INSERT INTO jobs (kind, payload, state, run_after, created_at) VALUES ($1, $2, 'queued', $3, $3)",
            )
            .bind(kind)
            .bind(serde_json::json!({ "schedule": name }).to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
