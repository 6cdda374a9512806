//! `berth migrate`: copies an embedded registry (a `berth serve` data directory: SQLite and its
//! blob store) into a scale-out one (PostgreSQL, and S3 or a filesystem the nodes share), in two
//! phases, blobs first:
//!
//! 1. Blobs. Every live blob row's bytes are streamed from the source, hashed on the way, and
//!    written under the same key (digest and generation) in the target through the path a push
//!    takes (a staged upload, then a commit). Bytes that are missing, short or do not hash to
//!    their digest are reported and never committed. On `--resume` an object already in the
//!    target with the blob's size is skipped: a commit is atomic (a rename on a filesystem, one
//!    PUT or a completed multipart upload on S3), so an object that is there is whole.
//! 2. Metadata. Every table, with the same ids, in one transaction of the target
//!    ([`MetaStore::migrate_metadata_into`]), once every blob is in place. So a target whose
//!    database holds the metadata holds every blob too, and a target whose database is empty is
//!    an unfinished migration (or nothing): the only two states `--resume` has to tell apart
//!    from a foreign registry.
//!
//! The source's `berth.lock` is held from start to end, as `berth serve` holds it: a migration
//! refuses a source that a server runs on, and no server can start on it meanwhile.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_core::config::{Config, StorageBackend};
use berth_core::{Digest, Digester};
use berth_meta::{MetaStore, Sweep};
use berth_storage::{BlobKey, BlobStore, StorageErrorKind, UploadId, WriteError};
use futures_util::{StreamExt, TryStreamExt};

pub const LONG_ABOUT: &str = "\
Copy an embedded registry into a scale-out one, with one command.

The source is a `berth serve` data directory (--from-data-dir, or the data_dir of
--from-config): its SQLite database and its blobs (on the filesystem, or in S3 when its
configuration says so). The target is --to-config, the TOML file the scale-out nodes use:
database.url (PostgreSQL, required) and storage (\"s3\", or \"filesystem\" under its data_dir).
BERTH_* environment variables apply to both files alike: leave them unset.

berth migrate holds the source's berth.lock from start to end: it refuses a source that a
berth serve runs on, and no server can start on the source meanwhile (do not run berth gc on it
either). It copies in two phases:

1. Blobs: every live blob is streamed from the source, hashed on the way and stored under the
   same key in the target. Bytes that are missing or do not match their digest are reported
   and never stored. A line on stderr shows objects, bytes, the rate and the time left.
2. Metadata: every table with the same ids (users and their password hashes, robots and their
   secrets, the token signing keys, so tokens issued before keep working; projects, members,
   repositories, manifests, tags, audit events, GC state, jobs and schedules) in one PostgreSQL
   transaction, once every blob is in place. Uploads in progress are dropped (clients push
   them again); the report says how many.

The target must be empty: a database without rows (a berth serve started on it creates its
admin, signing key and schedules) and a blob store without blobs. After an interruption
(Ctrl-C, kill, a lost connection) run the same command with --resume: blobs already in the
target are skipped, the others copied, then the metadata. --resume after a finished migration
checks the blobs and copies nothing. A target holding anything else is refused, --resume or not.

When the target's blob store is the source's own (the same data_dir, or the same bucket and
prefix), no bytes move: every blob is re-hashed where it is.

The report on stdout gives the rows copied per table, blobs and bytes copied and skipped, the
uploads dropped and every blob that could not be copied. The exit status is 0 only when
everything was copied; if a blob could not be copied the metadata is not copied either, unless
--allow-missing-blobs.";

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("source").required(true).multiple(true).args(["from_data_dir", "from_config"])
))]
pub struct MigrateArgs {
    /// The source registry's data directory (its SQLite database and blobs).
    #[arg(long, value_name = "DIR")]
    from_data_dir: Option<PathBuf>,
    /// The source's configuration file, as its `berth serve` used it (its data_dir, and its
    /// blob store if that is S3). --from-data-dir overrides its data_dir.
    #[arg(long, value_name = "FILE")]
    from_config: Option<PathBuf>,
    /// The target's configuration file: the one the scale-out nodes use (database.url,
    /// storage).
    #[arg(long, value_name = "FILE")]
    to_config: PathBuf,
    /// Continue a migration that was interrupted: blobs already in the target are skipped.
    #[arg(long)]
    resume: bool,
    /// Copy at most this many bytes a second (e.g. 50MiB), to spare a link or a disk.
    #[arg(long, value_name = "SIZE", value_parser = parse_rate)]
    max_rate: Option<u64>,
    /// Blobs copied at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Copy the metadata even when some blobs could not be copied (they are missing in the
    /// target as they were broken in the source; the exit status is still 1).
    #[arg(long)]
    allow_missing_blobs: bool,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = s.parse()?;
    if size.as_u64() == 0 {
        return Err("must be more than 0 bytes".into());
    }
    Ok(size.as_u64())
}

/// Where the blobs of the target live, relative to the source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobTarget {
    /// Another store: bytes are copied.
    Elsewhere,
    /// The source's own store: bytes are only re-hashed.
    InPlace,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let mut source = crate::settings::load(args.from_config.as_deref())?;
    if let Some(dir) = &args.from_data_dir {
        source.data_dir = dir.clone();
    }
    source.validate().map_err(anyhow::Error::msg)?;
    if source.database.is_postgres() {
        anyhow::bail!(
            "the source configuration has database.url set: berth migrate copies an embedded \
             registry (SQLite in its data directory) into PostgreSQL"
        );
    }
    let target = crate::settings::load(Some(&args.to_config))?;
    if !target.database.is_postgres() {
        anyhow::bail!(
            "the target configuration {} has no database.url: berth migrate copies into \
             PostgreSQL (database.url = \"postgres://...\")",
            args.to_config.display()
        );
    }
    init_logging();

    let db_path = source.data_dir.join("berth.db");
    if !db_path.is_file() {
        anyhow::bail!(
            "no registry to migrate in {}: it has no berth.db",
            source.data_dir.display()
        );
    }
    let _source_lock = crate::lock_data_dir(&source.data_dir).with_context(|| {
        format!(
            "berth migrate copies a registry no server runs on: stop the berth serve of {} \
             first (berth migrate holds its berth.lock while it copies, so no server starts on \
             the source meanwhile)",
            source.data_dir.display()
        )
    })?;
    let blob_target = if same_blob_store(&source, &target) {
        BlobTarget::InPlace
    } else {
        BlobTarget::Elsewhere
    };
    let _target_lock = if target.storage.backend == StorageBackend::Filesystem
        && blob_target == BlobTarget::Elsewhere
    {
        crate::prepare_data_dir(&target.data_dir)?;
        Some(
            crate::lock_data_dir(&target.data_dir)
                .context("the target's data directory is in use: stop its berth serve first")?,
        )
    } else {
        None
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(migrate(&args, &source, &target, blob_target))
}

/// Warnings and errors of the libraries only (RUST_LOG overrides): stderr is the progress line.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Whether the target's blob store is the source's own: the same directory, or the same
/// bucket and prefix at the same endpoint.
fn same_blob_store(source: &Config, target: &Config) -> bool {
    match (source.storage.backend, target.storage.backend) {
        (StorageBackend::Filesystem, StorageBackend::Filesystem) => {
            match (
                source.data_dir.canonicalize(),
                target.data_dir.canonicalize(),
            ) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
        }
        (StorageBackend::S3, StorageBackend::S3) => {
            let (a, b) = (&source.storage.s3, &target.storage.s3);
            a.endpoint.trim_end_matches('/') == b.endpoint.trim_end_matches('/')
                && a.bucket == b.bucket
                && a.prefix == b.prefix
        }
        _ => false,
    }
}

fn describe_blobs(config: &Config) -> String {
    match config.storage.backend {
        StorageBackend::Filesystem => format!("{}/blobs", config.data_dir.display()),
        StorageBackend::S3 => {
            let s3 = &config.storage.s3;
            format!("s3://{}/{}", s3.bucket, s3.prefix)
        }
    }
}

/// What the target holds before this run.
enum TargetMetadata {
    /// No row in any table a migration copies.
    Empty,
    /// Exactly the source's rows and signing keys: an earlier run finished.
    Migrated,
}

async fn migrate(
    args: &MigrateArgs,
    source_config: &Config,
    target_config: &Config,
    blob_target: BlobTarget,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (source, source_blobs) = crate::open_stores(source_config).await?;
    let (target, target_blobs) = crate::open_stores(target_config).await?;
    let target_blobs = match blob_target {
        BlobTarget::InPlace => source_blobs.clone(),
        BlobTarget::Elsewhere => target_blobs,
    };
    let target_url = berth_meta::redact_url(target_config.database.url.trim());

    let source_counts = source.table_row_counts().await?;
    let state = target_metadata(&source, &target, &source_counts, &target_url).await?;
    match state {
        TargetMetadata::Migrated if !args.resume => anyhow::bail!(
            "the target database {target_url} already holds this registry's metadata: an earlier \
             migration finished. Run with --resume to check its blobs; nothing is copied again"
        ),
        TargetMetadata::Empty if !args.resume && blob_target == BlobTarget::Elsewhere => {
            let blobs = target_blobs.list_blobs().await?;
            let uploads = target_blobs.list_uploads().await?;
            if !blobs.is_empty() || !uploads.is_empty() {
                anyhow::bail!(
                    "the target blob store {} is not empty: it holds {} blobs and {} staged \
                     uploads. If an earlier berth migrate into it was interrupted, run the same \
                     command with --resume; otherwise give the target an empty bucket, prefix or \
                     directory",
                    describe_blobs(target_config),
                    blobs.len(),
                    uploads.len()
                );
            }
        }
        // The target's database is empty, so whatever is staged in its blob store is what an
        // interrupted run left behind mid-blob (a registry would have rows): it goes.
        TargetMetadata::Empty if blob_target == BlobTarget::Elsewhere => {
            let uploads = target_blobs.list_uploads().await?;
            for upload in &uploads {
                target_blobs.delete_upload(&upload.key).await?;
            }
            if !uploads.is_empty() {
                eprintln!(
                    "berth migrate: removed {} staged uploads an interrupted run left in the target",
                    uploads.len()
                );
            }
        }
        _ => {}
    }

    let mut live = Vec::new();
    loop {
        let after = live
            .last()
            .map(|b: &Sweep| b.digest.clone())
            .unwrap_or_default();
        let page = source.live_blobs_page(&after, 1000).await?;
        if page.is_empty() {
            break;
        }
        live.extend(page);
    }
    eprintln!(
        "berth migrate: {} -> {}, blobs {} -> {}{}",
        source_config.data_dir.display(),
        target_url,
        describe_blobs(source_config),
        describe_blobs(target_config),
        match blob_target {
            BlobTarget::InPlace => " (the same store: blobs are re-hashed, not copied)",
            BlobTarget::Elsewhere => "",
        }
    );
    let options = CopyOptions {
        resume: args.resume,
        parallel: args.parallel as usize,
        max_rate: args.max_rate,
    };
    let target_store = match blob_target {
        BlobTarget::InPlace => None,
        BlobTarget::Elsewhere => Some(target_blobs.clone()),
    };
    let blobs = copy_blobs(source_blobs.clone(), target_store, live, &options).await?;

    let dropped_uploads = count_of(&source_counts, "uploads");
    let mut report = Report {
        source: source_config.data_dir.display().to_string(),
        target: format!("{target_url}, blobs in {}", describe_blobs(target_config)),
        blobs,
        dropped_uploads,
        tables: Vec::new(),
        metadata: MetadataOutcome::NotCopied,
        elapsed: Duration::ZERO,
    };
    if matches!(state, TargetMetadata::Migrated) {
        report.metadata = MetadataOutcome::AlreadyThere;
    } else if report.blobs.failed.is_empty() || args.allow_missing_blobs {
        eprintln!("berth migrate: copying the metadata in one transaction");
        let mut last_print = Instant::now();
        let tables = source
            .migrate_metadata_into(&target, &mut |table, rows| {
                if last_print.elapsed() >= Duration::from_secs(1) {
                    eprintln!("metadata: {table}: {rows} rows");
                    last_print = Instant::now();
                }
            })
            .await
            .context("copying the metadata (nothing of it was stored; run again with --resume)")?;
        report.tables = tables
            .into_iter()
            .map(|(t, n)| {
                let in_source = count_of(&source_counts, &t);
                (t, in_source, n)
            })
            .collect();
        report.metadata = MetadataOutcome::Copied;
    }
    report.elapsed = started.elapsed();
    source.close().await;
    target.close().await;
    print!("{}", report.render());
    std::io::stdout().flush().ok();
    match (&report.metadata, report.blobs.failed.len()) {
        (MetadataOutcome::NotCopied, n) => anyhow::bail!(
            "{n} blobs could not be copied, so the metadata was not copied: the target is not a \
             registry yet. `berth scrub` on the source names broken blobs; delete the images \
             that use them (or accept their loss with --allow-missing-blobs), then run again \
             with --resume"
        ),
        (_, 0) => Ok(()),
        (_, n) => anyhow::bail!(
            "{n} blobs could not be copied (listed above); the metadata was copied, so the target \
             lacks those blobs as the source did"
        ),
    }
}

fn count_of(counts: &[(String, u64)], table: &str) -> u64 {
    counts
        .iter()
        .find(|(t, _)| t == table)
        .map(|(_, n)| *n)
        .unwrap_or(0)
}

/// Whether the target's database is empty or holds this source's finished migration; anything
/// else is refused, with what was found.
async fn target_metadata(
    source: &MetaStore,
    target: &MetaStore,
    source_counts: &[(String, u64)],
    target_url: &str,
) -> anyhow::Result<TargetMetadata> {
    let target_counts = target.table_row_counts().await?;
    let held: Vec<&(String, u64)> = target_counts
        .iter()
        .filter(|(t, n)| *n > 0 && MetaStore::not_migrated(t).is_none())
        .collect();
    if held.is_empty() {
        return Ok(TargetMetadata::Empty);
    }
    let changed: Vec<String> = target_counts
        .iter()
        .filter(|(t, n)| MetaStore::not_migrated(t).is_none() && count_of(source_counts, t) != *n)
        .map(|(t, n)| {
            format!(
                "{t}: {} in the source, {n} in the target",
                count_of(source_counts, t)
            )
        })
        .collect();
    if source.token_keys().await? == target.token_keys().await? {
        if changed.is_empty() {
            return Ok(TargetMetadata::Migrated);
        }
        anyhow::bail!(
            "the target database {target_url} holds this registry's migrated metadata and has \
             changed since ({}): a server uses it, so berth migrate leaves it alone. To migrate \
             again, drop and create the database and empty the blob store",
            changed.join(", ")
        );
    }
    let found: Vec<String> = held.iter().map(|(t, n)| format!("{t}: {n}")).collect();
    anyhow::bail!(
        "the target database {target_url} is not empty and does not hold this registry's \
         migrated metadata: it has rows in {}. berth migrate copies into an empty database \
         (a berth serve started on it creates its admin, signing key and schedules: drop the \
         database and create it again), --resume or not",
        found.join(", ")
    )
}

// ---- phase 1: blobs ----

struct CopyOptions {
    resume: bool,
    parallel: usize,
    max_rate: Option<u64>,
}

/// What phase 1 did.
#[derive(Debug, Default)]
struct BlobReport {
    live: u64,
    live_bytes: u64,
    copied: u64,
    copied_bytes: u64,
    /// Already in the target (`--resume`), or re-hashed in place.
    present: u64,
    present_bytes: u64,
    in_place: bool,
    /// (digest, generation, why)
    failed: Vec<(String, String, String)>,
}

/// What became of one blob.
enum BlobOutcome {
    Copied,
    Present,
    /// The source's bytes are missing, short or do not match the digest: never stored.
    Bad(String),
}

/// Copies every blob of `live` from `source` into `target` (None: the target is the source
/// itself, so the bytes are only re-hashed), `options.parallel` at once. Failures of the
/// source are reported per blob; a failure of the target (unreachable, full) ends the run.
async fn copy_blobs(
    source: Arc<dyn BlobStore>,
    target: Option<Arc<dyn BlobStore>>,
    live: Vec<Sweep>,
    options: &CopyOptions,
) -> anyhow::Result<BlobReport> {
    let mut report = BlobReport {
        live: live.len() as u64,
        live_bytes: live.iter().map(|b| b.size).sum(),
        in_place: target.is_none(),
        ..Default::default()
    };
    let progress = Arc::new(Progress::new(report.live, report.live_bytes));
    let limit = options.max_rate.map(|rate| Arc::new(RateLimit::new(rate)));
    let ticker = progress.clone().spawn_ticker();
    let mut outcomes = std::pin::pin!(
        futures_util::stream::iter(live)
            .map(|blob| {
                let (source, target) = (source.clone(), target.clone());
                let (progress, limit) = (progress.clone(), limit.clone());
                let resume = options.resume;
                async move {
                    let outcome =
                        copy_blob(&*source, target.as_deref(), &blob, resume, &progress, limit)
                            .await
                            .with_context(|| {
                                format!(
                                    "writing blob {} to the target (run again with --resume)",
                                    blob.digest
                                )
                            });
                    progress.finished_one();
                    outcome.map(|o| (blob, o))
                }
            })
            .buffer_unordered(options.parallel.max(1))
    );
    let result = async {
        while let Some((blob, outcome)) = outcomes.try_next().await? {
            match outcome {
                BlobOutcome::Copied => {
                    report.copied += 1;
                    report.copied_bytes += blob.size;
                }
                BlobOutcome::Present => {
                    report.present += 1;
                    report.present_bytes += blob.size;
                }
                BlobOutcome::Bad(why) => {
                    progress.say(&format!("blob {} not copied: {why}", blob.digest));
                    report.failed.push((blob.digest, blob.generation, why));
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    ticker.stop().await;
    result?;
    report.failed.sort();
    Ok(report)
}

async fn copy_blob(
    source: &dyn BlobStore,
    target: Option<&dyn BlobStore>,
    blob: &Sweep,
    resume: bool,
    progress: &Arc<Progress>,
    limit: Option<Arc<RateLimit>>,
) -> anyhow::Result<BlobOutcome> {
    let digest = match Digest::parse(&blob.digest) {
        Ok(d) => d,
        Err(e) => {
            return Ok(BlobOutcome::Bad(format!(
                "its row's digest is invalid: {e}"
            )));
        }
    };
    let Some(key) = BlobKey::new(digest.clone(), &blob.generation) else {
        return Ok(BlobOutcome::Bad(format!(
            "its row's generation {:?} is not a UUID",
            blob.generation
        )));
    };
    if let Some(target) = target
        && resume
    {
        match target.blob_size(&key).await {
            Ok(n) if n == blob.size => {
                progress.skipped(blob.size);
                return Ok(BlobOutcome::Present);
            }
            // Commits are atomic, so a blob of another size is not a piece of this one: it is
            // replaced.
            Ok(_) => {}
            Err(e) if e.kind == StorageErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    let stream = match source.read_blob(&key, 0, blob.size).await {
        Ok(s) => s,
        Err(e) if e.kind == StorageErrorKind::NotFound => {
            return Ok(BlobOutcome::Bad(
                "its bytes are missing in the source".into(),
            ));
        }
        Err(e) => return Ok(BlobOutcome::Bad(format!("the source cannot read it: {e}"))),
    };
    let counter = progress.clone();
    let stream = stream.then(move |chunk| {
        let (counter, limit) = (counter.clone(), limit.clone());
        async move {
            if let Ok(bytes) = &chunk {
                if let Some(limit) = &limit {
                    limit.take(bytes.len() as u64).await;
                }
                counter.streamed(bytes.len() as u64);
            }
            chunk
        }
    });
    let mut digester = Digester::new(digest.algorithm());
    let Some(target) = target else {
        // The target is the source: hash only.
        let mut stream = std::pin::pin!(stream);
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    digester.update(&bytes);
                    n += bytes.len() as u64;
                }
                Err(e) => return Ok(BlobOutcome::Bad(format!("reading it failed: {e}"))),
            }
        }
        return Ok(match verdict(n, digester.finish(), blob.size, &digest) {
            Some(why) => BlobOutcome::Bad(why),
            None => BlobOutcome::Present,
        });
    };
    let id = UploadId::new();
    target.create_upload(&id).await?;
    let written = match target
        .write_whole_upload(&id, Box::pin(stream), &mut digester, Some(blob.size))
        .await
    {
        Ok(n) => n,
        Err(WriteError::Storage(e)) => {
            let _ = target.delete_upload(&id).await;
            return Err(e.into());
        }
        Err(e) => {
            let _ = target.delete_upload(&id).await;
            return Ok(BlobOutcome::Bad(format!(
                "reading it from the source failed: {e}"
            )));
        }
    };
    if let Some(why) = verdict(written, digester.finish(), blob.size, &digest) {
        target.delete_upload(&id).await?;
        return Ok(BlobOutcome::Bad(why));
    }
    target.commit_upload(&id, written, &key).await?;
    Ok(BlobOutcome::Copied)
}

/// Why bytes read are not the blob, or None when they are.
fn verdict(len: u64, got: Digest, size: u64, digest: &Digest) -> Option<String> {
    if len != size {
        Some(format!(
            "the source holds {len} bytes of it, its row says {size}"
        ))
    } else if &got != digest {
        Some(format!(
            "the source's bytes hash to {got}: they are corrupt"
        ))
    } else {
        None
    }
}

/// A shared budget of bytes a second for all the blobs being copied.
struct RateLimit {
    bytes_per_sec: u64,
    start: tokio::time::Instant,
    granted: AtomicU64,
}

impl RateLimit {
    fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec,
            start: tokio::time::Instant::now(),
            granted: AtomicU64::new(0),
        }
    }

    /// Waits until `n` more bytes fit in the budget.
    async fn take(&self, n: u64) {
        let total = self.granted.fetch_add(n, Ordering::Relaxed) + n;
        let due = Duration::from_secs_f64(total as f64 / self.bytes_per_sec as f64);
        tokio::time::sleep_until(self.start + due).await;
    }
}

// ---- progress on stderr ----

/// Counts of phase 1, printed as one line on stderr: redrawn four times a second on a
/// terminal, a new line every second otherwise (a log, a test reading it).
struct Progress {
    total: u64,
    total_bytes: u64,
    done: AtomicU64,
    /// Bytes read from the source (the rate).
    streamed: AtomicU64,
    /// Bytes of blobs skipped (already in the target).
    skipped: AtomicU64,
    started: Instant,
    tty: bool,
    /// Whether the last thing printed was a redrawn line without its newline.
    open_line: std::sync::Mutex<bool>,
}

struct Ticker {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl Progress {
    fn new(total: u64, total_bytes: u64) -> Progress {
        Progress {
            total,
            total_bytes,
            done: AtomicU64::new(0),
            streamed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            open_line: std::sync::Mutex::new(false),
        }
    }

    fn streamed(&self, n: u64) {
        self.streamed.fetch_add(n, Ordering::Relaxed);
    }

    fn skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }

    fn finished_one(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let streamed = self.streamed.load(Ordering::Relaxed);
        let bytes = (streamed + self.skipped.load(Ordering::Relaxed)).min(self.total_bytes);
        let rate = streamed as f64 / elapsed;
        let left = self.total_bytes.saturating_sub(bytes);
        let eta = if left == 0 {
            "0s left".to_owned()
        } else if rate < 1.0 {
            "time left unknown".to_owned()
        } else {
            let secs = (left as f64 / rate).ceil() as u64;
            format!(
                "about {} left",
                humantime::format_duration(Duration::from_secs(secs))
            )
        };
        let percent = if self.total_bytes == 0 {
            100.0
        } else {
            bytes as f64 * 100.0 / self.total_bytes as f64
        };
        format!(
            "blobs: {}/{} objects, {} of {} ({percent:.0}%), {}/s, {eta}",
            self.done.load(Ordering::Relaxed),
            self.total,
            human(bytes),
            human(self.total_bytes),
            human(rate as u64),
        )
    }

    fn print(&self, final_line: bool) {
        let mut open = self.open_line.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{}", self.line());
            *open = !final_line;
            if final_line {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{}", self.line());
        }
    }

    /// A message of its own line, above the progress line.
    fn say(&self, message: &str) {
        let mut open = self.open_line.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        if *open {
            let _ = write!(err, "\r\x1b[K");
            *open = false;
        }
        let _ = writeln!(err, "{message}");
    }

    fn spawn_ticker(self: Arc<Self>) -> Ticker {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => self.print(false),
                    _ = &mut stopped => break,
                }
            }
            self.print(true);
        });
        Ticker { stop, task }
    }
}

fn human(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

// ---- the report ----

enum MetadataOutcome {
    Copied,
    AlreadyThere,
    NotCopied,
}

struct Report {
    source: String,
    target: String,
    blobs: BlobReport,
    dropped_uploads: u64,
    /// (table, rows in the source, rows copied)
    tables: Vec<(String, u64, u64)>,
    metadata: MetadataOutcome,
    elapsed: Duration,
}

impl Report {
    fn render(&self) -> String {
        use std::fmt::Write;
        let b = &self.blobs;
        let mut out = String::new();
        let _ = writeln!(out, "berth migrate report");
        let _ = writeln!(out, "  source:  {}", self.source);
        let _ = writeln!(out, "  target:  {}", self.target);
        let _ = writeln!(
            out,
            "  blobs:   {} live ({}): {} copied ({}), {} {} ({}), {} failed",
            b.live,
            human(b.live_bytes),
            b.copied,
            human(b.copied_bytes),
            b.present,
            if b.in_place {
                "verified in place"
            } else {
                "already in the target"
            },
            human(b.present_bytes),
            b.failed.len()
        );
        for (digest, generation, why) in &b.failed {
            let _ = writeln!(out, "    failed: {digest} (generation {generation}): {why}");
        }
        let _ = writeln!(
            out,
            "  uploads in progress dropped: {} (their clients push them again)",
            self.dropped_uploads
        );
        match self.metadata {
            MetadataOutcome::Copied => {
                let _ = writeln!(out, "  metadata: copied in one transaction");
                let _ = writeln!(out, "    {:<24} {:>12} {:>12}", "table", "source", "copied");
                for (table, source, copied) in &self.tables {
                    let _ = writeln!(out, "    {table:<24} {source:>12} {copied:>12}");
                }
            }
            MetadataOutcome::AlreadyThere => {
                let _ = writeln!(
                    out,
                    "  metadata: already copied by an earlier run (the same rows and signing \
                     keys); nothing copied"
                );
            }
            MetadataOutcome::NotCopied => {
                let _ = writeln!(
                    out,
                    "  metadata: NOT copied, because blobs could not be copied"
                );
            }
        }
        let skipped: Vec<String> = MetaStore::tables_not_migrated()
            .iter()
            .map(|(t, why)| format!("{t} ({why})"))
            .collect();
        let _ = writeln!(out, "  not copied: {}", skipped.join("; "));
        let complete = matches!(
            self.metadata,
            MetadataOutcome::Copied | MetadataOutcome::AlreadyThere
        ) && b.failed.is_empty();
        let _ = writeln!(
            out,
            "  result:  {} in {}",
            if complete { "complete" } else { "INCOMPLETE" },
            humantime::format_duration(Duration::from_millis(self.elapsed.as_millis() as u64))
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_storage::FsBlobStore;
    use std::path::Path;

    async fn put(store: &FsBlobStore, data: &[u8]) -> Sweep {
        let id = UploadId::new();
        let digest = Digest::sha256_of(data);
        store.create_upload(&id).await.unwrap();
        let body: berth_storage::ByteStream = Box::pin(futures_util::stream::once({
            let data = bytes::Bytes::copy_from_slice(data);
            async move { Ok(data) }
        }));
        let mut digester = Digester::new(digest.algorithm());
        store
            .append_upload(&id, 0, body, &mut digester, None)
            .await
            .unwrap();
        let key = BlobKey::from_upload(digest.clone(), &id);
        store
            .commit_upload(&id, data.len() as u64, &key)
            .await
            .unwrap();
        Sweep {
            digest: digest.to_string(),
            generation: id.to_string(),
            size: data.len() as u64,
        }
    }

    fn key(b: &Sweep) -> BlobKey {
        BlobKey::new(Digest::parse(&b.digest).unwrap(), &b.generation).unwrap()
    }

    fn blob_path(root: &Path, b: &Sweep) -> PathBuf {
        let (alg, hex) = b.digest.split_once(':').unwrap();
        root.join("blobs")
            .join(alg)
            .join(&hex[..2])
            .join(hex)
            .join(&b.generation)
    }

    /// Blobs are verified as they are copied: a corrupt, a short and a missing one are reported
    /// and never stored; a rerun with resume skips what is there and copies the rest.
    #[tokio::test]
    async fn blobs_are_verified_as_they_are_copied_and_a_rerun_skips_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let (src_root, dst_root) = (dir.path().join("src"), dir.path().join("dst"));
        let source = FsBlobStore::open(&src_root).unwrap();
        let mut live = Vec::new();
        for i in 0..6u8 {
            live.push(put(&source, &vec![i; 700 * 1024 + i as usize]).await);
        }
        let (good, corrupt, short, missing) = (&live[..3], &live[3], &live[4], &live[5]);
        let mut bytes = std::fs::read(blob_path(&src_root, corrupt)).unwrap();
        bytes[1000] ^= 1;
        std::fs::write(blob_path(&src_root, corrupt), bytes).unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(blob_path(&src_root, short))
            .unwrap();
        file.set_len(short.size - 10).unwrap();
        std::fs::remove_file(blob_path(&src_root, missing)).unwrap();

        let source: Arc<dyn BlobStore> = Arc::new(source);
        let target = Arc::new(FsBlobStore::open(&dst_root).unwrap());
        let options = CopyOptions {
            resume: false,
            parallel: 3,
            max_rate: None,
        };
        let report = copy_blobs(source.clone(), Some(target.clone()), live.clone(), &options)
            .await
            .unwrap();
        assert_eq!(report.copied, 3);
        assert_eq!(
            report.copied_bytes,
            good.iter().map(|b| b.size).sum::<u64>()
        );
        let failed: Vec<&str> = report.failed.iter().map(|f| f.0.as_str()).collect();
        let mut expected = vec![
            corrupt.digest.as_str(),
            short.digest.as_str(),
            missing.digest.as_str(),
        ];
        expected.sort();
        assert_eq!(failed, expected);
        let why = |b: &Sweep| {
            report
                .failed
                .iter()
                .find(|f| f.0 == b.digest)
                .unwrap()
                .2
                .clone()
        };
        assert!(why(corrupt).contains("corrupt"), "{}", why(corrupt));
        assert!(why(short).contains("bytes of it"), "{}", why(short));
        assert!(why(missing).contains("missing"), "{}", why(missing));
        for b in good {
            assert_eq!(target.blob_size(&key(b)).await.unwrap(), b.size);
        }
        for b in [corrupt, short, missing] {
            let err = target.blob_size(&key(b)).await.unwrap_err();
            assert_eq!(
                err.kind,
                StorageErrorKind::NotFound,
                "{} was stored",
                b.digest
            );
        }
        assert!(
            target.list_uploads().await.unwrap().is_empty(),
            "a refused blob left its staging behind"
        );

        // A rerun that resumes: the copied blobs are skipped; a blob mended in the source since
        // is copied.
        std::fs::remove_file(blob_path(&src_root, corrupt)).unwrap();
        let mended = Sweep {
            digest: corrupt.digest.clone(),
            generation: corrupt.generation.clone(),
            size: corrupt.size,
        };
        let fresh = FsBlobStore::open(&src_root).unwrap();
        let id = UploadId::parse(&mended.generation).unwrap();
        fresh.create_upload(&id).await.unwrap();
        let data = bytes::Bytes::from(vec![3u8; corrupt.size as usize]);
        let body: berth_storage::ByteStream =
            Box::pin(futures_util::stream::once(async move { Ok(data) }));
        let mut digester = Digester::new(berth_core::Algorithm::Sha256);
        fresh
            .append_upload(&id, 0, body, &mut digester, None)
            .await
            .unwrap();
        fresh
            .commit_upload(&id, corrupt.size, &key(&mended))
            .await
            .unwrap();
        let options = CopyOptions {
            resume: true,
            parallel: 2,
            max_rate: None,
        };
        let again = copy_blobs(source, Some(target.clone()), live.clone(), &options)
            .await
            .unwrap();
        assert_eq!((again.present, again.copied), (3, 1));
        assert_eq!(again.failed.len(), 2);
        assert_eq!(target.blob_size(&key(&mended)).await.unwrap(), corrupt.size);
    }

    /// With the target's store the source's own, nothing is written: each blob is re-hashed.
    #[tokio::test]
    async fn in_place_blobs_are_rehashed_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let good = put(&store, b"good bytes").await;
        let bad = put(&store, b"bad bytes!").await;
        std::fs::write(blob_path(dir.path(), &bad), b"BAD bytes!").unwrap();
        let options = CopyOptions {
            resume: false,
            parallel: 2,
            max_rate: None,
        };
        let report = copy_blobs(Arc::new(store), None, vec![good, bad.clone()], &options)
            .await
            .unwrap();
        assert_eq!((report.present, report.copied), (1, 0));
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, bad.digest);
    }

    #[tokio::test]
    async fn the_rate_limit_holds_the_copy_back() {
        let limit = RateLimit::new(4 << 20);
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            limit.take(512 << 10).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(480), "{took:?}");
    }
}
