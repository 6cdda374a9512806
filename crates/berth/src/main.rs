//! The `berth` command: run the registry, check a configuration.

mod client;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use berth_core::config::{Config, LogFormat, StorageBackend};
use berth_meta::{MetaStore, PgOptions};
use berth_server::Registry;
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
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Gc(args) => {
            let payload = serde_json::json!({
                "dry_run": args.dry_run,
                "full": args.full,
                "grace_period_ms": args.common.grace_period.map(|d| d.as_millis() as u64),
            });
            maintenance(args.common, berth_jobs::KIND_GC, payload)
        }
        Command::Scrub(args) => {
            let payload = serde_json::json!({ "grace_period_ms": args.grace_period.map(|d| d.as_millis() as u64) });
            maintenance(args, berth_jobs::KIND_SCRUB, payload)
        }
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
fn maintenance(
    args: MaintenanceArgs,
    kind: &'static str,
    payload: serde_json::Value,
) -> anyhow::Result<()> {
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
        let id = meta
            .start_inline_job(kind, &payload, &owner, 24 * 3600 * 1000)
            .await?;
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            on_signal.cancel();
        });
        let result =
            berth_jobs::execute_job(&meta, blobs.as_ref(), &config, kind, &payload, &cancel).await;
        let outcome = match &result {
            Ok(report) => {
                meta.complete_job(id, &owner, report).await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(report).unwrap_or_default()
                );
                Ok(())
            }
            Err(e) => {
                meta.fail_job(id, &owner, e, 0).await?;
                Err(anyhow::anyhow!("{kind} failed: {e}"))
            }
        };
        meta.close().await;
        outcome
    })
}

async fn open_stores(config: &Config) -> anyhow::Result<(MetaStore, Arc<dyn BlobStore>)> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
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
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
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
        let given = std::env::var("BERTH_ADMIN_PASSWORD").ok();
        match registry.auth.bootstrap_admin(given.as_deref()).await {
            Ok(Some(generated)) => {
                // Shown once: only its hash is stored.
                eprintln!(
                    "berth: created the first registry admin \"admin\" with the password {generated}\n\
                     berth: it is shown only now; change it with `berth user passwd admin`"
                );
                tracing::warn!(
                    "created the first admin user with a generated password (printed on stderr)"
                );
            }
            Ok(None) => {}
            Err(e) => return Err(anyhow::anyhow!("creating the first admin: {e}")),
        }
    } else {
        tracing::warn!("authentication is OFF (--no-auth): anyone may push, pull and delete");
    }
    let audit_registry = registry.clone();
    let listener = berth_server::bind(&config).await?;
    let jobs_cancel = tokio_util::sync::CancellationToken::new();
    let runner = berth_jobs::JobRunner::new(
        meta.clone(),
        blobs,
        config.clone(),
        registry.jobs_wake.clone(),
    );
    let jobs = tokio::spawn(runner.run(jobs_cancel.clone()));
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
        let app = berth_server::mirror_router(registry.clone(), &config.proxy.mirror_project);
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
                app,
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
    berth_server::serve(
        &config,
        listener,
        berth_server::router(registry),
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
