//! The `berth` command: run the registry, check a configuration.

mod client;
mod migrate;
mod settings;
mod vulndb;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use berth_core::config::{Config, LogFormat, StorageBackend};
use berth_jobs::{GcOptions, JobRequest, ScrubOptions};
use berth_meta::{MetaStore, PgOptions};
use berth_server::{AdminBootstrap, Registry};
use berth_storage::{BlobStore, FsBlobStore, S3BlobStore, S3Config};
use clap::{Parser, Subcommand};

/// Berth: a self-hosted OCI container registry in one binary.
///
/// `berth serve` alone runs the embedded mode: the OCI Distribution API on 0.0.0.0:5000,
/// blobs on the filesystem and metadata in SQLite under ./berth-data. Every setting can come
/// from a TOML file (--config) and from BERTH_* environment variables
/// (BERTH_SERVER__LISTEN=127.0.0.1:5000, BERTH_LIMITS__MANIFEST_MAX_SIZE=8MiB, ...).
#[derive(Parser)]
#[command(name = "berth", version, about, long_about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve(ServeArgs),
    /// Collect garbage now: review what deletes released, remove unreferenced blobs and
    /// untagged manifests past their grace, purge idle uploads, and print the report. Safe to
    /// run while `berth serve` runs on the same data directory.
    Gc(GcArgs),
    /// Re-hash every stored blob, report corrupted and missing ones, and remove bytes the
    /// database does not know once they are older than the grace period.
    Scrub(MaintenanceArgs),
    /// Copy an embedded registry (SQLite and its blobs) into a scale-out one (PostgreSQL, and
    /// S3 or a shared filesystem): every table with the same ids, every live blob verified by
    /// its digest.
    #[command(long_about = migrate::LONG_ABOUT)]
    Migrate(migrate::MigrateArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The vulnerability database: import, sync, status.
    #[command(subcommand)]
    Vulndb(vulndb::VulndbCommand),
    #[command(flatten)]
    Admin(client::AdminCommand),
}

#[derive(clap::Args)]
struct MaintenanceArgs {
    /// TOML configuration file, as for `berth serve`.
    #[arg(long, short, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory, as for `berth serve`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides gc.grace_period for this run, e.g. 1h or 0s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    grace_period: Option<std::time::Duration>,
}

#[derive(clap::Args)]
struct GcArgs {
    #[command(flatten)]
    common: MaintenanceArgs,
    /// Report what a run would remove, and how many bytes, without removing anything.
    #[arg(long)]
    dry_run: bool,
    /// Review every blob and manifest, not only what deletes queued (an occasional audit).
    #[arg(long)]
    full: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file. Environment variables override it; flags override both.
    #[arg(long, short, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (server.listen), e.g. 127.0.0.1:5000.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory for blobs, uploads and the SQLite database (data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Serve an open registry: anyone may push, pull and delete, and the admin API is open
    /// (auth.enabled = false). For local experiments only.
    #[arg(long)]
    no_auth: bool,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print the effective configuration (file, then
    /// environment, then defaults), with secrets masked.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
}

/// Two glibc allocator settings, both for memory held, neither costs throughput here
/// (docs/benchmarks.md):
/// - Big I/O buffers (blob reads and writes move in pieces of 512 KiB) always get their own
///   mapping and give it back when freed. glibc's default raises its mmap threshold to the size
///   of the largest block freed so far, after which every such buffer comes from the heap of
///   the thread that allocated it and stays there; under a mixed push and pull load that
///   doubled the peak RSS (101 against 51 MiB) for no gain in throughput.
/// - One heap (arena) per core instead of glibc's eight per core. Blocking threads (file I/O)
///   come and go by the dozen; each took a heap of its own, and the free memory left spread
///   over them after a burst of small requests held a few MiB more at the peak.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets allocator parameters; it is called before any thread
        // starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Every few seconds, gives memory the allocator holds but no longer uses back to the system
/// (`malloc_trim`), so that a burst of requests (thousands of small allocations spread over the
/// threads' heaps) does not leave its peak behind as the process's size. It takes well under a
/// millisecond on a heap of this size.
fn spawn_heap_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            // SAFETY: malloc_trim is thread-safe and only returns free memory.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    });
}

fn main() -> ExitCode {
    tune_malloc();
    // Everything Berth creates (the database, blobs, uploads) is for its own user only: the
    // database holds the token signing keys. Group bits of existing files are left alone.
    #[cfg(unix)]
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Gc(args) => {
            let request = JobRequest::Gc(GcOptions {
                dry_run: args.dry_run,
                full: args.full,
                grace_period: args.common.grace_period,
            });
            maintenance(args.common, request)
        }
        Command::Scrub(args) => {
            let request = JobRequest::Scrub(ScrubOptions {
                grace_period: args.grace_period,
            });
            maintenance(args, request)
        }
        Command::Migrate(args) => migrate::run(args),
        Command::Vulndb(cmd) => vulndb::run(cmd),
        Command::Admin(cmd) => client::run(cmd),
        Command::Config(ConfigCommand::Check { file }) => {
            settings::load(Some(&file)).map(|config| {
                print!("{}", settings::render(&config));
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs one GC or scrub in this process against the configured data directory, recorded as
/// a job (so the API and metrics show it), and prints its report.
fn maintenance(args: MaintenanceArgs, request: JobRequest) -> anyhow::Result<()> {
    let mut config = settings::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let (meta, blobs) = open_stores(&config).await?;
        let owner = berth_jobs::worker_name();
        let kind = request.kind().as_str();
        let id = meta
            .start_inline_job(kind, &request.payload(), &owner, 24 * 3600 * 1000)
            .await?;
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            on_signal.cancel();
        });
        let result =
            berth_jobs::execute_job(&meta, blobs.as_ref(), &config, &request, &cancel).await;
        let outcome = match &result {
            Ok(report) => {
                let report = serde_json::to_value(report)?;
                meta.complete_job(id, &owner, &report).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Err(e) => {
                meta.fail_job(id, &owner, &e.to_string(), 0).await?;
                Err(anyhow::anyhow!("{kind} failed: {e}"))
            }
        };
        meta.close().await;
        outcome
    })
}

/// The MetaStore of a configuration (the data directory is created for SQLite).
async fn open_meta(config: &Config) -> anyhow::Result<MetaStore> {
    let data_dir = &config.data_dir;
    prepare_data_dir(data_dir)?;
    let meta = if config.database.is_postgres() {
        let db = &config.database;
        let opts = PgOptions {
            url: db.url.trim().to_owned(),
            listen_url: Some(db.listen_url.trim().to_owned()).filter(|u| !u.is_empty()),
            max_connections: db.max_connections,
            connect_timeout: db.connect_timeout.0,
            statement_timeout: db.statement_timeout.0,
        };
        MetaStore::open_postgres(&opts).await.with_context(|| {
            format!(
                "opening the PostgreSQL database {}",
                berth_meta::redact_url(&opts.url)
            )
        })?
    } else {
        let db_path = data_dir.join("berth.db");
        MetaStore::open_sqlite(&db_path)
            .await
            .with_context(|| format!("opening the database {}", db_path.display()))?
    };
    Ok(meta)
}

async fn open_stores(config: &Config) -> anyhow::Result<(MetaStore, Arc<dyn BlobStore>)> {
    let meta = open_meta(config).await?;
    let data_dir = &config.data_dir;
    let blobs: Arc<dyn BlobStore> = match config.storage.backend {
        StorageBackend::Filesystem => Arc::new(
            FsBlobStore::open(data_dir)
                .context("opening the blob store")?
                .with_direct_writes(config.storage.filesystem.direct_writes),
        ),
        StorageBackend::S3 => {
            let c = &config.storage.s3;
            let given = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
            let s3 = S3BlobStore::new(&S3Config {
                bucket: c.bucket.clone(),
                region: given(&c.region),
                endpoint: given(&c.endpoint),
                access_key_id: given(&c.access_key_id),
                secret_access_key: given(&c.secret_access_key),
                path_style: c.path_style,
                prefix: c.prefix.clone(),
                part_size: c.part_size.as_u64() as usize,
                allow_http: c.allow_http,
                ca_file: c.ca_file.clone(),
                max_retries: c.max_retries as usize,
                retry_timeout: c.retry_timeout.0,
                read_timeout: c.read_timeout.0,
            })
            .context("configuring the S3 blob store")?;
            // A clear error at start beats a 500 on the first push.
            s3.check().await.with_context(|| {
                format!(
                    "the S3 bucket {:?} is not reachable with these settings",
                    c.bucket
                )
            })?;
            Arc::new(s3)
        }
    };
    Ok((meta, blobs))
}

/// Creates the data directory (0700) or takes away what other users may do in an existing one
/// and its entries: an install from before this rule had a world-readable `berth.db`, which
/// holds the token signing keys. Entries further down need no change, since others cannot pass
/// the directory. Group bits stay (Kubernetes `fsGroup` volumes rely on them). Fails only when
/// a mode cannot be changed.
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        return Ok(());
    }
    let mut paths = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading data directory {}", dir.display()))?
    {
        paths.push(entry?.path());
    }
    for path in paths {
        let md = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading the mode of {}", path.display()))?;
        if md.file_type().is_symlink() {
            continue;
        }
        let mode = md.permissions().mode() & 0o7777;
        if mode & 0o007 != 0 {
            let tightened = mode & !0o007;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(tightened))
                .with_context(|| {
                    format!(
                        "{} is accessible to other users ({mode:o}) and its mode cannot be changed",
                        path.display()
                    )
                })?;
            tracing::warn!(
                path = %path.display(),
                "tightened the mode from {mode:o} to {tightened:o}: other users had access to \
                 Berth's data"
            );
        }
    }
    Ok(())
}

/// Holds `<data_dir>/berth.lock` for as long as this server runs: a second `berth serve` on the
/// same directory is refused (two servers would each run the job queue and keep their own
/// caches of one SQLite file). `berth gc` and `berth scrub` take no lock and may run beside it.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("berth.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another berth serve is already using the data directory {} (it holds {}); run one \
             server per data directory (berth gc and berth scrub may run beside it)",
            dir.display(),
            path.display()
        );
    }
    Ok(file)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = settings::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if args.no_auth {
        config.auth.enabled = false;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    let admin_password = std::env::var("BERTH_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty() && config.auth.enabled);
    if let Some(p) = &admin_password {
        berth_server::check_password_rules(p)
            .map_err(|e| anyhow::anyhow!("BERTH_ADMIN_PASSWORD: {e}"))?;
    }
    let open_files = berth_server::connections::raise_open_files_limit();
    init_logging(&config);
    if let Some((before, after)) = open_files
        && after > before
    {
        tracing::info!(
            before,
            after,
            "raised the open-files limit to the hard limit"
        );
    }
    let embedded =
        !config.database.is_postgres() || config.storage.backend == StorageBackend::Filesystem;
    let _lock = if embedded {
        prepare_data_dir(&config.data_dir)?;
        Some(lock_data_dir(&config.data_dir)?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(config, admin_password))
}

async fn run(config: Config, admin_password: Option<String>) -> anyhow::Result<()> {
    spawn_heap_trimmer();
    let data_dir = config.data_dir.clone();
    let (meta, blobs) = open_stores(&config).await?;
    let config = Arc::new(config);
    let registry = Arc::new(
        Registry::new(meta.clone(), blobs.clone(), config.clone())
            .await
            .context("starting the registry")?,
    );
    if config.auth.enabled {
        match registry
            .auth
            .bootstrap_admin(admin_password.as_deref())
            .await
        {
            Ok(AdminBootstrap::Created {
                generated: Some(generated),
            }) => {
                // Shown once: only its hash is stored.
                eprintln!(
                    "berth: created the first registry admin \"admin\" with the password {generated}\n\
                     berth: it is shown only now; change it with `berth user passwd admin`"
                );
                tracing::warn!(
                    "created the first admin user with a generated password (printed on stderr)"
                );
            }
            Ok(AdminBootstrap::Created { generated: None }) => {
                tracing::info!("created the first admin user with BERTH_ADMIN_PASSWORD");
            }
            Ok(AdminBootstrap::Exists {
                given_differs: true,
            }) => tracing::warn!(
                "BERTH_ADMIN_PASSWORD is set but ignored: the registry has users already and it \
                 is not the password of \"admin\"; it only seeds a new registry. Change the \
                 admin's password with `berth user passwd admin`"
            ),
            Ok(AdminBootstrap::Exists { .. }) => {}
            Err(e) => return Err(anyhow::anyhow!("creating the first admin: {e}")),
        }
    } else {
        tracing::warn!("authentication is OFF (--no-auth): anyone may push, pull and delete");
    }
    let audit_registry = registry.clone();
    let app = berth_server::App::new(registry.clone());
    let listener = berth_server::bind(&config).await?;
    let jobs_cancel = tokio_util::sync::CancellationToken::new();
    let runner = berth_jobs::JobRunner::new(
        meta.clone(),
        blobs,
        config.clone(),
        registry.jobs_wake.clone(),
    );
    let jobs = tokio::spawn(runner.run(jobs_cancel.clone()));
    // The events outbox: no consumer is built in yet (webhooks and event-triggered replication
    // will be); meanwhile the worker purges what the retention lets go.
    let events_worker = berth_jobs::EventWorker::new(meta.clone(), config.events.clone(), vec![]);
    let events = tokio::spawn(berth_jobs::run_worker(events_worker, jobs_cancel.clone()));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %data_dir.display(),
        backend = ?config.storage.backend,
        metadata = if config.database.is_postgres() { "postgresql" } else { "sqlite" },
        "berth started"
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let mirror = if config.proxy.mirror_listen.is_empty() {
        None
    } else {
        let mut mirror_config = (*config).clone();
        mirror_config.server.listen = config.proxy.mirror_listen.clone();
        let mirror_listener = berth_server::bind(&mirror_config).await?;
        let router = berth_server::mirror_router(app.clone(), &config.proxy.mirror_project);
        let connections = app.connections.clone();
        let stopped = stop.clone();
        tracing::info!(
            addr = %config.proxy.mirror_listen,
            project = %config.proxy.mirror_project,
            "Docker registry-mirrors listener"
        );
        Some(tokio::spawn(async move {
            berth_server::serve(
                &mirror_config,
                mirror_listener,
                router,
                connections,
                stopped.cancelled_owned(),
            )
            .await
        }))
    };
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    let connections = app.connections.clone();
    berth_server::serve(
        &config,
        listener,
        berth_server::app_router(app),
        connections,
        stop.clone().cancelled_owned(),
    )
    .await?;
    if let Some(m) = mirror {
        let _ = m.await;
    }
    audit_registry.audit.flush().await;
    // A running GC stops between two items; its progress so far is kept.
    jobs_cancel.cancel();
    let _ = jobs.await;
    let _ = events.await;
    meta.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("interrupt received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
