//! A garbage collection run: review what the queue says is due, one item per short
//! transaction; delete the bytes of blobs the reviews released, at a bounded rate; finish
//! sweeps whose sweeper died; purge idle uploads; remove repositories that hold nothing.
//!
//! A dry run is the same run on a private copy of the metadata GC works on
//! ([`MetaStore::gc_snapshot`]), with no bytes deleted: it reports exactly what a run would
//! do, cascades included, and never holds the database's write lock (a dry run inside one
//! transaction used to block every push while it ran).

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
/// Review items brought forward per transaction under a grace override.
const FORWARD_BATCH: u32 = 1000;
/// Empty repositories removed per run at most.
const EMPTY_REPOSITORIES_PER_RUN: u32 = 1000;

/// What happens to the bytes of what a run collects: deleted, or (a dry run) kept.
#[derive(Clone, Copy)]
enum Bytes<'a> {
    Delete(&'a dyn BlobStore),
    Keep,
}

/// Options of one run (a GC job's payload).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Queue every blob and manifest first: the occasional full audit.
    pub full: bool,
    /// Overrides `gc.grace_period`, in milliseconds.
    #[serde(rename = "grace_period_ms", with = "crate::millis")]
    pub grace_period: Option<Duration>,
}

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Repositories that held nothing (left by abandoned uploads), removed.
    pub deleted_repositories: u64,
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
    bytes: Bytes<'_>,
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
    if let Bytes::Delete(blobs) = bytes {
        throttle.wait().await;
        if let Err(e) = blobs.delete_blob(&key).await {
            // The row stays `deleting`; the run after its lease retries.
            report
                .errors
                .push(format!("deleting the bytes of {}: {e}", sweep.digest));
            return;
        }
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

/// Runs one garbage collection (a dry run on a copy of the metadata).
pub async fn run_gc(
    meta: &MetaStore,
    blobs: &dyn BlobStore,
    config: &Config,
    opts: &GcOptions,
    cancel: &CancellationToken,
) -> Result<GcReport, berth_meta::MetaError> {
    if !opts.dry_run {
        return collect(meta, Bytes::Delete(blobs), config, opts, cancel).await;
    }
    let dir = &config.data_dir;
    let snapshot_dir = std::fs::create_dir_all(dir)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix("gc-dry-run-")
                .tempdir_in(dir)
        })
        .map_err(|e| {
            berth_meta::MetaError::Config(format!(
                "a dry run copies the metadata under {}: {e}",
                dir.display()
            ))
        })?;
    let copy = meta
        .gc_snapshot(&snapshot_dir.path().join("snapshot.db"))
        .await?;
    let result = collect(&copy, Bytes::Keep, config, opts, cancel).await;
    copy.close().await;
    let mut report = result?;
    report.dry_run = true;
    Ok(report)
}

async fn collect(
    meta: &MetaStore,
    bytes: Bytes<'_>,
    config: &Config,
    opts: &GcOptions,
    cancel: &CancellationToken,
) -> Result<GcReport, berth_meta::MetaError> {
    let policy = policy(config, opts.grace_period);
    let mut report = GcReport {
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
    if opts.grace_period.is_some() {
        // Items an earlier run deferred under the configured grace are due now under the
        // shorter one: bring them forward, and every pass reviews only what is due when it
        // begins, so an item a pass re-queues is never picked again by the same pass.
        let now = now_ms();
        while meta.bring_reviews_forward(now, FORWARD_BATCH).await? > 0 {
            if cancel.is_cancelled() {
                break;
            }
        }
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

    let rate = match bytes {
        Bytes::Delete(_) => config.gc.delete_rate,
        Bytes::Keep => 0,
    };
    let mut throttle = DeleteThrottle::new(rate);
    // A run reviews what was due when each pass began, so a steady stream of pushes (each
    // queues its blob) cannot keep it going forever, and an item a review re-queues (for a
    // later time) waits for a later pass or run. A pass that deleted manifests queued their
    // blobs, so another pass follows at once: one run turns a deleted tag into freed bytes.
    'passes: for _ in 0..MAX_PASSES {
        let cutoff = now_ms();
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
                let result = match &item {
                    ReviewItem::Manifest { repo_id, digest } => {
                        report.reviewed_manifests += 1;
                        review_manifest(meta, *repo_id, digest, &policy)
                            .await
                            .map(|outcome| {
                                if let ManifestReview::Deleted(n) = outcome {
                                    report.deleted_manifests += n as u64;
                                    tracing::debug!(repo_id, %digest, manifests = n, "collected manifest");
                                }
                            })
                    }
                    ReviewItem::Blob { digest } => {
                        report.reviewed_blobs += 1;
                        match review_blob(meta, digest, &policy).await {
                            Ok(BlobReview::Sweep(sweep)) => {
                                delete_bytes(meta, bytes, &mut throttle, &sweep, &mut report).await;
                                Ok(())
                            }
                            Ok(_) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                };
                match result {
                    Ok(()) => {}
                    // A deadlock with a push or a delete on another node: the item stays
                    // queued (its transaction rolled back) for the next pass or run.
                    Err(e) if e.is_retryable_conflict() => {
                        tracing::debug!(?item, error = %e, "review lost a lock conflict; left queued");
                    }
                    Err(e) => return Err(e),
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
            delete_bytes(meta, bytes, &mut throttle, &sweep, &mut report).await;
        }
        purge_uploads(meta, bytes, config, &mut report).await?;
        report.deleted_repositories = meta
            .collect_empty_repositories(now_ms() - policy.grace_ms, EMPTY_REPOSITORIES_PER_RUN)
            .await?;
    }
    report.finished_at = now_ms();
    Ok(report)
}

/// Removes upload sessions idle longer than `uploads.purge_after`, with their bytes.
async fn purge_uploads(
    meta: &MetaStore,
    bytes: Bytes<'_>,
    config: &Config,
    report: &mut GcReport,
) -> Result<(), berth_meta::MetaError> {
    let before = now_ms() - config.uploads.purge_after.0.as_millis() as i64;
    for id in meta.idle_uploads(before, 10_000).await? {
        // The row goes first: a client that resumes now gets 404 instead of writing into
        // bytes that are about to vanish.
        if meta.purge_upload(&id, before).await? {
            if let Bytes::Delete(blobs) = bytes
                && let Some(uid) = UploadId::parse(&id)
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

async fn review_manifest(
    meta: &MetaStore,
    repo_id: i64,
    digest: &str,
    policy: &GcPolicy,
) -> Result<ManifestReview, berth_meta::MetaError> {
    let mut tx = meta.gc_tx().await?;
    let outcome = tx
        .review_manifest(repo_id, digest, policy, now_ms())
        .await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn review_blob(
    meta: &MetaStore,
    digest: &str,
    policy: &GcPolicy,
) -> Result<BlobReview, berth_meta::MetaError> {
    let mut tx = meta.gc_tx().await?;
    let outcome = tx.review_blob(digest, policy, now_ms()).await?;
    tx.commit().await?;
    Ok(outcome)
}
