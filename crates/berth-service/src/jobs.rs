//! Jobs for the runners of the nodes (garbage collection, scrub), their history and reports,
//! and storage accounting: registry admins only.

use berth_jobs::JobRequest;
use berth_meta::{Job, StorageUsage};

use crate::access::Actor;
use crate::{Error, Registry, Result};

/// Jobs one listing returns when it names no limit, and at most.
pub const JOBS_PAGE_DEFAULT: u32 = 20;
pub const JOBS_PAGE_MAX: u32 = 500;

impl Registry {
    /// Queues a job (or returns the one of its kind already queued or running) and wakes
    /// this node's runner; returns its id.
    pub async fn queue_job(&self, actor: &Actor, request: JobRequest) -> Result<i64> {
        self.require_admin(actor)?;
        let id = self
            .meta
            .enqueue_job(request.kind().as_str(), &request.payload(), false)
            .await?;
        self.jobs_wake.notify_one();
        Ok(id)
    }

    /// Recent jobs, newest first, of one kind or all (`limit` 0: the default).
    pub async fn jobs(&self, actor: &Actor, kind: Option<&str>, limit: u32) -> Result<Vec<Job>> {
        self.require_admin(actor)?;
        let limit = match limit {
            0 => JOBS_PAGE_DEFAULT,
            n => n.min(JOBS_PAGE_MAX),
        };
        Ok(self.meta.list_jobs(kind, limit).await?)
    }

    pub async fn job(&self, actor: &Actor, id: i64) -> Result<Job> {
        self.require_admin(actor)?;
        self.meta
            .get_job(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))
    }

    /// Referenced, shared and reclaimable bytes per repository and in total.
    pub async fn storage_usage(&self, actor: &Actor) -> Result<StorageUsage> {
        self.require_admin(actor)?;
        Ok(self.meta.storage_usage().await?)
    }
}

/// What `/metrics` shows of the registry's state: totals only, no names.
#[derive(Debug)]
pub struct Status {
    /// The last 200 jobs, newest first.
    pub jobs: Vec<Job>,
    /// The report of the newest real (not dry) GC run among them.
    pub last_gc: Option<berth_jobs::GcReport>,
    pub storage: StorageUsage,
}

impl Registry {
    /// The registry's state for monitoring; open to everyone like `/healthz`, since it holds
    /// no names. GC figures come from the jobs table, so runs started by `berth gc` in
    /// another process are included.
    pub async fn status(&self) -> Result<Status> {
        let jobs = self.meta.list_jobs(None, 200).await?;
        let last_gc = jobs.iter().find_map(|j| {
            match berth_jobs::JobReport::from_stored(&j.kind, j.result.as_ref()) {
                Some(berth_jobs::JobReport::Gc(r)) if !r.dry_run => Some(r),
                _ => None,
            }
        });
        let storage = self.meta.storage_usage().await?;
        Ok(Status {
            jobs,
            last_gc,
            storage,
        })
    }
}
