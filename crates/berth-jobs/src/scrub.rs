//! Scrub: re-hashes every stored blob and reports the ones whose bytes no longer match their
//! digest or are missing; removes bytes the database does not know (left by a crash between
//! a rename and its commit) once they are older than the grace period, and staging files of
//! uploads that have no session.

use std::collections::HashSet;
use std::time::Duration;

use berth_core::config::Config;
use berth_core::{Digest, Digester};
use berth_meta::{MetaStore, now_ms};
use berth_storage::{BlobKey, BlobStore, StorageErrorKind};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ScrubReport {
    pub started_at: i64,
    pub finished_at: i64,
    /// Live blob rows whose bytes were re-hashed.
    pub checked: u64,
    pub bytes_hashed: u64,
    /// `digest@generation` of blobs whose bytes do not hash to their digest (or have the
    /// wrong size).
    pub corrupted: Vec<String>,
    /// `digest@generation` of live rows whose bytes are missing.
    pub missing: Vec<String>,
    /// Stored generations no row knows, removed (older than the grace period).
    pub orphans_removed: Vec<String>,
    /// Stored generations no row knows yet, younger than the grace period (probably an
    /// upload committing right now), left alone.
    pub orphans_pending: u64,
    /// Staging files without an upload session, removed.
    pub orphan_uploads_removed: u64,
    pub interrupted: bool,
    pub errors: Vec<String>,
}

const PAGE: u32 = 500;

pub async fn run_scrub(
    meta: &MetaStore,
    blobs: &dyn BlobStore,
    config: &Config,
    grace_override: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<ScrubReport, berth_meta::MetaError> {
    let grace_ms = grace_override
        .unwrap_or(config.gc.grace_period.0)
        .as_millis() as i64;
    let mut report = ScrubReport {
        started_at: now_ms(),
        ..ScrubReport::default()
    };

    // 1. Every live row: do its bytes exist and hash to its digest?
    let mut after = String::new();
    'pages: loop {
        let page = meta.live_blobs_page(&after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.digest.clone();
        for row in page {
            if cancel.is_cancelled() {
                report.interrupted = true;
                break 'pages;
            }
            let name = format!("{}@{}", row.digest, row.generation);
            let Some(key) = Digest::parse(&row.digest)
                .ok()
                .and_then(|d| BlobKey::new(d, &row.generation))
            else {
                report.errors.push(format!("unusable blob row {name}"));
                continue;
            };
            report.checked += 1;
            match hash_blob(blobs, &key, row.size).await {
                Ok((digest, len)) => {
                    report.bytes_hashed += len;
                    if digest != key.digest || len != row.size {
                        tracing::error!(blob = %name, actual = %digest, size = len, expected_size = row.size, "scrub: blob is corrupted");
                        report.corrupted.push(name);
                    }
                }
                Err(e) if e.kind == StorageErrorKind::NotFound => {
                    tracing::error!(blob = %name, "scrub: blob bytes are missing");
                    report.missing.push(name);
                }
                Err(e) => report.errors.push(format!("reading {name}: {e}")),
            }
        }
    }
    if report.interrupted {
        report.finished_at = now_ms();
        return Ok(report);
    }

    // 2. Every stored generation: does a row know it?
    let cutoff = now_ms() - grace_ms;
    match blobs.list_blobs().await {
        Ok(objects) => {
            for obj in objects {
                let digest = obj.key.digest.to_string();
                let known = meta
                    .blob_generations(&digest)
                    .await?
                    .iter()
                    .any(|(g, _)| *g == obj.key.generation);
                if known {
                    continue;
                }
                if obj.modified_ms >= cutoff {
                    report.orphans_pending += 1;
                    continue;
                }
                match blobs.delete_blob(&obj.key).await {
                    Ok(()) => {
                        tracing::warn!(blob = %digest, generation = %obj.key.generation, "scrub: removed bytes no row knows");
                        report
                            .orphans_removed
                            .push(format!("{digest}@{}", obj.key.generation));
                    }
                    Err(e) => report.errors.push(format!("removing orphan {digest}: {e}")),
                }
            }
        }
        Err(e) => report.errors.push(format!("listing blobs: {e}")),
    }

    // 3. Staging files without a session.
    match blobs.list_uploads().await {
        Ok(uploads) => {
            let mut seen = HashSet::new();
            for obj in uploads {
                let id = obj.key.to_string();
                if !seen.insert(id.clone())
                    || obj.modified_ms >= cutoff
                    || meta.upload_exists(&id).await?
                {
                    continue;
                }
                match blobs.delete_upload(&obj.key).await {
                    Ok(()) => report.orphan_uploads_removed += 1,
                    Err(e) => report
                        .errors
                        .push(format!("removing staging file {id}: {e}")),
                }
            }
        }
        Err(e) => report.errors.push(format!("listing uploads: {e}")),
    }
    report.finished_at = now_ms();
    Ok(report)
}

async fn hash_blob(
    blobs: &dyn BlobStore,
    key: &BlobKey,
    size: u64,
) -> Result<(Digest, u64), berth_storage::StorageError> {
    // Read one byte past the recorded size, so a blob that grew is caught too.
    let mut stream = blobs.read_blob(key, 0, size + 1).await?;
    let mut d = Digester::new(key.digest.algorithm());
    let mut len = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| berth_storage::StorageError::io("scrub read", e))?;
        len += chunk.len() as u64;
        d.update(&chunk);
    }
    Ok((d.finish(), len))
}
