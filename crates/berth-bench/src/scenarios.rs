//! The measurements, run interleaved (for each run, each system in turn), and the rows of
//! the table made from them.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use hyper::Method;
use sha2::{Digest as _, Sha256};

use crate::Cli;
use crate::data::{Blob, BlobMaker, random_pool};
use crate::http::{Conn, Endpoint, ReqBody, next_link};
use crate::loads::{self, workers};
use crate::ops::{self, Monolithic};
use crate::report::{self, BERTH, Cell, DIST, MACHINE, Metrics, NGINX, Row};

/// The benchmark's own minimal servers (refserver.rs), as columns of the metrics.
const REF_SINK_DISK: &str = "ref-sink-durable";
const REF_SINK_HASH: &str = "ref-sink-hash";
const REF_FILES: &str = "ref-files";
const REF_FILES_TLS: &str = "ref-files-tls";
use crate::servers::{self, Server};
use crate::stats::{MIB, Rng, Tally, ms};

/// Sizes, counts and durations of one mode.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    runs: usize,
    big: usize,
    chunk: u64,
    small_n: usize,
    small_conc: usize,
    manifests_n: usize,
    hot_conc: usize,
    hot_duration: Duration,
    tags_n: usize,
    tags_page: usize,
    whole_reps: usize,
    mixed_sizes: [usize; 3],
    mixed_conc: usize,
    mixed_duration: Duration,
    gc_garbage: usize,
    gc_idle: Duration,
    startup_n: usize,
    /// Free disk space asked for before starting, GiB.
    disk_needed_gib: f64,
    /// Most bytes pushed by one run of the mixed load (it ends early when reached).
    mixed_push_budget: u64,
}

impl Plan {
    fn new(quick: bool, runs: Option<usize>) -> Self {
        const M: usize = 1 << 20;
        if quick {
            Plan {
                quick,
                runs: runs.unwrap_or(1),
                big: 64 * M,
                chunk: 16 * M as u64,
                small_n: 200,
                small_conc: 16,
                manifests_n: 100,
                hot_conc: 64,
                hot_duration: Duration::from_secs(3),
                tags_n: 1_000,
                tags_page: 100,
                whole_reps: 10,
                mixed_sizes: [M, 4 * M, 8 * M],
                mixed_conc: 4,
                mixed_duration: Duration::from_secs(4),
                gc_garbage: 400,
                gc_idle: Duration::from_secs(2),
                startup_n: 10_000,
                disk_needed_gib: 4.0,
                mixed_push_budget: 1 << 30,
            }
        } else {
            Plan {
                quick,
                runs: runs.unwrap_or(5),
                big: 512 * M,
                chunk: 16 * M as u64,
                small_n: 2_000,
                small_conc: 16,
                manifests_n: 1_000,
                hot_conc: 64,
                hot_duration: Duration::from_secs(10),
                tags_n: 10_000,
                tags_page: 100,
                whole_reps: 20,
                mixed_sizes: [M, 10 * M, 100 * M],
                mixed_conc: 8,
                mixed_duration: Duration::from_secs(20),
                gc_garbage: 2_000,
                gc_idle: Duration::from_secs(4),
                startup_n: 100_000,
                disk_needed_gib: 25.0,
                mixed_push_budget: 6 << 30,
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": if self.quick { "quick" } else { "full" },
            "runs": self.runs,
            "big_blob_bytes": self.big,
            "chunk_bytes": self.chunk,
            "small_blobs": self.small_n,
            "small_blob_bytes": 4096,
            "small_concurrency": self.small_conc,
            "manifests": self.manifests_n,
            "manifest_get_concurrency": self.hot_conc,
            "manifest_get_seconds": self.hot_duration.as_secs_f64(),
            "tags": self.tags_n,
            "tags_page": self.tags_page,
            "mixed_sizes_bytes": self.mixed_sizes,
            "mixed_concurrency": self.mixed_conc,
            "mixed_seconds": self.mixed_duration.as_secs_f64(),
            "gc_garbage_blobs": self.gc_garbage,
            "startup_manifests": self.startup_n,
        })
    }
}

/// A registry under test.
struct Sys {
    who: &'static str,
    ep: Arc<Endpoint>,
    server: Option<Server>,
    mono: Monolithic,
}

struct Ctx {
    plan: Plan,
    cli: Cli,
    work: PathBuf,
    pool: Bytes,
    nonce: u64,
    counter: Arc<AtomicU64>,
    systems: Vec<Sys>,
    tls: Option<Sys>,
    nginx: Option<Server>,
    nginx_sendfile: Option<Arc<Endpoint>>,
    nginx_root: PathBuf,
    m: Metrics,
    big_maker: Option<BlobMaker>,
    /// The last big blob pushed to each system (who -> blob), pulled by the pull scenario.
    big: Vec<(&'static str, Blob)>,
    nginx_big: Option<Blob>,
    /// The throw-away TLS certificate and key (for berth over TLS and the TLS reference).
    tls_files: Option<(PathBuf, PathBuf)>,
    /// Config and layer shared by the manifests of every system (same bytes everywhere).
    config: Blob,
    layer: Blob,
    hot_manifest: Bytes,
}

impl Ctx {
    fn maker(&self, offset: usize, size: usize) -> BlobMaker {
        BlobMaker::new(&self.pool, offset, size, self.nonce, self.counter.clone())
    }

    fn reset_peaks(&self) {
        for s in &self.systems {
            if let Some(srv) = &s.server {
                srv.reset_peak();
            }
        }
    }

    fn record_peaks(&mut self, id: &str) {
        let mut got = Vec::new();
        for s in &self.systems {
            if let Some(mem) = s.server.as_ref().and_then(Server::mem) {
                got.push((s.who, mem.hwm_kib as f64 / 1024.0));
            }
        }
        for (who, v) in got {
            self.m.add(id, who, v);
        }
    }

    fn tally(&mut self, who: &str, scenario: &str, t: &Tally) {
        self.m.error(who, scenario, t.errors, &t.samples);
    }

    fn check_alive(&mut self) {
        let mut dead = Vec::new();
        for s in self.systems.iter_mut().chain(self.tls.iter_mut()) {
            if let Some(srv) = s.server.as_mut()
                && let Err(e) = srv.check_alive()
            {
                dead.push((s.who, format!("{e:#}")));
            }
        }
        for (who, e) in dead {
            eprintln!("!! {who} is not running: {e}");
            self.m.error(who, "process", 1, &[e]);
        }
    }
}

fn loopback(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs can be driven")?;
    let host = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("{url}: give an IP address and port"))?;
    ensure!(
        addr.ip().is_loopback(),
        "{url}: the benchmark only sends traffic to loopback addresses"
    );
    Ok(addr)
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

/// Whether `scenario` is to run: `--only` names it, or one of its parts (`limits:silent`).
fn wants(cli: &Cli, scenario: &str) -> bool {
    cli.only.is_empty()
        || cli.only.iter().any(|s| {
            s == scenario
                || s.strip_prefix(scenario)
                    .is_some_and(|rest| rest.starts_with(':'))
        })
}

/// The scenarios that measure the registries started together at the beginning (berth,
/// Distribution, nginx, berth over TLS); `limits` starts its own.
const SHARED_SCENARIOS: [&str; 8] = [
    "push",
    "pull",
    "small",
    "manifests",
    "tags",
    "mixed",
    "gc",
    "startup",
];

/// Whether any scenario that needs the shared servers (and the large test data) is wanted.
fn wants_shared(cli: &Cli) -> bool {
    SHARED_SCENARIOS.iter().any(|s| wants(cli, s))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut plan = Plan::new(cli.quick, cli.runs);
    let shared = wants_shared(&cli);
    if !shared {
        // Only `limits`, `postgres` or `scan`: a few small blobs, no large pushes.
        plan.disk_needed_gib = 1.0;
    }
    if wants(&cli, "scan") {
        let scan = crate::scan::Plan::new(plan.quick, plan.runs).disk_gib();
        plan.disk_needed_gib = plan.disk_needed_gib.max(scan);
    }
    let work = cli
        .work_dir
        .join(format!("run-{}", std::process::id()))
        .canonicalize_or_create()?;
    // Removed at the end, also when the benchmark fails or panics (declared before the
    // context, so dropped after it: the servers are killed first).
    let _guard = WorkDir {
        path: work.clone(),
        keep: cli.keep,
    };
    let free = servers::free_gib(&work).unwrap_or(f64::INFINITY);
    ensure!(
        free >= plan.disk_needed_gib,
        "{} has {free:.1} GiB free; the {} mode needs about {} GiB (the disk is shared: \
         the benchmark will not fill it)",
        work.display(),
        if plan.quick { "quick" } else { "full" },
        plan.disk_needed_gib
    );
    progress(format!(
        "berth-bench: {} mode, {} run(s) per figure, working in {}",
        if plan.quick { "quick" } else { "full" },
        plan.runs,
        work.display()
    ));
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let pool_len = if shared {
        plan.big.max(plan.mixed_sizes[2]) + (1 << 20)
    } else {
        1 << 20
    };
    let pool = tokio::task::spawn_blocking(move || random_pool(pool_len, nonce)).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let mk = |off: usize, size: usize| BlobMaker::new(&pool, off, size, nonce, counter.clone());
    let config = mk(1000, 1024).make();
    let layer = mk(5000, 4096).make();
    let hot_manifest = Bytes::from(ops::manifest(&config, &[&layer], "hot"));
    let nginx_root = work.join("nginx-root");
    std::fs::create_dir_all(&nginx_root)?;
    let mut ctx = Ctx {
        plan,
        cli,
        work,
        pool: pool.clone(),
        nonce,
        counter: counter.clone(),
        systems: Vec::new(),
        tls: None,
        nginx: None,
        nginx_sendfile: None,
        nginx_root,
        m: Metrics::default(),
        big_maker: None,
        big: Vec::new(),
        nginx_big: None,
        tls_files: None,
        config,
        layer,
        hot_manifest,
    };
    let result = run_all(&mut ctx).await;
    // Stop everything before reporting.
    for s in ctx.systems.iter_mut().chain(ctx.tls.iter_mut()) {
        if let Some(srv) = s.server.as_mut() {
            let _ = srv.stop(Duration::from_secs(30)).await;
        }
    }
    if let Some(n) = ctx.nginx.as_mut() {
        let _ = n.stop(Duration::from_secs(10)).await;
    }
    if let Err(e) = &result {
        ctx.m.note(format!("the benchmark stopped early: {e:#}"));
    }
    let rows = rows(&ctx);
    let mut out = String::new();
    if !rows.is_empty() {
        out.push_str(&format!("\n{}", report::table(&rows)));
    }
    let pg_plan = crate::postgres::Plan::new(ctx.plan.quick, ctx.plan.runs);
    let pg = crate::postgres::table(&ctx.m, &pg_plan, !ctx.plan.quick);
    if let Some((table, _)) = &pg {
        out.push_str(&format!("\n{table}"));
    }
    let errors = report::errors_text(&ctx.m);
    if !errors.is_empty() {
        out.push_str(&format!("\nFailed operations:\n{errors}"));
    }
    for n in &ctx.m.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
    write_json(&ctx, &rows, pg.map(|(_, json)| json))?;
    if ctx.cli.keep {
        progress(format!("kept {}", ctx.work.display()));
    }
    result?;
    // Figures measured while requests failed are not valid: say so in the exit status.
    let failed: u64 = ctx
        .m
        .errors
        .values()
        .flat_map(|s| s.values())
        .map(|(n, _)| n)
        .sum();
    ensure!(failed == 0, "{failed} operation(s) failed (listed above)");
    Ok(())
}

/// The run's working directory, removed when dropped unless it is to be kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

trait CanonicalizeOrCreate {
    fn canonicalize_or_create(&self) -> anyhow::Result<PathBuf>;
}

impl CanonicalizeOrCreate for PathBuf {
    fn canonicalize_or_create(&self) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(self).with_context(|| format!("creating {}", self.display()))?;
        Ok(self.canonicalize()?)
    }
}

async fn run_all(ctx: &mut Ctx) -> anyhow::Result<()> {
    if wants_shared(&ctx.cli) {
        start_servers(ctx).await?;
        let big = ctx.maker(0, ctx.plan.big);
        ctx.big_maker = Some(big);
        probe(ctx).await?;
    }
    type Step =
        for<'a> fn(&'a mut Ctx) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;
    let steps: [(&str, Step); 12] = [
        ("push", |c| Box::pin(push(c))),
        ("pull", |c| Box::pin(pull(c))),
        ("small", |c| Box::pin(small(c))),
        ("manifests", |c| Box::pin(manifests(c))),
        ("tags", |c| Box::pin(tags(c))),
        ("mixed", |c| Box::pin(mixed(c))),
        ("gc", |c| Box::pin(gc(c))),
        ("startup", |c| Box::pin(startup(c))),
        ("postgres", |c| Box::pin(postgres(c))),
        ("limits", |c| Box::pin(limits(c))),
        ("scan", |c| Box::pin(scan(c))),
        ("vulndb", |c| Box::pin(vulndb(c))),
    ];
    for (name, step) in steps {
        if !wants(&ctx.cli, name) {
            continue;
        }
        let t = Instant::now();
        progress(format!("== {name}"));
        let free = servers::free_gib(&ctx.work).unwrap_or(f64::INFINITY);
        if free < 3.0 {
            let e = format!("skipped: only {free:.1} GiB free on the work directory's disk");
            eprintln!("!! {name}: {e}");
            ctx.m.error("bench", name, 1, &[e]);
            continue;
        }
        if let Err(e) = step(ctx).await {
            eprintln!("!! {name}: {e:#}");
            ctx.m.error("bench", name, 1, &[format!("{e:#}")]);
        }
        ctx.check_alive();
        progress(format!("   {name} took {:.1} s", t.elapsed().as_secs_f64()));
    }
    Ok(())
}

async fn start_servers(ctx: &mut Ctx) -> anyhow::Result<()> {
    let ready = Duration::from_secs(60);
    // berth
    match &ctx.cli.berth_url {
        Some(url) => ctx.systems.push(Sys {
            who: BERTH,
            ep: Endpoint::plain(loopback(url)?),
            server: None,
            mono: Monolithic::Post,
        }),
        None => {
            let bin = ctx.cli.berth.canonicalize().with_context(|| {
                format!(
                    "berth binary {} (build it: cargo build --release -p berth)",
                    ctx.cli.berth.display()
                )
            })?;
            ctx.cli.berth = bin;
            let addr = servers::free_addr()?;
            let ep = Endpoint::plain(addr);
            let dir = ctx.work.join("berth");
            let srv = servers::berth(
                BERTH,
                &ctx.cli.berth,
                &dir,
                addr,
                ep.clone(),
                servers::berth_env(&[]),
            )?;
            ctx.systems.push(Sys {
                who: BERTH,
                ep,
                server: Some(srv),
                mono: Monolithic::Post,
            });
        }
    }
    // Distribution
    if !ctx.cli.no_distribution {
        match &ctx.cli.distribution_url {
            Some(url) => ctx.systems.push(Sys {
                who: DIST,
                ep: Endpoint::plain(loopback(url)?),
                server: None,
                mono: Monolithic::Post,
            }),
            None => {
                let addr = servers::free_addr()?;
                let srv = servers::distribution(
                    &ctx.cli.distribution,
                    &ctx.work.join("distribution"),
                    addr,
                )?;
                ctx.systems.push(Sys {
                    who: DIST,
                    ep: srv.endpoint.clone(),
                    server: Some(srv),
                    mono: Monolithic::Post,
                });
            }
        }
    }
    // Start each, `runs` times (stop and start again), for the empty start-up time.
    for run in 0..ctx.plan.runs {
        for i in 0..ctx.systems.len() {
            let who = ctx.systems[i].who;
            if let Some(srv) = ctx.systems[i].server.as_mut() {
                if run > 0 {
                    srv.stop(Duration::from_secs(30)).await?;
                }
                let t = srv.start(ready).await?;
                ctx.m.add("startup_empty", who, t.as_secs_f64() * 1000.0);
            }
        }
    }
    // nginx
    let manifest_path = ctx.nginx_root.join("manifest.json");
    std::fs::write(&manifest_path, &ctx.hot_manifest)?;
    let a = servers::free_addr()?;
    let b = servers::free_addr()?;
    let mut ng = servers::nginx(
        &ctx.cli.nginx,
        &ctx.work.join("nginx"),
        &ctx.nginx_root,
        a,
        b,
    )?;
    match ng.start(ready).await {
        Ok(_) => {
            ctx.nginx_sendfile = Some(Endpoint::plain(b));
            ctx.nginx = Some(ng);
        }
        Err(e) => {
            eprintln!("!! nginx: {e:#}");
            ctx.m.error(NGINX, "start", 1, &[format!("{e:#}")]);
        }
    }
    // berth over TLS
    if ctx.cli.berth_url.is_none() {
        let dir = ctx.work.join("berth-tls");
        std::fs::create_dir_all(&dir)?;
        match self_signed(&dir) {
            Ok((cert, key)) => {
                ctx.tls_files = Some((cert.clone(), key.clone()));
                let addr = servers::free_addr()?;
                let ep = Endpoint::tls(addr, &cert)?;
                let env = servers::berth_env(&[
                    ("BERTH_SERVER__TLS_CERT", &cert.display().to_string()),
                    ("BERTH_SERVER__TLS_KEY", &key.display().to_string()),
                ]);
                let mut srv =
                    servers::berth("berth-tls", &ctx.cli.berth, &dir, addr, ep.clone(), env)?;
                srv.start(ready).await?;
                ctx.tls = Some(Sys {
                    who: "berth-tls",
                    ep,
                    server: Some(srv),
                    mono: Monolithic::Post,
                });
            }
            Err(e) => {
                eprintln!("!! TLS certificate: {e:#}");
                ctx.m.error("berth-tls", "start", 1, &[format!("{e:#}")]);
            }
        }
    }
    // Idle RSS, a second after the last start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut idle = Vec::new();
    for s in &ctx.systems {
        if let Some(mem) = s.server.as_ref().and_then(Server::mem) {
            idle.push((s.who, mem.rss_kib as f64 / 1024.0));
        }
    }
    for (who, v) in idle {
        ctx.m.add("rss_idle", who, v);
    }
    Ok(())
}

/// A throw-away certificate for 127.0.0.1 (openssl, as operators make them).
fn self_signed(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // An end-entity certificate (webpki refuses a CA certificate as a server's).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "keyUsage=critical,digitalSignature"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((cert, key))
}

/// How each registry takes a monolithic upload, and the config and layer every manifest
/// of the benchmark references.
async fn probe(ctx: &mut Ctx) -> anyhow::Result<()> {
    let probe_blob = ctx.maker(20_000, 4096);
    for s in ctx.systems.iter_mut().chain(ctx.tls.iter_mut()) {
        let mut c = Conn::new(s.ep.clone());
        s.mono = ops::probe_monolithic(&mut c, "bench/probe", &probe_blob.make())
            .await
            .with_context(|| format!("{}: first upload", s.who))?;
        if s.mono != Monolithic::Post {
            ctx.m.note(format!(
                "{} answers a monolithic POST ?digest= with 202 (it does not take the body there), so its monolithic pushes are {}",
                s.who,
                s.mono.describe()
            ));
        }
    }
    Ok(())
}

/// Restarts the registries started by the benchmark on empty data directories, so the disk
/// holds only what the current measurement pushed.
async fn fresh(ctx: &mut Ctx) -> anyhow::Result<()> {
    for s in &mut ctx.systems {
        if let Some(srv) = s.server.as_mut() {
            srv.stop(Duration::from_secs(60)).await?;
            srv.wipe()?;
            srv.start(Duration::from_secs(60)).await?;
        }
    }
    Ok(())
}

fn sha_rate(data: &[u8]) -> f64 {
    let t = Instant::now();
    let mut h = Sha256::new();
    for c in data.chunks(1 << 20) {
        h.update(c);
    }
    std::hint::black_box(h.finalize());
    data.len() as f64 / MIB / t.elapsed().as_secs_f64()
}

/// The disk's durable write rate, in MiB/s: `dd if=/dev/zero of=<work>/dd.bin bs=1M count=N
/// conv=fdatasync`, through the page cache and again with `oflag=direct`, the better of the
/// two. On the benchmark's VM the page-cache copy alone runs anywhere from 300 to 1,600 MiB/s,
/// depending on whether the hypervisor has taken back the guest's free memory (the copy then
/// faults every page in), while direct writes hold 1,400-1,700; the better figure is what the
/// disk can take, so the push target does not move with the hypervisor's mood. Returns
/// (buffered, direct); direct is 0 where the filesystem refuses it.
fn dd_rate(dir: &Path, mib: usize) -> anyhow::Result<(f64, f64)> {
    let one = |direct: bool| -> anyhow::Result<f64> {
        let file = dir.join("dd.bin");
        let mut cmd = std::process::Command::new("dd");
        cmd.arg("if=/dev/zero")
            .arg(format!("of={}", file.display()))
            .args(["bs=1M", &format!("count={mib}"), "conv=fdatasync"]);
        if direct {
            cmd.arg("oflag=direct");
        }
        let out = cmd.output().context("running dd")?;
        let _ = std::fs::remove_file(&file);
        ensure!(
            out.status.success(),
            "dd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stderr);
        parse_dd(&text).with_context(|| format!("unexpected dd output: {text}"))
    };
    // A filesystem without O_DIRECT (tmpfs before Linux 6.6) has only the buffered figure.
    Ok((one(false)?, one(true).unwrap_or(0.0)))
}

/// Bytes and seconds from dd's summary line ("N bytes (...) copied, S s, R MB/s").
fn parse_dd(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains("copied, "))?;
    let bytes: f64 = line.split_whitespace().next()?.parse().ok()?;
    let secs: f64 = line
        .split("copied, ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .replace(',', ".")
        .parse()
        .ok()?;
    (secs > 0.0).then(|| bytes / MIB / secs)
}

/// The figure a large push is recorded under.
fn push_id(chunked: bool) -> &'static str {
    if chunked { "push_chunked" } else { "push_mono" }
}

/// One large push, chunked in `chunk`-byte PATCHes or monolithic in `mono`'s way.
async fn push_big(
    conn: &mut Conn,
    chunked: bool,
    mono: Monolithic,
    blob: &Blob,
    chunk: u64,
) -> anyhow::Result<()> {
    if chunked {
        ops::push_chunked(conn, "bench/big", blob, chunk).await
    } else {
        ops::push_monolithic(conn, mono, "bench/big", blob).await
    }
}

async fn push(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan.clone();
    let maker = ctx.big_maker.take().context("big blob maker")?;
    let size_mib = plan.big as f64 / MIB;
    let long = Duration::from_secs(600);
    let mut refs = Vec::new();
    for (who, dir) in [(REF_SINK_DISK, "sink"), (REF_SINK_HASH, "-")] {
        let addr = servers::free_addr()?;
        let dir_arg = if dir == "-" {
            "-".to_owned()
        } else {
            ctx.work.join("ref-sink").display().to_string()
        };
        let mut srv = servers::reference(who, &ctx.work.join("refs"), addr, &["sink", &dir_arg])?;
        srv.start(Duration::from_secs(30)).await?;
        refs.push((who, srv));
    }
    for run in 0..plan.runs {
        // Each run on empty registries: a run's blobs are all the disk holds.
        fresh(ctx).await?;
        ctx.big.clear();
        let pool = ctx.pool.clone();
        let big = plan.big;
        let sha = tokio::task::spawn_blocking(move || sha_rate(&pool[..big])).await?;
        ctx.m.add("sha256", MACHINE, sha);
        let work = ctx.work.clone();
        let (dd, dd_direct) =
            tokio::task::spawn_blocking(move || dd_rate(&work, big >> 20)).await??;
        ctx.m.add("durable_write", MACHINE, dd.max(dd_direct));
        progress(format!(
            "   run {}/{}: SHA-256 {sha:.0} MiB/s, dd conv=fdatasync {dd:.0} MiB/s, with oflag=direct {dd_direct:.0} MiB/s",
            run + 1,
            plan.runs
        ));
        // The least work a durable push needs on this machine with this client: the
        // benchmark's own minimal receivers (see refserver.rs), same request as berth's.
        for chunked in [false, true] {
            for (who, srv) in refs.iter() {
                let blob = maker.make();
                let mut conn = Conn::new(srv.endpoint.clone()).with_timeout(long);
                let t = Instant::now();
                let id = push_id(chunked);
                match push_big(&mut conn, chunked, Monolithic::Post, &blob, plan.chunk).await {
                    Ok(()) => {
                        let rate = size_mib / t.elapsed().as_secs_f64();
                        ctx.m.add(id, who, rate);
                        progress(format!("   {who} {id}: {rate:.0} MiB/s"));
                    }
                    Err(e) => ctx.m.error(who, id, 1, &[format!("{e:#}")]),
                }
            }
        }
        ctx.reset_peaks();
        for chunked in [false, true] {
            for i in 0..ctx.systems.len() {
                let (who, ep, mode) = (
                    ctx.systems[i].who,
                    ctx.systems[i].ep.clone(),
                    ctx.systems[i].mono,
                );
                let blob = maker.make();
                let mut conn = Conn::new(ep).with_timeout(long);
                let t = Instant::now();
                let r = push_big(&mut conn, chunked, mode, &blob, plan.chunk).await;
                let secs = t.elapsed().as_secs_f64();
                let id = push_id(chunked);
                match r {
                    Ok(()) => {
                        ctx.m.add(id, who, size_mib / secs);
                        progress(format!("   {who} {id}: {:.0} MiB/s", size_mib / secs));
                        if !chunked {
                            ctx.big.retain(|(w, _)| *w != who);
                            ctx.big.push((who, blob));
                        }
                    }
                    Err(e) => {
                        eprintln!("!! {who} {id}: {e:#}");
                        ctx.m.error(who, id, 1, &[format!("{e:#}")]);
                    }
                }
            }
        }
        ctx.record_peaks("rss_push");
    }
    for (_, mut srv) in refs {
        srv.stop(Duration::from_secs(10)).await?;
    }
    ctx.big_maker = Some(maker);
    Ok(())
}

/// One pull measurement: `streams` concurrent GETs of the same blob; aggregate MiB/s.
async fn pull_once(
    ep: &Arc<Endpoint>,
    path: &str,
    blob: &Blob,
    streams: usize,
    verify: bool,
) -> (Option<f64>, Tally) {
    let path = Arc::new(path.to_owned());
    let (len, digest) = (blob.len(), Arc::new(blob.digest.clone()));
    let t = Instant::now();
    let tally = workers(streams, |_| {
        let (ep, path, digest) = (ep.clone(), path.clone(), digest.clone());
        async move {
            let mut t = Tally::default();
            let mut conn = Conn::new(ep).with_timeout(Duration::from_secs(600));
            let s = Instant::now();
            match ops::pull_blob(&mut conn, &path, len, &digest, verify).await {
                Ok(n) => {
                    t.bytes += n;
                    t.ok(s);
                }
                Err(e) => t.fail(format!("{e:#}")),
            }
            t
        }
    })
    .await;
    let secs = t.elapsed().as_secs_f64();
    let rate = (tally.errors == 0).then(|| tally.bytes as f64 / MIB / secs);
    (rate, tally)
}

async fn pull(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan.clone();
    if ctx.big.is_empty() {
        let maker = ctx.big_maker.take().context("big blob maker")?;
        for s in &ctx.systems {
            let blob = maker.make();
            let mut conn = Conn::new(s.ep.clone()).with_timeout(Duration::from_secs(600));
            ops::push_monolithic(&mut conn, s.mono, "bench/big", &blob).await?;
            ctx.big.push((s.who, blob));
        }
        ctx.big_maker = Some(maker);
    }
    // nginx serves a file of the same size; berth over TLS gets its own copy (timed once).
    let maker = ctx.big_maker.take().context("big blob maker")?;
    if ctx.nginx.is_some() {
        let blob = maker.make();
        let path = ctx.nginx_root.join("big.bin");
        let b2 = blob.clone();
        tokio::task::spawn_blocking(move || std::fs::write(path, b2.to_vec())).await??;
        ctx.nginx_big = Some(blob);
    }
    let mut tls_blob = None;
    if let Some(tls) = &ctx.tls {
        let blob = maker.make();
        let mut conn = Conn::new(tls.ep.clone()).with_timeout(Duration::from_secs(600));
        let t = Instant::now();
        match ops::push_monolithic(&mut conn, tls.mono, "bench/big", &blob).await {
            Ok(()) => {
                ctx.m.add(
                    "push_mono_tls",
                    BERTH,
                    plan.big as f64 / MIB / t.elapsed().as_secs_f64(),
                );
                tls_blob = Some(blob);
            }
            Err(e) => ctx
                .m
                .error("berth-tls", "push over TLS", 1, &[format!("{e:#}")]),
        }
    }
    ctx.big_maker = Some(maker);
    // Targets: (who for the metrics, endpoint, path, blob).
    let mut targets: Vec<(&'static str, Arc<Endpoint>, String, Blob)> = Vec::new();
    for s in &ctx.systems {
        if let Some((_, b)) = ctx.big.iter().find(|(w, _)| *w == s.who) {
            targets.push((
                s.who,
                s.ep.clone(),
                format!("/v2/bench/big/blobs/{}", b.digest),
                b.clone(),
            ));
        }
    }
    if let (Some(ng), Some(b)) = (&ctx.nginx, &ctx.nginx_big) {
        targets.push((NGINX, ng.endpoint.clone(), "/big.bin".into(), b.clone()));
        if let Some(ep) = &ctx.nginx_sendfile {
            targets.push(("nginx-sendfile", ep.clone(), "/big.bin".into(), b.clone()));
        }
    }
    if let (Some(tls), Some(b)) = (&ctx.tls, tls_blob) {
        targets.push((
            "berth-tls",
            tls.ep.clone(),
            format!("/v2/bench/big/blobs/{}", b.digest),
            b,
        ));
    }
    // The benchmark's own minimal file servers (1 MiB reads, as berth), over HTTP and TLS:
    // what TLS costs on this machine with no registry around it.
    let mut refs = Vec::new();
    if let Some(b) = &ctx.nginx_big {
        let file = ctx.nginx_root.join("big.bin").display().to_string();
        let tls = ctx.tls_files.as_ref();
        for (who, tls) in [(REF_FILES, None), (REF_FILES_TLS, tls)] {
            if who == REF_FILES_TLS && tls.is_none() {
                continue;
            }
            let addr = servers::free_addr()?;
            let mut args = vec!["files".to_owned(), file.clone()];
            if let Some((cert, key)) = tls {
                args.extend([cert.display().to_string(), key.display().to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut srv = servers::reference(who, &ctx.work.join("refs"), addr, &args)?;
            if let Some((cert, _)) = tls {
                srv.endpoint = Endpoint::tls(addr, cert)?;
            }
            srv.start(Duration::from_secs(30)).await?;
            targets.push((who, srv.endpoint.clone(), "/big.bin".into(), b.clone()));
            refs.push(srv);
        }
    }
    for run in 0..plan.runs {
        ctx.reset_peaks();
        for (streams, verify) in [(1, false), (1, true), (4, false), (4, true)] {
            let id = format!("pull_{streams}_{}", if verify { "verified" } else { "raw" });
            let mut line = format!("   run {}/{} {id}:", run + 1, plan.runs);
            for (who, ep, path, blob) in &targets {
                let (rate, tally) = pull_once(ep, path, blob, streams, verify).await;
                ctx.tally(who, &id, &tally);
                ctx.m.add_opt(&id, who, rate);
                line.push_str(&format!(
                    " {who} {}",
                    rate.map_or("failed".into(), |r| format!("{r:.0}"))
                ));
            }
            progress(line);
        }
        ctx.record_peaks("rss_pull");
    }
    for mut srv in refs {
        srv.stop(Duration::from_secs(10)).await?;
    }
    // The large blobs are not needed any more: give their disk space back.
    if let Some(mut tls) = ctx.tls.take()
        && let Some(srv) = tls.server.as_mut()
    {
        srv.stop(Duration::from_secs(30)).await?;
        srv.wipe()?;
    }
    let _ = std::fs::remove_file(ctx.nginx_root.join("big.bin"));
    ctx.big.clear();
    fresh(ctx).await
}

async fn small(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan.clone();
    let maker = ctx.maker(40_000, 4096);
    for run in 0..plan.runs {
        for i in 0..ctx.systems.len() {
            let (who, ep, mode) = (
                ctx.systems[i].who,
                ctx.systems[i].ep.clone(),
                ctx.systems[i].mono,
            );
            let blobs: Arc<Vec<Blob>> = Arc::new((0..plan.small_n).map(|_| maker.make()).collect());
            let repo = Arc::new(format!("bench/small-{run}"));
            if let Some(srv) = &ctx.systems[i].server {
                srv.reset_peak();
            }
            for pulling in [false, true] {
                let (tally, secs) = loads::small_blobs(
                    std::slice::from_ref(&ep),
                    mode,
                    &repo,
                    &blobs,
                    plan.small_conc,
                    pulling,
                )
                .await;
                let op = if pulling { "small_pull" } else { "small_push" };
                ctx.tally(who, op, &tally);
                let ops_s = tally.count() as f64 / secs;
                ctx.m.add(&format!("{op}_ops"), who, ops_s);
                ctx.m.add_opt(&format!("{op}_p50"), who, tally.p(0.5));
                ctx.m.add_opt(&format!("{op}_p99"), who, tally.p(0.99));
                progress(format!(
                    "   run {}/{} {who} {op}: {ops_s:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
                    run + 1,
                    plan.runs,
                    tally.p(0.5).unwrap_or(f64::NAN),
                    tally.p(0.99).unwrap_or(f64::NAN),
                    tally.errors
                ));
            }
            if let Some(mem) = ctx.systems[i].server.as_ref().and_then(Server::mem) {
                ctx.m.add("rss_small", who, mem.hwm_kib as f64 / 1024.0);
            }
        }
    }
    Ok(())
}

/// Pushes the shared config and layer into `repo`.
async fn seed_repo(
    conn: &mut Conn,
    mode: Monolithic,
    repo: &str,
    config: &Blob,
    layer: &Blob,
) -> anyhow::Result<()> {
    ops::push_monolithic(conn, mode, repo, config).await?;
    ops::push_monolithic(conn, mode, repo, layer).await
}

async fn manifests(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan.clone();
    for s in &ctx.systems {
        let mut conn = Conn::new(s.ep.clone());
        seed_repo(&mut conn, s.mono, "bench/man", &ctx.config, &ctx.layer).await?;
        ops::put_manifest(&mut conn, "bench/man", "latest", &ctx.hot_manifest)
            .await
            .with_context(|| format!("{}: the manifest GET by tag reads", s.who))?;
    }
    for run in 0..plan.runs {
        // 1,000 manifests PUT by tag, then GET by digest, one at a time.
        for i in 0..ctx.systems.len() {
            let (who, ep) = (ctx.systems[i].who, ctx.systems[i].ep.clone());
            if let Some(srv) = &ctx.systems[i].server {
                srv.reset_peak();
            }
            let bodies: Vec<Bytes> = (0..plan.manifests_n)
                .map(|k| {
                    Bytes::from(ops::manifest(
                        &ctx.config,
                        &[&ctx.layer],
                        &format!("{}-{run}-{k}", ctx.nonce),
                    ))
                })
                .collect();
            let loads::PutThenGet {
                put,
                put_secs,
                get,
                get_secs,
            } = loads::manifests_one_at_a_time(&[ep], "bench/man", &format!("m{run}-"), &bodies)
                .await;
            ctx.tally(who, "manifest PUT", &put);
            ctx.tally(who, "manifest GET by digest", &get);
            for (id, t, secs) in [("man_put", &put, put_secs), ("man_get", &get, get_secs)] {
                ctx.m
                    .add(&format!("{id}_ops"), who, t.count() as f64 / secs);
                ctx.m.add_opt(&format!("{id}_p50"), who, t.p(0.5));
                ctx.m.add_opt(&format!("{id}_p99"), who, t.p(0.99));
            }
            progress(format!(
                "   run {}/{} {who}: manifest PUT p50 {:.2} ms p99 {:.2} ms; GET p50 {:.2} ms p99 {:.2} ms",
                run + 1,
                plan.runs,
                put.p(0.5).unwrap_or(f64::NAN),
                put.p(0.99).unwrap_or(f64::NAN),
                get.p(0.5).unwrap_or(f64::NAN),
                get.p(0.99).unwrap_or(f64::NAN)
            ));
        }
        // Manifest GET by tag at concurrency 64, against nginx serving the same bytes.
        let mut targets: Vec<(&'static str, Arc<Endpoint>, &'static str)> = ctx
            .systems
            .iter()
            .map(|s| (s.who, s.ep.clone(), "/v2/bench/man/manifests/latest"))
            .collect();
        if let Some(ng) = &ctx.nginx {
            targets.push((NGINX, ng.endpoint.clone(), "/manifest.json"));
        }
        let len = ctx.hot_manifest.len();
        for (who, ep, path) in targets {
            let (tally, secs) =
                loads::hot_get(&[ep], path, len, plan.hot_conc, plan.hot_duration).await;
            ctx.tally(who, "manifest GET by tag c64", &tally);
            let rps = tally.count() as f64 / secs;
            ctx.m.add("hot_rps", who, rps);
            ctx.m.add_opt("hot_p50", who, tally.p(0.5));
            ctx.m.add_opt("hot_p99", who, tally.p(0.99));
            progress(format!(
                "   run {}/{} {who}: manifest GET by tag c{}: {rps:.0} req/s, p99 {:.2} ms",
                run + 1,
                plan.runs,
                plan.hot_conc,
                tally.p(0.99).unwrap_or(f64::NAN)
            ));
        }
        ctx.record_peaks("rss_manifests");
    }
    Ok(())
}

/// PUTs `body` under `count` references made by `name` at concurrency 16; returns the rate.
async fn put_many(
    ep: &Arc<Endpoint>,
    repos: Arc<dyn Fn(usize) -> (String, String, Bytes) + Send + Sync>,
    count: usize,
) -> (f64, Tally) {
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let tally = workers(16, |_| {
        let (ep, next, repos) = (ep.clone(), next.clone(), repos.clone());
        async move {
            let mut t = Tally::default();
            let mut conn = Conn::new(ep).with_timeout(Duration::from_secs(60));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let (repo, reference, body) = repos(i);
                let s = Instant::now();
                match ops::put_manifest(&mut conn, &repo, &reference, &body).await {
                    Ok(()) => t.ok(s),
                    Err(e) => t.fail(format!("{e:#}")),
                }
            }
            t
        }
    })
    .await;
    (tally.count() as f64 / t.elapsed().as_secs_f64(), tally)
}

fn tag_name(i: usize) -> String {
    format!("v{i:06}")
}

async fn tags(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan.clone();
    let body = Bytes::from(ops::manifest(&ctx.config, &[&ctx.layer], "tags"));
    for i in 0..ctx.systems.len() {
        let (who, ep, mode) = (
            ctx.systems[i].who,
            ctx.systems[i].ep.clone(),
            ctx.systems[i].mono,
        );
        let mut conn = Conn::new(ep.clone());
        seed_repo(&mut conn, mode, "bench/tags", &ctx.config, &ctx.layer).await?;
        let b = body.clone();
        let (rate, tally) = put_many(
            &ep,
            Arc::new(move |i| ("bench/tags".into(), tag_name(i), b.clone())),
            plan.tags_n,
        )
        .await;
        ctx.tally(who, "tag PUT", &tally);
        ctx.m.add("tags_put_ops", who, rate);
        progress(format!(
            "   {who}: {} tags pushed at {rate:.0}/s",
            plan.tags_n
        ));
    }
    let pages = plan.tags_n.div_ceil(plan.tags_page);
    let walks = (300 / pages).max(1);
    for run in 0..plan.runs {
        for i in 0..ctx.systems.len() {
            let (who, ep) = (ctx.systems[i].who, ctx.systems[i].ep.clone());
            if let Some(srv) = &ctx.systems[i].server {
                srv.reset_peak();
            }
            let mut conn = Conn::new(ep);
            let mut page = Tally::default();
            let mut walk_ms = Vec::new();
            let mut ignores_n = false;
            for _ in 0..walks {
                let t = Instant::now();
                let mut url = Some(format!("/v2/bench/tags/tags/list?n={}", plan.tags_page));
                let mut seen = 0usize;
                let mut requests = 0;
                while let Some(u) = url.take() {
                    requests += 1;
                    if requests > pages + 5 {
                        page.fail("more pages than tags/n: the Link chain does not end");
                        break;
                    }
                    let s = Instant::now();
                    match conn.get(&u, &[]).await {
                        Ok(r) if r.status == 200 => {
                            page.ok(s);
                            let n = serde_json::from_slice::<serde_json::Value>(&r.body)
                                .ok()
                                .and_then(|v| v["tags"].as_array().map(Vec::len))
                                .unwrap_or(0);
                            if n > plan.tags_page {
                                ignores_n = true;
                            }
                            seen += n;
                            url = next_link(&r);
                        }
                        Ok(r) => page.fail(format!("GET {u}: {}", r.describe())),
                        Err(e) => page.fail(format!("{e:#}")),
                    }
                }
                if seen != plan.tags_n {
                    page.fail(format!(
                        "the paginated walk listed {seen} tags, not {}",
                        plan.tags_n
                    ));
                }
                walk_ms.push(ms(t.elapsed()));
            }
            if ignores_n {
                ctx.m.note(format!(
                    "{who} ignores n on tags/list: its 'paginated' figures are for the whole list in one answer"
                ));
            }
            let mut whole = Tally::default();
            for _ in 0..plan.whole_reps {
                let s = Instant::now();
                match conn.get("/v2/bench/tags/tags/list", &[]).await {
                    Ok(r) if r.status == 200 => {
                        let n = serde_json::from_slice::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|v| v["tags"].as_array().map(Vec::len))
                            .unwrap_or(0);
                        if n == plan.tags_n {
                            whole.ok(s);
                        } else {
                            whole.fail(format!(
                                "tags/list without n listed {n} tags, not {} (Link: {:?})",
                                plan.tags_n,
                                next_link(&r)
                            ));
                        }
                    }
                    Ok(r) => whole.fail(r.describe()),
                    Err(e) => whole.fail(format!("{e:#}")),
                }
            }
            ctx.tally(who, "tags/list paginated", &page);
            ctx.tally(who, "tags/list whole", &whole);
            ctx.m.add_opt("tags_page_p50", who, page.p(0.5));
            ctx.m.add_opt("tags_page_p99", who, page.p(0.99));
            ctx.m
                .add_opt("tags_walk_ms", who, crate::stats::median(&walk_ms));
            ctx.m.add_opt("tags_whole_p50", who, whole.p(0.5));
            ctx.m.add_opt("tags_whole_p99", who, whole.p(0.99));
            progress(format!(
                "   run {}/{} {who}: page p99 {:.2} ms, walk {:.1} ms, whole p99 {:.2} ms",
                run + 1,
                plan.runs,
                page.p(0.99).unwrap_or(f64::NAN),
                crate::stats::median(&walk_ms).unwrap_or(f64::NAN),
                whole.p(0.99).unwrap_or(f64::NAN)
            ));
            if let Some(mem) = ctx.systems[i].server.as_ref().and_then(Server::mem) {
                ctx.m.add("rss_tags", who, mem.hwm_kib as f64 / 1024.0);
            }
        }
    }
    Ok(())
}

async fn mixed(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan.clone();
    let makers: Arc<Vec<BlobMaker>> =
        Arc::new(plan.mixed_sizes.iter().map(|&s| ctx.maker(64, s)).collect());
    for run in 0..plan.runs {
        // Pushes of up to 100 MiB add up: each run starts on empty registries.
        fresh(ctx).await?;
        for i in 0..ctx.systems.len() {
            let (who, ep, mode) = (
                ctx.systems[i].who,
                ctx.systems[i].ep.clone(),
                ctx.systems[i].mono,
            );
            let repo = Arc::new(format!("bench/mixed-{run}"));
            let mut conn = Conn::new(ep.clone()).with_timeout(Duration::from_secs(300));
            let mut seeds = Vec::new();
            for m in makers.iter() {
                let b = m.make();
                ops::push_monolithic(&mut conn, mode, &repo, &b).await?;
                seeds.push(b);
            }
            let seeds = Arc::new(seeds);
            if let Some(srv) = &ctx.systems[i].server {
                srv.reset_peak();
            }
            let deadline = Instant::now() + plan.mixed_duration;
            let t = Instant::now();
            let pulls = Arc::new(std::sync::Mutex::new(Tally::default()));
            let pushed = Arc::new(AtomicU64::new(0));
            let budget = plan.mixed_push_budget;
            let pushes = workers(plan.mixed_conc, |w| {
                let (ep, repo, seeds, makers, pulls, pushed) = (
                    ep.clone(),
                    repo.clone(),
                    seeds.clone(),
                    makers.clone(),
                    pulls.clone(),
                    pushed.clone(),
                );
                async move {
                    let mut push = Tally::default();
                    let mut pull = Tally::default();
                    let mut rng = Rng::new((run * 1000 + w) as u64 + 11);
                    let mut conn = Conn::new(ep).with_timeout(Duration::from_secs(300));
                    while Instant::now() < deadline && pushed.load(Ordering::Relaxed) < budget {
                        let size = rng.below(3) as usize;
                        let s = Instant::now();
                        if rng.below(4) == 0 {
                            let b = makers[size].make();
                            match ops::push_monolithic(&mut conn, mode, &repo, &b).await {
                                Ok(()) => {
                                    push.ok(s);
                                    push.bytes += b.len();
                                    pushed.fetch_add(b.len(), Ordering::Relaxed);
                                }
                                Err(e) => push.fail(format!("{e:#}")),
                            }
                        } else {
                            let b = &seeds[size];
                            let path = format!("/v2/{repo}/blobs/{}", b.digest);
                            match ops::pull_blob(&mut conn, &path, b.len(), &b.digest, true).await {
                                Ok(n) => {
                                    pull.ok(s);
                                    pull.bytes += n;
                                }
                                Err(e) => pull.fail(format!("{e:#}")),
                            }
                        }
                    }
                    pulls.lock().expect("not poisoned").merge(pull);
                    push
                }
            })
            .await;
            let secs = t.elapsed().as_secs_f64();
            if pushed.load(Ordering::Relaxed) >= budget
                && secs + 0.5 < plan.mixed_duration.as_secs_f64()
            {
                ctx.m.note(format!(
                    "mixed load: a {who} run ended after {secs:.1} s, when it had pushed the {} GiB the benchmark allows one run to write",
                    budget >> 30
                ));
            }
            let pulls = std::mem::take(&mut *pulls.lock().expect("not poisoned"));
            ctx.tally(who, "mixed pull", &pulls);
            ctx.tally(who, "mixed push", &pushes);
            let ops_s = (pulls.count() + pushes.count()) as f64 / secs;
            let mibs = (pulls.bytes + pushes.bytes) as f64 / MIB / secs;
            ctx.m.add("mixed_ops", who, ops_s);
            ctx.m.add("mixed_mibs", who, mibs);
            ctx.m.add_opt("mixed_pull_p99", who, pulls.p(0.99));
            ctx.m.add_opt("mixed_push_p99", who, pushes.p(0.99));
            progress(format!(
                "   run {}/{} {who}: {ops_s:.1} ops/s, {mibs:.0} MiB/s ({} pulls, {} pushes), pull p99 {:.0} ms, push p99 {:.0} ms",
                run + 1,
                plan.runs,
                pulls.count(),
                pushes.count(),
                pulls.p(0.99).unwrap_or(f64::NAN),
                pushes.p(0.99).unwrap_or(f64::NAN)
            ));
            if let Some(mem) = ctx.systems[i].server.as_ref().and_then(Server::mem) {
                ctx.m.add("rss_mixed", who, mem.hwm_kib as f64 / 1024.0);
            }
        }
    }
    fresh(ctx).await
}

/// Small-blob pulls at concurrency 4 until `stop` is set or `until` passes.
async fn pull_loop(
    ep: &Arc<Endpoint>,
    repo: &str,
    blobs: &Arc<Vec<Blob>>,
    stop: &Arc<AtomicBool>,
    until: Instant,
) -> Tally {
    let repo = Arc::new(repo.to_owned());
    workers(4, |w| {
        let (ep, repo, blobs, stop) = (ep.clone(), repo.clone(), blobs.clone(), stop.clone());
        async move {
            let mut t = Tally::default();
            let mut conn = Conn::new(ep).with_timeout(Duration::from_secs(30));
            let mut k = w;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let b = &blobs[k % blobs.len()];
                k += 4;
                let path = format!("/v2/{repo}/blobs/{}", b.digest);
                let s = Instant::now();
                match ops::pull_blob(&mut conn, &path, b.len(), &b.digest, true).await {
                    Ok(_) => t.ok(s),
                    Err(e) => t.fail(format!("{e:#}")),
                }
            }
            t
        }
    })
    .await
}

async fn gc(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan.clone();
    if ctx.cli.berth_url.is_some() || !ctx.systems.iter().any(|s| s.who == BERTH) {
        ctx.m
            .note("GC: skipped (berth is not started by the benchmark)");
        return Ok(());
    }
    let addr = servers::free_addr()?;
    let ep = Endpoint::plain(addr);
    let env = servers::berth_env(&[
        // Berth refuses a zero uploads.purge_after, and the grace period may not be
        // shorter: one second each; the garbage is older than that when the run starts.
        ("BERTH_GC__GRACE_PERIOD", "1s"),
        ("BERTH_UPLOADS__PURGE_AFTER", "1s"),
        ("BERTH_GC__UNTAGGED_AGE", "0s"),
    ]);
    let mut srv = servers::berth(
        "berth-gc",
        &ctx.cli.berth,
        &ctx.work.join("berth-gc"),
        addr,
        ep.clone(),
        env,
    )?;
    srv.start(Duration::from_secs(60)).await?;
    let mut conn = Conn::new(ep.clone());
    // The blobs pulled during the measurement, kept alive by a tagged manifest.
    let small = ctx.maker(80_000, 4096);
    let hot: Arc<Vec<Blob>> = Arc::new((0..32).map(|_| small.make()).collect());
    seed_repo(
        &mut conn,
        Monolithic::Post,
        "gc/hot",
        &ctx.config,
        &ctx.layer,
    )
    .await?;
    for b in hot.iter() {
        ops::push_monolithic(&mut conn, Monolithic::Post, "gc/hot", b).await?;
    }
    let refs: Vec<&Blob> = hot.iter().collect();
    let keep = Bytes::from(ops::manifest(&ctx.config, &refs, "keep"));
    ops::put_manifest(&mut conn, "gc/hot", "keep", &keep).await?;
    for run in 0..plan.runs {
        // Garbage: blobs referenced by manifests whose tags are then deleted.
        let repo = format!("gc/junk-{run}");
        seed_repo(&mut conn, Monolithic::Post, &repo, &ctx.config, &ctx.layer).await?;
        let junk: Arc<Vec<Blob>> = Arc::new((0..plan.gc_garbage).map(|_| small.make()).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let pushed = workers(16, |_| {
            let (ep, junk, next, repo) = (ep.clone(), junk.clone(), next.clone(), repo.clone());
            async move {
                let mut t = Tally::default();
                let mut conn = Conn::new(ep);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = junk.get(i) else { break };
                    let s = Instant::now();
                    match ops::push_monolithic(&mut conn, Monolithic::Post, &repo, b).await {
                        Ok(()) => t.ok(s),
                        Err(e) => t.fail(format!("{e:#}")),
                    }
                }
                t
            }
        })
        .await;
        ctx.tally(BERTH, "GC setup: blob push", &pushed);
        let mut tagged = 0;
        for (k, group) in junk.chunks(100).enumerate() {
            let refs: Vec<&Blob> = group.iter().collect();
            let body = Bytes::from(ops::manifest(
                &ctx.config,
                &refs,
                &format!("junk-{}-{run}-{k}", ctx.nonce),
            ));
            ops::put_manifest(&mut conn, &repo, &format!("j{k}"), &body).await?;
            tagged += 1;
        }
        for k in 0..tagged {
            ops::delete(&mut conn, &format!("/v2/{repo}/manifests/j{k}")).await?;
        }
        // Idle pulls, then pulls while a GC run collects.
        let stop = Arc::new(AtomicBool::new(false));
        let idle = pull_loop(&ep, "gc/hot", &hot, &stop, Instant::now() + plan.gc_idle).await;
        srv.reset_peak();
        let r = conn
            .request(Method::POST, "/api/v1/gc", &[], ReqBody::empty())
            .await?;
        ensure!(r.status == 202, "POST /api/v1/gc: {}", r.describe());
        let job = serde_json::from_slice::<serde_json::Value>(&r.body)?["job"]
            .as_i64()
            .context("POST /api/v1/gc: no job id")?;
        let t = Instant::now();
        let limit = Instant::now() + Duration::from_secs(600);
        let during = {
            let (ep2, hot2, stop2) = (ep.clone(), hot.clone(), stop.clone());
            tokio::spawn(async move { pull_loop(&ep2, "gc/hot", &hot2, &stop2, limit).await })
        };
        let mut result = serde_json::Value::Null;
        let mut poll = Conn::new(ep.clone());
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let r = poll.get(&format!("/api/v1/jobs/{job}"), &[]).await?;
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            match v["state"].as_str() {
                Some("succeeded") => {
                    result = v["result"].clone();
                    break;
                }
                Some("failed" | "dead") => {
                    ctx.m.error(
                        BERTH,
                        "GC run",
                        1,
                        &[format!("GC job {job} ended {}: {}", v["state"], v["error"])],
                    );
                    break;
                }
                _ if Instant::now() > limit => bail!("the GC run did not finish in 10 minutes"),
                _ => {}
            }
        }
        let gc_secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let during = during.await?;
        ctx.tally(BERTH, "pull while idle (GC instance)", &idle);
        ctx.tally(BERTH, "pull during GC", &during);
        ctx.m.add_opt("gc_idle_p50", BERTH, idle.p(0.5));
        ctx.m.add_opt("gc_idle_p99", BERTH, idle.p(0.99));
        ctx.m.add_opt("gc_during_p50", BERTH, during.p(0.5));
        ctx.m.add_opt("gc_during_p99", BERTH, during.p(0.99));
        ctx.m.add("gc_secs", BERTH, gc_secs);
        ctx.m.add("gc_during_samples", BERTH, during.count() as f64);
        let deleted = result["deleted_blobs"].as_f64().unwrap_or(0.0);
        ctx.m.add("gc_deleted_blobs", BERTH, deleted);
        if let Some(mem) = srv.mem() {
            ctx.m.add("rss_gc", BERTH, mem.hwm_kib as f64 / 1024.0);
        }
        progress(format!(
            "   run {}/{}: GC {gc_secs:.1} s, {deleted} blobs deleted; pull p99 idle {:.2} ms, during GC {:.2} ms ({} pulls)",
            run + 1,
            plan.runs,
            idle.p(0.99).unwrap_or(f64::NAN),
            during.p(0.99).unwrap_or(f64::NAN),
            during.count()
        ));
        if deleted < plan.gc_garbage as f64 {
            ctx.m.note(format!(
                "GC run {}: deleted {deleted} blobs of the {} made unreferenced; result: {result}",
                run + 1,
                plan.gc_garbage
            ));
        }
    }
    srv.check_alive()?;
    srv.stop(Duration::from_secs(30)).await?;
    Ok(())
}

async fn startup(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan.clone();
    let per_repo = 1000;
    let repos = plan.startup_n.div_ceil(per_repo);
    for i in 0..ctx.systems.len() {
        let (who, ep, mode) = (
            ctx.systems[i].who,
            ctx.systems[i].ep.clone(),
            ctx.systems[i].mono,
        );
        if ctx.systems[i].server.is_none() {
            continue;
        }
        let mut conn = Conn::new(ep.clone());
        for r in 0..repos {
            seed_repo(
                &mut conn,
                mode,
                &format!("bench/start-{r}"),
                &ctx.config,
                &ctx.layer,
            )
            .await?;
        }
        if let Some(srv) = &ctx.systems[i].server {
            srv.reset_peak();
        }
        let (config, layer, nonce) = (ctx.config.clone(), ctx.layer.clone(), ctx.nonce);
        let make = move |i: usize| {
            let body = Bytes::from(ops::manifest(
                &config,
                &[&layer],
                &format!("start-{nonce}-{i}"),
            ));
            (
                format!("bench/start-{}", i / per_repo),
                format!("s{i}"),
                body,
            )
        };
        let t = Instant::now();
        let (rate, tally) = put_many(&ep, Arc::new(make), plan.startup_n).await;
        ctx.tally(who, "creating manifests for the start-up test", &tally);
        ctx.m.add("startup_put_ops", who, rate);
        ctx.m.add_opt("startup_put_p99", who, tally.p(0.99));
        progress(format!(
            "   {who}: {} manifests created in {:.0} s ({rate:.0}/s)",
            tally.count(),
            t.elapsed().as_secs_f64()
        ));
        if let Some(mem) = ctx.systems[i].server.as_ref().and_then(Server::mem) {
            ctx.m
                .add("rss_startup_put", who, mem.hwm_kib as f64 / 1024.0);
        }
    }
    for run in 0..plan.runs {
        for i in 0..ctx.systems.len() {
            let who = ctx.systems[i].who;
            let Some(srv) = ctx.systems[i].server.as_mut() else {
                continue;
            };
            srv.stop(Duration::from_secs(60)).await?;
            let t = srv.start(Duration::from_secs(600)).await?;
            ctx.m.add("startup_loaded", who, t.as_secs_f64() * 1000.0);
            // A request that needs the database, to be sure the start was complete.
            let mut conn = Conn::new(ctx.systems[i].ep.clone());
            let r = conn.get("/v2/bench/start-0/tags/list?n=1", &[]).await?;
            if r.status != 200 {
                ctx.m.error(who, "after restart", 1, &[r.describe()]);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(mem) = ctx.systems[i].server.as_ref().and_then(Server::mem) {
                ctx.m
                    .add("rss_idle_loaded", who, mem.rss_kib as f64 / 1024.0);
            }
            progress(format!(
                "   run {}/{} {who}: ready {:.0} ms after start",
                run + 1,
                plan.runs,
                ms(t)
            ));
        }
    }
    Ok(())
}

/// The parts of `scenario` named in `--only` (`postgres:small` -> `small`); empty when the
/// whole scenario is wanted.
fn parts_of(cli: &Cli, scenario: &str) -> Vec<String> {
    if cli.only.iter().any(|s| s == scenario) {
        return Vec::new();
    }
    cli.only
        .iter()
        .filter_map(|s| s.strip_prefix(scenario)?.strip_prefix(':'))
        .map(str::to_owned)
        .collect()
}

/// The postgres scenario (postgres.rs), on berths it starts itself.
async fn postgres(ctx: &mut Ctx) -> anyhow::Result<()> {
    let Some(url) = ctx
        .cli
        .postgres_url
        .clone()
        .filter(|u| !u.trim().is_empty())
    else {
        let why = "postgres: skipped, no PostgreSQL to compare with: give --postgres-url or \
                   BERTH_BENCH_POSTGRES_URL (scripts/pg-test-server.sh starts one)";
        progress(format!("   {why}"));
        ctx.m.note(why);
        return Ok(());
    };
    if ctx.cli.berth_url.is_some() {
        ctx.m
            .note("postgres: skipped (it starts berths of its own: give --berth)");
        return Ok(());
    }
    let berth = ctx.cli.berth.canonicalize().with_context(|| {
        format!(
            "berth binary {} (build it: cargo build --release -p berth)",
            ctx.cli.berth.display()
        )
    })?;
    let env = crate::postgres::Env {
        berth: &berth,
        admin_url: url.trim(),
        work: ctx.work.join("postgres"),
        plan: crate::postgres::Plan::new(ctx.plan.quick, ctx.plan.runs),
        config: ctx.config.clone(),
        layer: ctx.layer.clone(),
        hot_manifest: ctx.hot_manifest.clone(),
        small: ctx.maker(40_000, 4096),
        nonce: ctx.nonce,
        parts: parts_of(&ctx.cli, "postgres"),
    };
    crate::postgres::run(&env, &mut ctx.m).await
}

/// The limits scenario (limits.rs), on berths it starts itself.
async fn limits(ctx: &mut Ctx) -> anyhow::Result<()> {
    if ctx.cli.berth_url.is_some() {
        ctx.m.note(
            "limits: skipped (it starts berths of its own, with lowered limits: give --berth)",
        );
        return Ok(());
    }
    let berth = ctx.cli.berth.canonicalize().with_context(|| {
        format!(
            "berth binary {} (build it: cargo build --release -p berth)",
            ctx.cli.berth.display()
        )
    })?;
    let distribution = (!ctx.cli.no_distribution
        && ctx.cli.distribution_url.is_none()
        && ctx.cli.distribution.exists())
    .then_some(ctx.cli.distribution.as_path());
    let env = crate::limits::Env {
        berth: &berth,
        distribution,
        work: ctx.work.join("limits"),
        quick: ctx.plan.quick,
        config: ctx.config.clone(),
        layer: ctx.layer.clone(),
        nonce: ctx.nonce,
        // `--only limits:silent,limits:logins`: those loads only.
        loads: parts_of(&ctx.cli, "limits"),
    };
    crate::limits::run(&env, &mut ctx.m).await
}

/// The scan scenario (scan.rs), on a berth it starts itself.
async fn scan(ctx: &mut Ctx) -> anyhow::Result<()> {
    if ctx.cli.berth_url.is_some() {
        ctx.m
            .note("scan: skipped (it starts a berth of its own, to sample its RSS: give --berth)");
        return Ok(());
    }
    let berth = ctx.cli.berth.canonicalize().with_context(|| {
        format!(
            "berth binary {} (build it: cargo build --release -p berth)",
            ctx.cli.berth.display()
        )
    })?;
    let env = crate::scan::Env {
        berth: &berth,
        work: ctx.work.join("scan"),
        plan: crate::scan::Plan::new(ctx.plan.quick, ctx.plan.runs),
        syft: crate::scan::find_syft(ctx.cli.syft.as_deref()),
    };
    let result = crate::scan::run(&env, &mut ctx.m).await;
    // Its image files are large: leave the disk as it was (unless --keep).
    if !ctx.cli.keep {
        let _ = std::fs::remove_dir_all(&env.work);
    }
    result
}

/// The vulndb scenario (vulndb.rs), in the benchmark's own process.
async fn vulndb(ctx: &mut Ctx) -> anyhow::Result<()> {
    let env = crate::vulndb::Env {
        work: ctx.work.join("vulndb"),
        plan: crate::vulndb::Plan::new(ctx.plan.quick),
        postgres_url: ctx
            .cli
            .postgres_url
            .clone()
            .filter(|u| !u.trim().is_empty()),
        nonce: ctx.nonce,
    };
    let result = crate::vulndb::run(&env, &mut ctx.m).await;
    // Its sources and database are large: leave the disk as it was (unless --keep).
    if !ctx.cli.keep {
        let _ = std::fs::remove_dir_all(&env.work);
    }
    result
}

fn write_json(ctx: &Ctx, rows: &[Row], pg_rows: Option<serde_json::Value>) -> anyhow::Result<()> {
    let raw: serde_json::Map<String, serde_json::Value> = ctx
        .m
        .values
        .iter()
        .map(|(id, by)| (id.clone(), serde_json::json!(by)))
        .collect();
    let errors: serde_json::Map<String, serde_json::Value> = ctx
        .m
        .errors
        .iter()
        .map(|(who, s)| {
            (
                who.clone(),
                serde_json::json!(
                    s.iter()
                        .map(|(k, (n, samples))| (
                            k.clone(),
                            serde_json::json!({ "count": n, "samples": samples })
                        ))
                        .collect::<serde_json::Map<_, _>>()
                ),
            )
        })
        .collect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    let out = serde_json::json!({
        "tool": "berth-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "plan": ctx.plan.json(),
        "limits_plan": crate::limits::Plan::new(ctx.plan.quick).json(),
        "postgres_plan": crate::postgres::Plan::new(ctx.plan.quick, ctx.plan.runs).json(),
        "scan_plan": crate::scan::Plan::new(ctx.plan.quick, ctx.plan.runs).json(),
        "vulndb_plan": crate::vulndb::Plan::new(ctx.plan.quick).json(),
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": cpu,
        },
        "monolithic_upload": ctx.systems.iter().map(|s| (s.who.to_owned(), serde_json::json!(s.mono.describe()))).collect::<serde_json::Map<_, _>>(),
        "rows": report::rows_json(rows),
        "postgres_rows": pg_rows,
        "runs": raw,
        "errors": errors,
        "notes": ctx.m.notes,
    });
    if let Some(dir) = ctx.cli.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&ctx.cli.json, serde_json::to_vec_pretty(&out)?)
        .with_context(|| format!("writing {}", ctx.cli.json.display()))?;
    progress(format!("results written to {}", ctx.cli.json.display()));
    Ok(())
}

/// The table: one row per figure, with its references and target.
fn rows(ctx: &Ctx) -> Vec<Row> {
    let m = &ctx.m;
    let p = &ctx.plan;
    let judge = !p.quick;
    let mut rows = Vec::new();
    let med = |id: &str, who: &str| m.median(id, who);
    let big = if p.big >= 1 << 30 {
        format!("{} GiB", p.big >> 30)
    } else {
        format!("{} MiB", p.big >> 20)
    };
    let has_dist = ctx.systems.iter().any(|s| s.who == DIST);
    let dist = |id: &str| -> Cell {
        if has_dist {
            med(id, DIST).into()
        } else {
            Cell::None
        }
    };
    let mut add = |section: &'static str,
                   id: &str,
                   label: String,
                   berth: Cell,
                   dist: Cell,
                   reference: Cell,
                   reference_what: &str,
                   target: &str,
                   met: Option<bool>| {
        rows.push(Row {
            section,
            id: id.to_owned(),
            label,
            berth,
            dist,
            reference,
            reference_what: reference_what.to_owned(),
            target: target.to_owned(),
            met: if judge { met } else { None },
        });
    };
    let ge = |a: Option<f64>, k: f64, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a >= k * b),
        _ => None,
    };
    let le = |a: Option<f64>, k: f64, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a <= k * b),
        _ => None,
    };

    // Machine and durable push.
    let s = "machine references and durable push";
    let sha = med("sha256", MACHINE);
    let dd = med("durable_write", MACHINE);
    let floor = match (sha, dd) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => None,
    };
    add(
        s,
        "sha256",
        "SHA-256, one core (sha2), MiB/s".into(),
        Cell::None,
        Cell::None,
        sha.into(),
        "machine",
        "",
        None,
    );
    add(
        s,
        "durable_write",
        format!(
            "durable write (dd {big} conv=fdatasync, better of buffered and oflag=direct), MiB/s"
        ),
        Cell::None,
        Cell::None,
        dd.into(),
        "machine",
        "",
        None,
    );
    for (id, what) in [
        ("push_mono", "monolithic"),
        ("push_chunked", "chunked, 16 MiB PATCHes"),
    ] {
        let b = med(id, BERTH);
        add(
            s,
            id,
            format!("push {big} {what}, MiB/s"),
            b.into(),
            dist(id),
            floor.into(),
            "min(SHA-256, dd)",
            "≥ 0.8 × reference",
            ge(b, 0.8, floor),
        );
    }
    // The benchmark's own minimal receivers: the least a durable push costs here.
    for (id, how) in [
        ("push_mono", "monolithic"),
        ("push_chunked", "chunked, an fdatasync per PATCH"),
    ] {
        for (who, what) in [
            (REF_SINK_HASH, "receive + SHA-256, no disk"),
            (
                REF_SINK_DISK,
                "receive + SHA-256 + direct write + fdatasync",
            ),
        ] {
            let r = med(id, who);
            if r.is_some() {
                add(
                    s,
                    &format!("{id}_{who}"),
                    format!("minimal receiver ({what}), push {big} {how}, MiB/s"),
                    Cell::None,
                    Cell::None,
                    r.into(),
                    "minimal receiver",
                    "",
                    None,
                );
            }
        }
        let durable_ref = med(id, REF_SINK_DISK);
        if durable_ref.is_some() {
            let b = med(id, BERTH);
            add(
                s,
                &format!("{id}_vs_minimal"),
                format!("push {big} {how}, vs the minimal durable receiver, MiB/s"),
                b.into(),
                dist(id),
                durable_ref.into(),
                "minimal durable receiver",
                "≥ 0.8 × reference",
                ge(b, 0.8, durable_ref),
            );
        }
    }
    let tls_push = med("push_mono_tls", BERTH);
    if tls_push.is_some() {
        add(
            s,
            "push_mono_tls",
            format!("push {big} monolithic over TLS (one run), MiB/s"),
            tls_push.into(),
            Cell::None,
            med("push_mono", BERTH).into(),
            "berth over HTTP",
            "",
            None,
        );
    }

    let s = "pull of the large blob";
    for streams in [1, 4] {
        for verify in [false, true] {
            let id = format!("pull_{streams}_{}", if verify { "verified" } else { "raw" });
            let what = format!(
                "{streams} stream{}, {}",
                if streams > 1 { "s" } else { "" },
                if verify { "digest verified" } else { "raw" }
            );
            let b = med(&id, BERTH);
            let n = med(&id, NGINX);
            add(
                s,
                &id,
                format!("pull {big}, {what}, MiB/s"),
                b.into(),
                dist(&id),
                n.into(),
                "nginx",
                "≥ 1.2 × nginx",
                ge(b, 1.2, n),
            );
            let r = med(&id, REF_FILES);
            if r.is_some() {
                add(
                    s,
                    &format!("{id}_vs_minimal"),
                    format!("pull {big}, {what}, vs the minimal file server (1 MiB reads), MiB/s"),
                    b.into(),
                    dist(&id),
                    r.into(),
                    "minimal server",
                    "",
                    None,
                );
            }
        }
    }
    for streams in [1, 4] {
        for verify in [false, true] {
            let id = format!("pull_{streams}_{}", if verify { "verified" } else { "raw" });
            let what = format!(
                "{streams} stream{}, {}",
                if streams > 1 { "s" } else { "" },
                if verify { "digest verified" } else { "raw" }
            );
            let t = med(&id, "berth-tls");
            let h = med(&id, BERTH);
            let (rt, rh) = (med(&id, REF_FILES_TLS), med(&id, REF_FILES));
            if let (Some(rt_v), Some(rh_v)) = (rt, rh) {
                // What TLS costs on this machine, with no registry around it: the benchmark's
                // minimal file server, over TLS against over HTTP.
                add(
                    s,
                    &format!("{id}_tls_minimal"),
                    format!("minimal file server over TLS, {what}, MiB/s"),
                    Cell::None,
                    Cell::None,
                    rt.into(),
                    "minimal server",
                    &format!("(its TLS/HTTP: {:.2}×)", rt_v / rh_v),
                    None,
                );
            }
            if t.is_some() {
                add(
                    s,
                    &format!("{id}_tls"),
                    format!("pull {big} over TLS, {what}, MiB/s"),
                    t.into(),
                    Cell::None,
                    h.into(),
                    "berth over HTTP",
                    "≥ 0.7 × HTTP",
                    ge(t, 0.7, h),
                );
            }
            if t.is_some() && rt.is_some() {
                add(
                    s,
                    &format!("{id}_tls_vs_minimal"),
                    format!("pull {big} over TLS, {what}, vs the minimal TLS server, MiB/s"),
                    t.into(),
                    Cell::None,
                    rt.into(),
                    "minimal TLS server",
                    "≥ 0.9 × reference",
                    ge(t, 0.9, rt),
                );
            }
        }
    }
    let nsf = med("pull_1_raw", "nginx-sendfile");
    if nsf.is_some() {
        add(
            s,
            "pull_1_raw_sendfile",
            "pull, 1 stream, raw, vs nginx with sendfile on (Debian's nginx.conf), MiB/s".into(),
            med("pull_1_raw", BERTH).into(),
            dist("pull_1_raw"),
            nsf.into(),
            "nginx sendfile",
            "",
            None,
        );
    }

    let s = "4 KiB blobs, concurrency 16";
    for (op, what) in [
        ("small_push", "push"),
        ("small_pull", "pull (digest verified)"),
    ] {
        let id = format!("{op}_ops");
        let b = med(&id, BERTH);
        let d = med(&id, DIST);
        add(
            s,
            &id,
            format!("{} × 4 KiB {what}, ops/s", p.small_n),
            b.into(),
            dist(&id),
            Cell::None,
            "",
            "≥ 5 × distribution",
            ge(b, 5.0, d),
        );
        for q in ["p50", "p99"] {
            let id = format!("{op}_{q}");
            add(
                s,
                &id,
                format!("4 KiB {what}, {q} ms"),
                med(&id, BERTH).into(),
                dist(&id),
                Cell::None,
                "",
                "",
                None,
            );
        }
    }

    let s = "manifests";
    for (op, what) in [("man_put", "PUT by tag"), ("man_get", "GET by digest")] {
        for q in ["p50", "p99"] {
            let id = format!("{op}_{q}");
            add(
                s,
                &id,
                format!("{} manifests {what}, one at a time, {q} ms", p.manifests_n),
                med(&id, BERTH).into(),
                dist(&id),
                Cell::None,
                "",
                "",
                None,
            );
        }
    }
    let b = med("hot_rps", BERTH);
    let d = med("hot_rps", DIST);
    let n = med("hot_rps", NGINX);
    let met = match (ge(b, 0.5, n), ge(b, 10.0, d)) {
        (Some(x), Some(y)) => Some(x && y),
        _ => None,
    };
    add(
        s,
        "hot_rps",
        format!(
            "manifest GET by tag, c{}, {} s, req/s",
            p.hot_conc,
            p.hot_duration.as_secs()
        ),
        b.into(),
        dist("hot_rps"),
        n.into(),
        "nginx, same bytes",
        "≥ 0.5 × nginx and ≥ 10 × distribution",
        met,
    );
    let b99 = med("hot_p99", BERTH);
    add(
        s,
        "hot_p99",
        format!("manifest GET by tag, c{}, p99 ms", p.hot_conc),
        b99.into(),
        dist("hot_p99"),
        med("hot_p99", NGINX).into(),
        "nginx",
        "≤ 5 ms",
        b99.map(|v| v <= 5.0),
    );

    let s = "tags/list";
    add(
        s,
        "tags_put_ops",
        format!("pushing {} tags (c16), tags/s", p.tags_n),
        med("tags_put_ops", BERTH).into(),
        dist("tags_put_ops"),
        Cell::None,
        "",
        "",
        None,
    );
    add(
        s,
        "tags_page_p50",
        format!(
            "{} tags, paginated n={}, per page p50 ms",
            p.tags_n, p.tags_page
        ),
        med("tags_page_p50", BERTH).into(),
        dist("tags_page_p50"),
        Cell::None,
        "",
        "",
        None,
    );
    let b = med("tags_page_p99", BERTH);
    add(
        s,
        "tags_page_p99",
        format!(
            "{} tags, paginated n={}, per page p99 ms",
            p.tags_n, p.tags_page
        ),
        b.into(),
        dist("tags_page_p99"),
        Cell::None,
        "",
        "< 5 ms",
        b.map(|v| v < 5.0),
    );
    add(
        s,
        "tags_walk_ms",
        format!("{} tags, paginated, whole walk ms", p.tags_n),
        med("tags_walk_ms", BERTH).into(),
        dist("tags_walk_ms"),
        Cell::None,
        "",
        "",
        None,
    );
    for q in ["p50", "p99"] {
        let id = format!("tags_whole_{q}");
        add(
            s,
            &id,
            format!("{} tags, whole list in one request, {q} ms", p.tags_n),
            med(&id, BERTH).into(),
            dist(&id),
            Cell::None,
            "",
            "",
            None,
        );
    }

    let s = "mixed load";
    let sizes = p.mixed_sizes.map(|x| (x >> 20).to_string()).join("/");
    let what = format!(
        "75 % pull / 25 % push of {sizes} MiB, c{}, {} s",
        p.mixed_conc,
        p.mixed_duration.as_secs()
    );
    add(
        s,
        "mixed_ops",
        format!("{what}, ops/s"),
        med("mixed_ops", BERTH).into(),
        dist("mixed_ops"),
        Cell::None,
        "",
        "",
        None,
    );
    add(
        s,
        "mixed_mibs",
        format!("{what}, MiB/s"),
        med("mixed_mibs", BERTH).into(),
        dist("mixed_mibs"),
        Cell::None,
        "",
        "",
        None,
    );
    add(
        s,
        "mixed_pull_p99",
        "mixed load, pull p99 ms".into(),
        med("mixed_pull_p99", BERTH).into(),
        dist("mixed_pull_p99"),
        Cell::None,
        "",
        "",
        None,
    );
    add(
        s,
        "mixed_push_p99",
        "mixed load, push p99 ms".into(),
        med("mixed_push_p99", BERTH).into(),
        dist("mixed_push_p99"),
        Cell::None,
        "",
        "",
        None,
    );

    let s = "garbage collection";
    let na = || {
        if has_dist {
            Cell::Text("n/a (offline GC only)".into())
        } else {
            Cell::None
        }
    };
    let idle = med("gc_idle_p99", BERTH);
    let during = med("gc_during_p99", BERTH);
    add(
        s,
        "gc_idle_p99",
        "4 KiB pull c4, idle, p99 ms".into(),
        idle.into(),
        na(),
        Cell::None,
        "",
        "",
        None,
    );
    add(
        s,
        "gc_during_p99",
        "4 KiB pull c4, during a GC run, p99 ms".into(),
        during.into(),
        na(),
        idle.into(),
        "berth idle",
        "≤ 2 × idle",
        le(during, 2.0, idle),
    );
    add(
        s,
        "gc_secs",
        format!("GC run collecting {} blobs, s", p.gc_garbage),
        med("gc_secs", BERTH).into(),
        na(),
        Cell::None,
        "",
        "",
        None,
    );
    add(
        s,
        "gc_deleted_blobs",
        "blobs the GC run deleted".into(),
        med("gc_deleted_blobs", BERTH).into(),
        na(),
        Cell::None,
        "",
        "",
        None,
    );

    let s = "start-up and memory";
    add(
        s,
        "startup_empty",
        "start-up to first 200 on /v2/, empty, ms".into(),
        med("startup_empty", BERTH).into(),
        dist("startup_empty"),
        Cell::None,
        "",
        "",
        None,
    );
    add(
        s,
        "startup_put_ops",
        format!("creating {} manifests (c16), manifests/s", p.startup_n),
        med("startup_put_ops", BERTH).into(),
        dist("startup_put_ops"),
        Cell::None,
        "",
        "",
        None,
    );
    let b = med("startup_loaded", BERTH);
    add(
        s,
        "startup_loaded",
        format!(
            "start-up to first 200 on /v2/, {} manifests, ms",
            p.startup_n
        ),
        b.into(),
        dist("startup_loaded"),
        Cell::None,
        "",
        "< 1000 ms",
        b.map(|v| v < 1000.0),
    );
    let b = med("rss_idle", BERTH);
    add(
        s,
        "rss_idle",
        "idle RSS after start, MiB".into(),
        b.into(),
        dist("rss_idle"),
        Cell::None,
        "",
        "≤ 15 MiB",
        b.map(|v| v <= 15.0),
    );
    add(
        s,
        "rss_idle_loaded",
        format!("idle RSS after start with {} manifests, MiB", p.startup_n),
        med("rss_idle_loaded", BERTH).into(),
        dist("rss_idle_loaded"),
        Cell::None,
        "",
        "",
        None,
    );
    for (id, what) in [
        ("rss_push", "push"),
        ("rss_pull", "pull (1 and 4 streams)"),
        ("rss_small", "4 KiB blobs"),
        ("rss_manifests", "manifests (incl. c64 GET)"),
        ("rss_tags", "tags/list"),
        ("rss_mixed", "mixed load"),
        ("rss_startup_put", "creating the start-up manifests"),
        ("rss_gc", "GC run (GC instance)"),
    ] {
        let b = m.max(id, BERTH);
        let d = if has_dist { m.max(id, DIST) } else { None };
        if b.is_none() && d.is_none() {
            continue;
        }
        let dcell = if id == "rss_gc" { na() } else { d.into() };
        let (target, met) = if id == "rss_gc" {
            ("", None)
        } else {
            ("≤ 0.5 × distribution", le(b, 0.5, d))
        };
        add(
            s,
            id,
            format!("peak RSS under {what}, MiB"),
            b.into(),
            dcell,
            Cell::None,
            "",
            target,
            met,
        );
    }
    rows.extend(crate::limits::rows(m, p.quick, judge));
    rows.extend(crate::scan::rows(m, p.quick, p.runs, judge));
    rows.extend(crate::vulndb::rows(m, p.quick, judge));
    if !ctx.cli.only.is_empty() {
        // The scenarios left out have no figures: leave their rows out too.
        rows.retain(|r| {
            !matches!(
                (&r.berth, &r.dist, &r.reference),
                (Cell::None, Cell::None, Cell::None)
            )
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dd_output_parses() {
        let text = "512+0 records in\n512+0 records out\n536870912 bytes (537 MB, 512 MiB) copied, 2.5 s, 215 MB/s\n";
        let rate = parse_dd(text).unwrap();
        assert!((rate - 204.8).abs() < 0.01, "{rate}");
        assert!(parse_dd("garbage").is_none());
    }

    #[test]
    fn only_loopback_urls() {
        assert!(loopback("http://127.0.0.1:5000").is_ok());
        assert!(loopback("http://10.0.0.1:5000").is_err());
        assert!(loopback("https://127.0.0.1:5000").is_err());
    }
}
