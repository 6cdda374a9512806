//! A garbage collection run: review what the queue says is due, one item per short
//! transaction; delete the bytes of blobs the reviews released, at a bounded rate; finish
//! sweeps whose sweeper died; purge idle uploads. A dry run does the same reviews inside one
//! transaction that is rolled back, and deletes nothing.

use std::time::{Duration, Instant};

use berth_core::Digest;
use berth_core::config::{Config, UntaggedPolicy};
use berth_meta::{BlobReview, GcPolicy, ManifestReview, MetaStore, ReviewItem, Sweep, now_ms};
use berth_storage::{BlobKey, BlobStore, UploadId};
use tokio_util::sync::CancellationToken;

/// A blob marked `deleting` is never revived (a new upload of its digest makes a new
/// generation), so finishing its sweep twice is harmless: the lease only keeps two runs from
/// doing the same deletion at once. When a sweeper dies, the next run after this finishes it.
const SWEEP_LEASE: Duration = Duration::from_secs(5);
/// Review items fetched per batch (each reviewed in its own transaction).
const BATCH: u32 = 100;
/// Upper bound of batches per pass, so a run always ends; what is left waits for the next.
const MAX_BATCHES: usize = 10_000;
/// Passes per run: manifests deleted in one pass release their blobs to the next.
const MAX_PASSES: usize = 4;

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Queue every blob and manifest first: the occasional full audit.
    pub full: bool,
    /// Overrides `gc.grace_period`.
    pub grace_period: Option<Duration>,
}

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub started_at: i64,
    pub finished_at: i64,
    pub reviewed_manifests: u64,
    pub deleted_manifests: u64,
    pub reviewed_blobs: u64,
    pub deleted_blobs: u64,
    pub bytes_freed: u64,
    pub purged_uploads: u64,
    /// Tags of pull-through cache projects older than their `cache_max_age`.
    pub expired_cache_tags: u64,
    pub interrupted: bool,
    pub errors: Vec<String>,
}

pub fn policy(config: &Config, grace_override: Option<Duration>) -> GcPolicy {
    let grace = grace_override.unwrap_or(config.gc.grace_period.0);
    GcPolicy {
        grace_ms: grace.as_millis() as i64,
        untagged_age_ms: match config.gc.untagged {
            UntaggedPolicy::Keep => None,
            UntaggedPolicy::Delete => Some(config.gc.untagged_age.0.as_millis() as i64),
        },
        lease_ms: SWEEP_LEASE.as_millis() as i64,
    }
}

/// Spaces out blob deletions to at most `rate` per second.
struct DeleteThrottle {
    interval: Option<Duration>,
    next: Instant,
}

impl DeleteThrottle {
    fn new(rate: u32) -> Self {
        DeleteThrottle {
            interval: (rate > 0).then(|| Duration::from_secs(1) / rate),
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        if let Some(iv) = self.interval {
            let now = Instant::now();
            if self.next > now {
                tokio::time::sleep(self.next - now).await;
            }
            self.next = self.next.max(now) + iv;
        }
    }
}

fn sweep_key(s: &Sweep) -> Option<BlobKey> {
    BlobKey::new(Digest::parse(&s.digest).ok()?, &s.generation)
}

async fn delete_bytes(
    meta: &MetaStore,
    blobs: &dyn BlobStore,
    throttle: &mut DeleteThrottle,
    sweep: &Sweep,
    report: &mut GcReport,
) {
    let Some(key) = sweep_key(sweep) else {
        report.errors.push(format!(
            "blob row {} has an unusable generation {:?}",
            sweep.digest, sweep.generation
        ));
        return;
    };
    throttle.wait().await;
    if let Err(e) = blobs.delete_blob(&key).await {
        // The row stays `deleting`; the run after its lease retries.
        report
            .errors
            .push(format!("deleting the bytes of {}: {e}", sweep.digest));
        return;
    }
    match meta.finish_sweep(sweep).await {
        Ok(()) => {
            report.deleted_blobs += 1;
            report.bytes_freed += sweep.size;
        }
        Err(e) => report
            .errors
            .push(format!("removing the row of {}: {e}", sweep.digest)),
    }
}

/// Runs one garbage collection.
pub async fn run_gc(
    meta: &MetaStore,
    blobs: &dyn BlobStore,
    config: &Config,
    opts: &GcOptions,
    cancel: &CancellationToken,
) -> Result<GcReport, berth_meta::MetaError> {
    let policy = policy(config, opts.grace_period);
    let mut report = GcReport {
        dry_run: opts.dry_run,
        started_at: now_ms(),
        ..GcReport::default()
    };
    if opts.full {
        let n = meta.enqueue_everything().await?;
        tracing::info!(
            items = n,
            "full audit: every blob and manifest queued for review"
        );
    }
    if opts.dry_run {
        dry_run(meta, &policy, opts.grace_period.is_some(), &mut report).await?;
        let idle = meta
            .idle_uploads(
                now_ms() - config.uploads.purge_after.0.as_millis() as i64,
                u32::MAX,
            )
            .await?;
        report.purged_uploads = idle.len() as u64;
        report.finished_at = now_ms();
        return Ok(report);
    }

    // Age-based eviction of pull-through caches: old cached tags go first, so this run
    // already collects what only they held.
    for p in &config.proxy.projects {
        if p.cache_max_age.0.is_zero() {
            continue;
        }
        let before = now_ms() - p.cache_max_age.0.as_millis() as i64;
        loop {
            let n = meta.expire_project_tags(&p.name, before, 500).await?;
            report.expired_cache_tags += n;
            if n < 500 || cancel.is_cancelled() {
                break;
            }
        }
    }

    let mut throttle = DeleteThrottle::new(config.gc.delete_rate);
    // A run reviews what was due when each pass began, so a steady stream of pushes (each
    // queues its blob) cannot keep it going forever. A pass that deleted manifests queued
    // their blobs, so another pass follows at once: one run turns a deleted tag into freed
    // bytes.
    'passes: for pass in 0..MAX_PASSES {
        // With a grace override, items an earlier run deferred under the configured grace
        // are reviewed now too.
        let cutoff = if pass == 0 && opts.grace_period.is_some() {
            i64::MAX
        } else {
            now_ms()
        };
        let deleted_before = report.deleted_manifests;
        for _ in 0..MAX_BATCHES {
            let mut tx = meta.gc_tx().await?;
            let items = tx.due_reviews(cutoff, BATCH).await?;
            tx.commit().await?;
            if items.is_empty() {
                break;
            }
            for item in items {
                if cancel.is_cancelled() {
                    report.interrupted = true;
                    break 'passes;
                }
                let mut tx = meta.gc_tx().await?;
                match item {
                    ReviewItem::Manifest { repo_id, digest } => {
                        report.reviewed_manifests += 1;
                        let outcome = tx
                            .review_manifest(repo_id, &digest, &policy, now_ms())
                            .await?;
                        tx.commit().await?;
                        if let ManifestReview::Deleted(n) = outcome {
                            report.deleted_manifests += n as u64;
                            tracing::debug!(repo_id, %digest, manifests = n, "collected manifest");
                        }
                    }
                    ReviewItem::Blob { digest } => {
                        report.reviewed_blobs += 1;
                        let outcome = tx.review_blob(&digest, &policy, now_ms()).await?;
                        tx.commit().await?;
                        if let BlobReview::Sweep(sweep) = outcome {
                            delete_bytes(meta, blobs, &mut throttle, &sweep, &mut report).await;
                        }
                    }
                }
            }
        }
        if report.deleted_manifests == deleted_before {
            break;
        }
    }

    // Sweeps whose sweeper died (or whose byte deletion failed) after their lease ran out.
    if !report.interrupted {
        for sweep in meta.expired_sweeps(policy.lease_ms, 1000).await? {
            delete_bytes(meta, blobs, &mut throttle, &sweep, &mut report).await;
        }
        purge_uploads(meta, blobs, config, &mut report).await?;
    }
    report.finished_at = now_ms();
    Ok(report)
}

/// Removes upload sessions idle longer than `uploads.purge_after`, with their bytes.
async fn purge_uploads(
    meta: &MetaStore,
    blobs: &dyn BlobStore,
    config: &Config,
    report: &mut GcReport,
) -> Result<(), berth_meta::MetaError> {
    let before = now_ms() - config.uploads.purge_after.0.as_millis() as i64;
    for id in meta.idle_uploads(before, 10_000).await? {
        // The row goes first: a client that resumes now gets 404 instead of writing into
        // bytes that are about to vanish.
        if meta.purge_upload(&id, before).await? {
            if let Some(uid) = UploadId::parse(&id)
                && let Err(e) = blobs.delete_upload(&uid).await
            {
                report.errors.push(format!("deleting upload {id}: {e}"));
                continue;
            }
            report.purged_uploads += 1;
        }
    }
    Ok(())
}

/// The reviews of a run inside one transaction, rolled back: what a run now would remove.
async fn dry_run(
    meta: &MetaStore,
    policy: &GcPolicy,
    grace_override: bool,
    report: &mut GcReport,
) -> Result<(), berth_meta::MetaError> {
    let mut tx = meta.gc_tx().await?;
    // Inside one transaction nothing else writes, so "now" can stay fixed: every item the
    // reviews queue is due at once and the passes of the real run happen in this one loop.
    let now = now_ms();
    // Sweeps a dead sweeper left, which the real run finishes.
    let (n, bytes) = tx.expired_sweep_totals(now).await?;
    report.deleted_blobs += n;
    report.bytes_freed += bytes;
    let cutoff = if grace_override { i64::MAX } else { now };
    for _ in 0..MAX_BATCHES * MAX_PASSES {
        let items = tx.due_reviews(cutoff, BATCH).await?;
        if items.is_empty() {
            break;
        }
        for item in items {
            match item {
                ReviewItem::Manifest { repo_id, digest } => {
                    report.reviewed_manifests += 1;
                    if let ManifestReview::Deleted(n) =
                        tx.review_manifest(repo_id, &digest, policy, now).await?
                    {
                        report.deleted_manifests += n as u64;
                    }
                }
                ReviewItem::Blob { digest } => {
                    report.reviewed_blobs += 1;
                    if let BlobReview::Sweep(s) = tx.review_blob(&digest, policy, now).await? {
                        report.deleted_blobs += 1;
                        report.bytes_freed += s.size;
                    }
                }
            }
        }
    }
    tx.rollback().await
}
