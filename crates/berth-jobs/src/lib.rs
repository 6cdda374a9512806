//! Durable jobs and what runs them: garbage collection, upload purging and scrub. A node's
//! [`JobRunner`] fires due schedules, claims queued jobs (or jobs whose worker died), runs
//! them with a heartbeat, and records their reports in the jobs table, where the API and the
//! CLI read them.

pub mod gc;
pub mod scrub;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use berth_core::config::Config;
use berth_meta::{Job, MetaStore, now_ms};
use berth_storage::BlobStore;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use gc::{GcOptions, GcReport, run_gc};
pub use scrub::{ScrubReport, run_scrub};

// A claimed job belongs to its worker for `jobs.lease` past its last heartbeat; the worker
// heartbeats three times per lease, and an idle runner looks for due schedules and jobs every
// `jobs.poll_interval`.

pub const KIND_GC: &str = "gc";
pub const KIND_SCRUB: &str = "scrub";

/// The next occurrence of a cron expression (UTC) after `after_ms`.
pub fn next_run(cron: &str, after_ms: i64) -> Result<i64, String> {
    let cron = croner::Cron::from_str(cron)
        .map_err(|e| format!("invalid cron expression {cron:?}: {e}"))?;
    let after = chrono::DateTime::from_timestamp_millis(after_ms).ok_or("time out of range")?;
    cron.find_next_occurrence(&after, false)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("cron expression has no next occurrence: {e}"))
}

/// Checks the schedules of a configuration.
pub fn validate_schedules(config: &Config) -> Result<(), String> {
    for (key, cron) in [
        ("gc.schedule", &config.gc.schedule),
        ("scrub.schedule", &config.scrub.schedule),
    ] {
        if !cron.trim().is_empty() {
            next_run(cron, now_ms()).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    Ok(())
}

/// This host as far as process ids go: the host name and the pid namespace. Two containers may
/// share a host name (host networking) but not their pids, and a pid is only checked for
/// liveness by a process of the same namespace.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    // "pid:[4026531836]"
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            let inner = l.strip_prefix("pid:[")?.strip_suffix(']')?.to_owned();
            Some(inner)
        })
        .unwrap_or_else(|| "0".into());
    format!("{name}@{ns}")
}

/// A worker's name in the jobs table: `<host>@<pid namespace>/<pid>/<random>`, so a node that
/// starts on the same host (and in the same pid namespace) can tell which running jobs
/// belonged to a process that died, and take them over before their lease runs out.
pub fn worker_name() -> String {
    format!(
        "{}/{}/{}",
        hostname(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Runs jobs on this node until cancelled.
pub struct JobRunner {
    meta: MetaStore,
    blobs: Arc<dyn BlobStore>,
    config: Arc<Config>,
    owner: String,
    wake: Arc<Notify>,
}

impl JobRunner {
    /// `wake` is notified when a job is queued on this node (the API), so it starts at once.
    pub fn new(
        meta: MetaStore,
        blobs: Arc<dyn BlobStore>,
        config: Arc<Config>,
        wake: Arc<Notify>,
    ) -> JobRunner {
        let owner = worker_name();
        JobRunner {
            meta,
            blobs,
            config,
            owner,
            wake,
        }
    }

    fn lease(&self) -> Duration {
        self.config.jobs.lease.0
    }

    async fn install_schedules(&self) -> Result<(), String> {
        for (name, kind, cron) in [
            ("gc", KIND_GC, &self.config.gc.schedule),
            ("scrub", KIND_SCRUB, &self.config.scrub.schedule),
        ] {
            let result = if cron.trim().is_empty() {
                self.meta.delete_schedule(name).await
            } else {
                let next = next_run(cron, now_ms())?;
                self.meta.upsert_schedule(name, kind, cron, next).await
            };
            result.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub async fn run(self, cancel: CancellationToken) {
        if let Err(e) = self.install_schedules().await {
            tracing::error!(error = %e, "job schedules not installed");
        }
        // Jobs of a process of this host that died (kill -9, power loss) are taken over now
        // rather than after their lease.
        let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
        match self
            .meta
            .release_jobs_of_dead_local_owners(&hostname(), alive)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "taking over jobs of a worker that died"),
            Err(e) => tracing::warn!(error = %e, "could not check for jobs of dead workers"),
        }
        while !cancel.is_cancelled() {
            if let Err(e) = self.fire_schedules().await {
                tracing::warn!(error = %e, "firing schedules failed");
            }
            loop {
                match self
                    .meta
                    .claim_job(&self.owner, self.lease().as_millis() as i64)
                    .await
                {
                    Ok(Some(job)) => self.execute(job, &cancel).await,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming a job failed");
                        break;
                    }
                }
                if cancel.is_cancelled() {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.jobs.poll_interval.0) => {}
                () = self.wake.notified() => {}
                () = cancel.cancelled() => {}
            }
        }
    }

    async fn fire_schedules(&self) -> Result<(), String> {
        let now = now_ms();
        for (name, kind, cron, due) in self
            .meta
            .due_schedules(now)
            .await
            .map_err(|e| e.to_string())?
        {
            let next = next_run(&cron, now)?;
            if self
                .meta
                .fire_schedule(&name, &kind, due, next)
                .await
                .map_err(|e| e.to_string())?
            {
                tracing::info!(schedule = %name, "schedule fired");
            }
        }
        Ok(())
    }

    async fn execute(&self, job: Job, cancel: &CancellationToken) {
        let lease_ms = self.lease().as_millis() as i64;
        let heartbeat = self.lease() / 3;
        tracing::info!(job = job.id, kind = %job.kind, attempt = job.attempts, "job started");
        let heartbeat = {
            let meta = self.meta.clone();
            let owner = self.owner.clone();
            let id = job.id;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(heartbeat);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if !matches!(meta.heartbeat_job(id, &owner, lease_ms).await, Ok(true)) {
                        tracing::warn!(job = id, "lost the job's lease");
                        return;
                    }
                }
            })
        };
        let result = execute_job(
            &self.meta,
            self.blobs.as_ref(),
            &self.config,
            &job.kind,
            &job.payload,
            cancel,
        )
        .await;
        heartbeat.abort();
        let recorded = match result {
            Ok(report) => {
                tracing::info!(job = job.id, kind = %job.kind, report = %report, "job finished");
                self.meta.complete_job(job.id, &self.owner, &report).await
            }
            Err(e) => {
                let backoff = 10_000i64 << job.attempts.clamp(0, 10);
                tracing::error!(job = job.id, kind = %job.kind, error = %e, "job failed");
                self.meta.fail_job(job.id, &self.owner, &e, backoff).await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(job = job.id, error = %e, "recording the job's outcome failed");
        }
    }
}

/// Runs one job of `kind` and returns its report as JSON.
pub async fn execute_job(
    meta: &MetaStore,
    blobs: &dyn BlobStore,
    config: &Config,
    kind: &str,
    payload: &serde_json::Value,
    cancel: &CancellationToken,
) -> Result<serde_json::Value, String> {
    let grace = payload
        .get("grace_period_ms")
        .and_then(|v| v.as_u64())
        .map(Duration::from_millis);
    match kind {
        KIND_GC => {
            let opts = GcOptions {
                dry_run: payload
                    .get("dry_run")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                full: payload
                    .get("full")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                grace_period: grace,
            };
            let report = run_gc(meta, blobs, config, &opts, cancel)
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(report).unwrap_or_default())
        }
        KIND_SCRUB => {
            let report = run_scrub(meta, blobs, config, grace, cancel)
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(report).unwrap_or_default())
        }
        other => Err(format!("unknown job kind {other:?}")),
    }
}
