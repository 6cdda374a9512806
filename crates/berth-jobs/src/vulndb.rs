//! Importing vulnerability data: `berth vulndb import`, `berth vulndb sync` and the
//! `vulndb.schedule` job all come here.
//!
//! Sources (files, directories, URLs) are downloaded first, each to a temporary file, and
//! checked complete (status, announced length, `vulndb.max_download_size`); a failed download
//! imports nothing. Then the files are read on a blocking thread (berth-scan's readers) and
//! the entries stream into the store: a record whose content is unchanged is not written
//! again, a changed one replaces its row, and keys of an imported feed that the import no
//! longer has are withdrawn (unless `merge`). Everything is written as the next version and
//! published at the end in one transaction; any error before that leaves the published
//! version as it was.

use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_core::config::VulnDbConfig;
use berth_meta::{VulnImportInfo, VulnRecordWrite, VulnStore, VulnVersion};
use berth_scan::vulndb::Entry;
use berth_scan::vulndb::source::{self, Limits, ReadReport};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The embedded mode's vulnerability database, in the data directory (PostgreSQL keeps it in
/// the registry's database).
pub const SQLITE_FILE: &str = "vulndb.db";

/// Records written per transaction.
const BATCH: usize = 500;
/// The import lease, renewed at every batch.
const LEASE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Source(String),
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("another import is running (it holds the import lease); try again when it ends")]
    Busy,
    #[error(transparent)]
    Meta(#[from] berth_meta::MetaError),
}

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Add and change records only: withdraw nothing the import does not have.
    pub merge: bool,
    pub max_record_bytes: u64,
    pub max_download_bytes: u64,
    pub download_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Who imports (for the lease): a node or a command.
    pub holder: String,
}

impl ImportOptions {
    pub fn from_config(c: &VulnDbConfig, holder: &str) -> ImportOptions {
        ImportOptions {
            merge: false,
            max_record_bytes: c.max_record_size.as_u64(),
            max_download_bytes: c.max_download_size.as_u64(),
            download_timeout: c.download_timeout.0,
            ca_file: c.ca_file.clone(),
            holder: holder.to_owned(),
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// The version now published (unchanged when nothing changed).
    pub version: i64,
    /// Whether this import published a new version.
    pub published: bool,
    pub added: i64,
    pub changed: i64,
    pub unchanged: i64,
    pub withdrawn: i64,
    /// Entries that came twice (the first one counts).
    pub duplicates: i64,
    /// The feeds the import replaced.
    pub feeds: Vec<String>,
    /// The ecosystems whose records changed.
    pub ecosystems: Vec<String>,
    /// Distinct (ecosystem, package) pairs whose records changed.
    pub packages_changed: i64,
    /// OSV records marked withdrawn in the sources (left out).
    pub withdrawn_in_source: u64,
    /// Records naming no package that can be matched (only GIT ranges).
    pub without_packages: u64,
    /// Records that did not parse, and the first reasons.
    pub rejected: u64,
    pub rejections: Vec<String>,
    /// How long the import took, in milliseconds.
    pub duration_ms: u64,
}

/// Imports `sources` (paths or URLs) into `store`.
pub async fn import(
    store: &VulnStore,
    sources: &[String],
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    if sources.is_empty() {
        return Err(ImportError::Source(
            "nothing to import: name files, directories or URLs (or set vulndb.sources)".into(),
        ));
    }
    // Downloads first: nothing is touched until every source is here, whole.
    let tmp = tempfile::tempdir().map_err(|e| ImportError::Source(format!("temp dir: {e}")))?;
    let mut files = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let s = s.trim();
        if s.starts_with("http://") || s.starts_with("https://") {
            let path = tmp.path().join(format!("download-{i}"));
            download(s, &path, opts).await?;
            files.push((s.to_owned(), path));
        } else {
            let path = PathBuf::from(s);
            if !path.exists() {
                return Err(ImportError::Source(format!(
                    "{s}: no such file or directory"
                )));
            }
            files.push((s.to_owned(), path));
        }
    }
    let sha256 = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || digest_of(&files))
            .await
            .map_err(|e| ImportError::Source(format!("hashing the sources: {e}")))??
    };
    let Some(lease) = store.begin_import(&opts.holder, LEASE).await? else {
        return Err(ImportError::Busy);
    };
    let version = lease.version;
    match write_all(store, &lease, files.clone(), opts).await {
        Ok(mut report) => {
            if report.added + report.changed + report.withdrawn == 0 {
                store.unchanged(lease).await?;
                report.version = version - 1;
            } else {
                let info = VulnImportInfo {
                    source: files
                        .iter()
                        .map(|(s, _)| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    sha256,
                    feeds: report.feeds.clone(),
                    added: report.added,
                    changed: report.changed,
                    withdrawn: report.withdrawn,
                };
                let published: VulnVersion = store.publish(lease, &info).await?;
                report.version = published.version;
                report.published = true;
                report.packages_changed = published.packages;
                let changes = store.changes(published.version).await?;
                report.ecosystems = changes
                    .into_iter()
                    .map(|(e, _)| e)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
            }
            report.duration_ms = started.elapsed().as_millis() as u64;
            Ok(report)
        }
        Err(e) => {
            if let Err(abandon) = store.abandon(lease).await {
                tracing::warn!(error = %abandon, "giving the import lease up failed");
            }
            Err(e)
        }
    }
}

/// SHA-256 of the source files in order (directories count as their path only).
fn digest_of(files: &[(String, PathBuf)]) -> Result<String, ImportError> {
    let mut all = Sha256::new();
    for (shown, path) in files {
        if path.is_dir() {
            all.update(shown.as_bytes());
            continue;
        }
        let mut f =
            std::fs::File::open(path).map_err(|e| ImportError::Source(format!("{shown}: {e}")))?;
        let mut one = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)
                .map_err(|e| ImportError::Source(format!("{shown}: {e}")))?;
            if n == 0 {
                break;
            }
            one.update(&buf[..n]);
        }
        all.update(one.finalize());
    }
    Ok(hex::encode(all.finalize()))
}

async fn download(url: &str, to: &Path, opts: &ImportOptions) -> Result<(), ImportError> {
    use tokio::io::AsyncWriteExt;
    let fail = |reason: String| ImportError::Download {
        url: url.to_owned(),
        reason,
    };
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(opts.download_timeout)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION"), " (vulndb)"));
    if let Some(path) = &opts.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?
        {
            b = b.add_root_certificate(c);
        }
    }
    let client = b.build().map_err(|e| fail(format!("HTTP client: {e}")))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(with_sources(&e)))?;
    if !response.status().is_success() {
        return Err(fail(format!("the server answered {}", response.status())));
    }
    let announced = response.content_length();
    if let Some(n) = announced
        && n > opts.max_download_bytes
    {
        return Err(fail(format!(
            "{n} bytes, over vulndb.max_download_size ({})",
            opts.max_download_bytes
        )));
    }
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| fail(format!("{}: {e}", to.display())))?;
    let mut got: u64 = 0;
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(with_sources(&e)))? {
        got += chunk.len() as u64;
        if got > opts.max_download_bytes {
            return Err(fail(format!(
                "more than vulndb.max_download_size ({} bytes)",
                opts.max_download_bytes
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| fail(format!("{}: {e}", to.display())))?;
    }
    file.flush().await.map_err(|e| fail(e.to_string()))?;
    if let Some(n) = announced
        && n != got
    {
        return Err(fail(format!("the download ended at {got} of {n} bytes")));
    }
    Ok(())
}

/// An error with its causes (reqwest's own message says little: "error decoding response
/// body").
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Reads every source on a blocking thread and writes what changed.
async fn write_all(
    store: &VulnStore,
    lease: &berth_meta::VulnLease,
    files: Vec<(String, PathBuf)>,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let limits = Limits {
        max_record_bytes: opts.max_record_bytes,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(1024);
    let reader = tokio::task::spawn_blocking(move || -> Result<ReadReport, String> {
        let mut total = ReadReport::default();
        for (_, path) in &files {
            let r = source::read_path(path, limits, &mut |entry| {
                tx.blocking_send(entry)
                    .map_err(|_| "the import stopped".to_owned())
            })?;
            total.entries += r.entries;
            total.withdrawn += r.withdrawn;
            total.without_packages += r.without_packages;
            total.rejected += r.rejected;
            for reason in r.rejections {
                if total.rejections.len() < 20 {
                    total.rejections.push(reason);
                }
            }
        }
        Ok(total)
    });
    let mut report = ImportReport::default();
    // Per feed, the current records' hashes not yet seen in this import.
    let mut live: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut written: HashSet<(String, String)> = HashSet::new();
    let mut batch: Vec<VulnRecordWrite> = Vec::with_capacity(BATCH);
    let mut feeds = BTreeSet::new();
    while let Some(entry) = rx.recv().await {
        let mut advisory = entry.advisory;
        let info = advisory.take_info();
        let unwritable = |e: serde_json::Error| ImportError::Source(format!("{}: {e}", entry.key));
        let body = serde_json::to_string(&advisory).map_err(unwritable)?;
        let info = serde_json::to_string(&info).map_err(unwritable)?;
        // 128 bits of SHA-256 tell a changed record from an unchanged one.
        let mut digest = Sha256::new();
        digest.update(body.as_bytes());
        digest.update(b"\n");
        digest.update(info.as_bytes());
        let hash = hex::encode(&digest.finalize()[..16]);
        let id = (entry.feed.clone(), entry.key.clone());
        if written.contains(&id) {
            report.duplicates += 1;
            continue;
        }
        let feed_live = match live.entry(entry.feed.clone()) {
            Slot::Occupied(o) => o.into_mut(),
            Slot::Vacant(v) => {
                feeds.insert(entry.feed.clone());
                v.insert(store.live_hashes(&entry.feed).await?)
            }
        };
        let replaces = match feed_live.remove(&entry.key) {
            Some(old) if old == hash => {
                report.unchanged += 1;
                // Seen: a later duplicate is a duplicate, not an addition.
                written.insert(id);
                continue;
            }
            Some(_) => {
                report.changed += 1;
                true
            }
            None => {
                report.added += 1;
                false
            }
        };
        written.insert(id);
        let packages = advisory
            .affected
            .iter()
            .map(|a| (a.ecosystem.clone(), a.name.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        batch.push(VulnRecordWrite {
            feed: entry.feed,
            key: entry.key,
            hash,
            body,
            info,
            packages,
            replaces,
        });
        if batch.len() >= BATCH {
            store.write_records(lease, &batch).await?;
            store.renew(lease, LEASE).await?;
            batch.clear();
        }
    }
    let read = reader
        .await
        .map_err(|e| ImportError::Source(format!("the reader stopped: {e}")))?
        .map_err(ImportError::Source)?;
    if !batch.is_empty() {
        store.write_records(lease, &batch).await?;
    }
    if !opts.merge {
        for (feed, gone) in &live {
            let keys: Vec<String> = gone.keys().cloned().collect();
            for chunk in keys.chunks(BATCH) {
                store.withdraw(lease, feed, chunk).await?;
                store.renew(lease, LEASE).await?;
            }
            report.withdrawn += keys.len() as i64;
        }
    }
    report.feeds = feeds.into_iter().collect();
    report.withdrawn_in_source = read.withdrawn;
    report.without_packages = read.without_packages;
    report.rejected = read.rejected;
    report.rejections = read.rejections;
    Ok(report)
}
