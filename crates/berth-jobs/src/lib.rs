//! Durable jobs and what runs them: garbage collection, upload purging and scrub. A node's
//! [`JobRunner`] fires due schedules, claims queued jobs (or jobs whose worker died), runs
//! them with a heartbeat, and records their reports in the jobs table, where the API and the
//! CLI read them as types ([`JobReport`]).
//!
//! Every kind of job is a [`JobKind`] with a typed request (what to do) and a typed report
//! (what was done); the jobs table stores both as JSON. Long-running background work
//! implements [`Worker`] (a name, a status, one unit of work, a stop signal) and runs with
//! [`run_worker`]; the job runner is one.

pub mod events;
pub mod gc;
pub mod scrub;
pub mod vulndb;
mod worker;

pub use worker::{Tick, Worker, WorkerStatus, run_worker};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use berth_core::config::Config;
use berth_meta::{Job, MetaStore, now_ms};
use berth_storage::BlobStore;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use events::{EventSink, EventWorker};
pub use gc::{GcOptions, GcReport, run_gc};
pub use scrub::{ScrubReport, run_scrub};
pub use vulndb::ImportReport;

// A claimed job belongs to its worker for `jobs.lease` past its last heartbeat; the worker
// heartbeats three times per lease, and an idle runner looks for due schedules and jobs every
// `jobs.poll_interval`.

/// Why a job (or scheduling one) failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Meta(#[from] berth_meta::MetaError),
    #[error("the job's request does not parse: {0}")]
    Request(String),
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    #[error("{0}")]
    Schedule(String),
    #[error("vulnerability database import failed: {0}")]
    Vulndb(String),
}

/// The kinds of job, as the jobs table names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Gc,
    Scrub,
    VulndbSync,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::Gc, JobKind::Scrub, JobKind::VulndbSync];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Gc => "gc",
            JobKind::Scrub => "scrub",
            JobKind::VulndbSync => "vulndb-sync",
        }
    }

    pub fn parse(s: &str) -> Result<JobKind, JobError> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| JobError::UnknownKind(s.to_owned()))
    }
}

/// What a job is asked to do: its kind and its options (the jobs table's `payload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRequest {
    Gc(GcOptions),
    Scrub(ScrubOptions),
    /// Imports `vulndb.sources` (the schedule, `berth vulndb sync`, the API).
    VulndbSync(VulndbSyncOptions),
}

/// Options of a vulnerability database sync (none yet: it imports `vulndb.sources`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VulndbSyncOptions {}

/// Options of a scrub.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScrubOptions {
    /// Overrides `gc.grace_period` for orphaned bytes, in milliseconds.
    #[serde(default, rename = "grace_period_ms", with = "millis")]
    pub grace_period: Option<Duration>,
}

impl JobRequest {
    pub fn kind(&self) -> JobKind {
        match self {
            JobRequest::Gc(_) => JobKind::Gc,
            JobRequest::Scrub(_) => JobKind::Scrub,
            JobRequest::VulndbSync(_) => JobKind::VulndbSync,
        }
    }

    /// The payload stored with the job.
    pub fn payload(&self) -> serde_json::Value {
        match self {
            JobRequest::Gc(o) => serde_json::to_value(o),
            JobRequest::Scrub(o) => serde_json::to_value(o),
            JobRequest::VulndbSync(o) => serde_json::to_value(o),
        }
        .expect("job options serialize")
    }

    /// The request of a stored job.
    pub fn from_stored(kind: &str, payload: &serde_json::Value) -> Result<JobRequest, JobError> {
        let bad = |e: serde_json::Error| JobError::Request(e.to_string());
        Ok(match JobKind::parse(kind)? {
            JobKind::Gc => JobRequest::Gc(serde_json::from_value(payload.clone()).map_err(bad)?),
            JobKind::Scrub => {
                JobRequest::Scrub(serde_json::from_value(payload.clone()).map_err(bad)?)
            }
            JobKind::VulndbSync => {
                JobRequest::VulndbSync(serde_json::from_value(payload.clone()).map_err(bad)?)
            }
        })
    }
}

/// What a job did (the jobs table's `result`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum JobReport {
    Gc(GcReport),
    Scrub(ScrubReport),
    VulndbSync(vulndb::ImportReport),
}

impl JobReport {
    /// The report of a finished job, read back; None when it has none or it does not parse.
    pub fn from_stored(kind: &str, result: Option<&serde_json::Value>) -> Option<JobReport> {
        let r = result?.clone();
        match JobKind::parse(kind).ok()? {
            JobKind::Gc => serde_json::from_value(r).ok().map(JobReport::Gc),
            JobKind::Scrub => serde_json::from_value(r).ok().map(JobReport::Scrub),
            JobKind::VulndbSync => serde_json::from_value(r).ok().map(JobReport::VulndbSync),
        }
    }
}

/// Durations in job payloads are whole milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// The next occurrence of a cron expression (UTC) after `after_ms`.
pub fn next_run(cron: &str, after_ms: i64) -> Result<i64, JobError> {
    let cron = croner::Cron::from_str(cron)
        .map_err(|e| JobError::Schedule(format!("invalid cron expression {cron:?}: {e}")))?;
    let after = chrono::DateTime::from_timestamp_millis(after_ms)
        .ok_or_else(|| JobError::Schedule("time out of range".into()))?;
    cron.find_next_occurrence(&after, false)
        .map(|t| t.timestamp_millis())
        .map_err(|e| JobError::Schedule(format!("cron expression has no next occurrence: {e}")))
}

/// The schedules a configuration asks for: (name, request, cron).
fn schedules(config: &Config) -> [(&'static str, JobRequest, &str); 3] {
    [
        (
            "gc",
            JobRequest::Gc(GcOptions::default()),
            config.gc.schedule.as_str(),
        ),
        (
            "scrub",
            JobRequest::Scrub(ScrubOptions::default()),
            config.scrub.schedule.as_str(),
        ),
        (
            "vulndb",
            JobRequest::VulndbSync(VulndbSyncOptions::default()),
            config.vulndb.schedule.as_str(),
        ),
    ]
}

/// Checks the schedules of a configuration.
pub fn validate_schedules(config: &Config) -> Result<(), JobError> {
    for (name, _, cron) in schedules(config) {
        if !cron.trim().is_empty() {
            next_run(cron, now_ms())
                .map_err(|e| JobError::Schedule(format!("{name}.schedule: {e}")))?;
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

    async fn install_schedules(&self) -> Result<(), JobError> {
        for (name, request, cron) in schedules(&self.config) {
            if cron.trim().is_empty() {
                self.meta.delete_schedule(name).await?;
            } else {
                let next = next_run(cron, now_ms())?;
                self.meta
                    .upsert_schedule(name, request.kind().as_str(), cron, next)
                    .await?;
            }
        }
        Ok(())
    }

    /// Runs jobs until `cancel` (the runner as a [`Worker`]).
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
        run_worker(self, cancel).await;
    }

    async fn fire_schedules(&self) -> Result<(), JobError> {
        let now = now_ms();
        for (name, kind, cron, due) in self.meta.due_schedules(now).await? {
            let next = next_run(&cron, now)?;
            if self.meta.fire_schedule(&name, &kind, due, next).await? {
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
        let result = match JobRequest::from_stored(&job.kind, &job.payload) {
            Ok(request) => {
                execute_job(
                    &self.meta,
                    self.blobs.as_ref(),
                    &self.config,
                    &request,
                    cancel,
                )
                .await
            }
            Err(e) => Err(e),
        };
        heartbeat.abort();
        let recorded = match result {
            Ok(report) => {
                let report = serde_json::to_value(&report).expect("reports serialize");
                tracing::info!(job = job.id, kind = %job.kind, report = %report, "job finished");
                self.meta.complete_job(job.id, &self.owner, &report).await
            }
            Err(e) => {
                let backoff = 10_000i64 << job.attempts.clamp(0, 10);
                tracing::error!(job = job.id, kind = %job.kind, error = %e, "job failed");
                self.meta
                    .fail_job(job.id, &self.owner, &e.to_string(), backoff)
                    .await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(job = job.id, error = %e, "recording the job's outcome failed");
        }
    }
}

#[async_trait::async_trait]
impl Worker for JobRunner {
    fn name(&self) -> &str {
        "jobs"
    }

    fn status(&self) -> WorkerStatus {
        WorkerStatus::Idle
    }

    /// Fires due schedules, then runs one claimed job; idle for `jobs.poll_interval` (or
    /// until woken) when there is none.
    async fn work(&mut self, stop: &CancellationToken) -> Tick {
        if let Err(e) = self.fire_schedules().await {
            tracing::warn!(error = %e, "firing schedules failed");
        }
        match self
            .meta
            .claim_job(&self.owner, self.lease().as_millis() as i64)
            .await
        {
            Ok(Some(job)) => {
                self.execute(job, stop).await;
                Tick::Busy
            }
            Ok(None) => Tick::Idle {
                at_most: self.config.jobs.poll_interval.0,
                wake: Some(self.wake.clone()),
            },
            Err(e) => {
                tracing::warn!(error = %e, "claiming a job failed");
                Tick::Idle {
                    at_most: self.config.jobs.poll_interval.0,
                    wake: Some(self.wake.clone()),
                }
            }
        }
    }
}

/// Runs one job and returns its report.
pub async fn execute_job(
    meta: &MetaStore,
    blobs: &dyn BlobStore,
    config: &Config,
    request: &JobRequest,
    cancel: &CancellationToken,
) -> Result<JobReport, JobError> {
    Ok(match request {
        JobRequest::Gc(opts) => JobReport::Gc(run_gc(meta, blobs, config, opts, cancel).await?),
        JobRequest::Scrub(opts) => {
            JobReport::Scrub(run_scrub(meta, blobs, config, opts.grace_period, cancel).await?)
        }
        JobRequest::VulndbSync(_) => {
            let store = meta
                .vuln_store(&config.data_dir.join(vulndb::SQLITE_FILE))
                .await?;
            let opts = vulndb::ImportOptions::from_config(&config.vulndb, &worker_name());
            JobReport::VulndbSync(
                vulndb::import(&store, &config.vulndb.sources, &opts)
                    .await
                    .map_err(|e| JobError::Vulndb(e.to_string()))?,
            )
        }
    })
}
