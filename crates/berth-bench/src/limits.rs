//! The `limits` scenario: berth under the loads its limits exist for (README, "Limits"):
//! silent connections, slowloris, thousands of upload sessions and slow streaming PATCHes
//! beyond the upload buffer budget, and a flood of wrong passwords from many addresses while
//! real users log in for the first time.
//!
//! Each load runs against a berth of its own (the release binary, started here) and is measured
//! beside an idle baseline of the same process: its RSS (VmRSS, and the peak VmHWM over the
//! load), its open file descriptors (entries of /proc/<pid>/fd), and the latency of
//! `GET /healthz` and of a manifest + 4 KiB blob pull, each from a fresh connection, repeated
//! during the load and after it, with any of them that failed. The connection counters of
//! `/metrics` are read before and after.
//!
//! Attack connections come from many 127.x.y.z source addresses (Linux routes all of
//! 127.0.0.0/8 to the loopback device), as an attack from many hosts would: the per-address
//! cap alone cannot stop it. The probes come from 127.0.0.1, which no load uses. Every load is
//! bounded in count and time; nothing is asserted.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::data::{Blob, sha256_hex};
use crate::http::{Conn, Endpoint, ReqBody, Resp, connect_from};
use crate::ops::{self, Monolithic};
use crate::report::{BERTH, Cell, DIST, Metrics, Row};
use crate::servers::{self, Server};
use crate::stats::{Rng, Tally, ms, percentile};

/// A probe that takes longer than this has failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Attack connections being set up at once (the listener's backlog is 1,024).
const CONNECT_CONCURRENCY: usize = 256;
/// How often RSS, descriptors and the open-connections gauge are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// The repository the probes pull from.
const REPO: &str = "bench/limits";
/// Names the password flood tries (existing or not, each costs berth one argon2 check).
const GUESSED_NAMES: [&str; 8] = [
    "admin", "root", "ci", "deploy", "jenkins", "gitlab", "user", "test",
];

/// Sizes, counts and durations of one mode.
#[derive(Debug, Clone)]
pub struct Plan {
    quick: bool,
    /// `server.header_read_timeout` of every instance (lowered so the runs are short).
    header_timeout: Duration,
    /// A connection the server has not closed this long after the header timeout is "still
    /// open" (and closed by the client).
    hold_past: Duration,
    /// `server.max_connections` and `_per_address`, when lowered (quick mode: so that a few
    /// hundred connections reach them); `None`: berth's defaults.
    caps: Option<(usize, usize)>,
    silent_n: usize,
    silent_addrs: usize,
    /// Silent connections from one more address, beyond the per-address cap.
    silent_one_addr: usize,
    slowloris_n: usize,
    slowloris_addrs: usize,
    slowloris_every: Duration,
    sessions_n: usize,
    sessions_conc: usize,
    patch_n: usize,
    patch_addrs: usize,
    /// `limits.upload_buffer_memory` of the upload instance, MiB.
    patch_budget_mib: u64,
    patch_pieces: usize,
    patch_piece: usize,
    patch_every: Duration,
    flood_workers: usize,
    flood_every: Duration,
    flood_duration: Duration,
    real_logins: usize,
    idle_logins: usize,
    idle: Duration,
    after: Duration,
    probe_every: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                header_timeout: Duration::from_secs(1),
                hold_past: Duration::from_secs(1),
                caps: Some((200, 32)),
                silent_n: 250,
                silent_addrs: 10,
                silent_one_addr: 50,
                slowloris_n: 150,
                slowloris_addrs: 10,
                slowloris_every: Duration::from_millis(300),
                sessions_n: 200,
                sessions_conc: 8,
                patch_n: 24,
                patch_addrs: 4,
                patch_budget_mib: 8,
                patch_pieces: 7,
                patch_piece: 1024,
                patch_every: Duration::from_secs(1),
                flood_workers: 20,
                flood_every: Duration::from_millis(100),
                flood_duration: Duration::from_secs(2),
                real_logins: 2,
                idle_logins: 1,
                idle: Duration::from_millis(400),
                after: Duration::from_millis(400),
                probe_every: Duration::from_millis(50),
            }
        } else {
            Plan {
                quick,
                header_timeout: Duration::from_secs(5),
                hold_past: Duration::from_secs(15),
                caps: None,
                silent_n: 19_000,
                silent_addrs: 100,
                silent_one_addr: 1_000,
                slowloris_n: 3_000,
                slowloris_addrs: 30,
                slowloris_every: Duration::from_millis(1500),
                sessions_n: 5_000,
                sessions_conc: 16,
                patch_n: 300,
                patch_addrs: 30,
                patch_budget_mib: 64,
                patch_pieces: 11,
                patch_piece: 1024,
                patch_every: Duration::from_secs(1),
                flood_workers: 200,
                flood_every: Duration::from_millis(100),
                flood_duration: Duration::from_secs(20),
                real_logins: 10,
                idle_logins: 3,
                idle: Duration::from_secs(3),
                after: Duration::from_secs(3),
                probe_every: Duration::from_millis(50),
            }
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": if self.quick { "quick" } else { "full" },
            "header_read_timeout_seconds": self.header_timeout.as_secs_f64(),
            "max_connections": self.caps.map(|c| c.0),
            "max_connections_per_address": self.caps.map(|c| c.1),
            "silent_connections": self.silent_n,
            "silent_addresses": self.silent_addrs,
            "silent_from_one_address": self.silent_one_addr,
            "slowloris_connections": self.slowloris_n,
            "slowloris_addresses": self.slowloris_addrs,
            "slowloris_byte_every_seconds": self.slowloris_every.as_secs_f64(),
            "upload_sessions": self.sessions_n,
            "slow_patches": self.patch_n,
            "upload_buffer_memory_mib": self.patch_budget_mib,
            "patch_bytes": self.patch_pieces * self.patch_piece,
            "patch_piece_every_seconds": self.patch_every.as_secs_f64(),
            "login_flood_addresses": self.flood_workers,
            "login_flood_every_seconds": self.flood_every.as_secs_f64(),
            "login_flood_seconds": self.flood_duration.as_secs_f64(),
            "real_logins_during_flood": self.real_logins,
            "probe_every_seconds": self.probe_every.as_secs_f64(),
        })
    }

    /// Environment of every instance: the lowered header timeout (and caps, quick mode),
    /// warnings in the log, and the listener's "listening" line, which states the caps.
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let timeout = format!("{}ms", self.header_timeout.as_millis());
        let caps = self.caps.map(|(t, a)| (t.to_string(), a.to_string()));
        let mut env: Vec<(&str, &str)> = vec![
            ("BERTH_SERVER__HEADER_READ_TIMEOUT", &timeout),
            ("BERTH_LOG__LEVEL", "warn"),
            ("RUST_LOG", "warn,berth_server::listener=info"),
        ];
        if let Some((t, a)) = &caps {
            env.push(("BERTH_SERVER__MAX_CONNECTIONS", t));
            env.push(("BERTH_SERVER__MAX_CONNECTIONS_PER_ADDRESS", a));
        }
        env.extend_from_slice(extra);
        servers::berth_env(&env)
    }
}

/// What the scenario needs from the benchmark.
pub struct Env<'a> {
    pub berth: &'a Path,
    /// Distribution's binary, when it is to be measured under silent connections too.
    pub distribution: Option<&'a Path>,
    pub work: PathBuf,
    pub quick: bool,
    /// The small config and layer blobs the probe's manifest references.
    pub config: Blob,
    pub layer: Blob,
    pub nonce: u64,
    /// The loads to run (`silent`, `slowloris`, `uploads`, `logins`); empty: all.
    pub loads: Vec<String>,
}

/// What the probes fetch, and how.
struct ProbeSpec {
    ep: Arc<Endpoint>,
    health: &'static str,
    manifest: String,
    manifest_len: usize,
    blob: String,
    blob_digest: String,
    /// `Authorization` header of the pulls (a Bearer token when auth is on).
    auth: Option<String>,
}

/// A system under load: its process and its probes.
struct Target<'a> {
    who: &'static str,
    srv: &'a Server,
    spec: Arc<ProbeSpec>,
}

/// The probes of one phase.
#[derive(Default)]
struct Probed {
    health: Tally,
    pull: Tally,
}

/// RSS, descriptors and connections sampled over one phase.
#[derive(Default)]
struct Sampled {
    rss_max_kib: u64,
    rss_last_kib: u64,
    fds_max: u64,
    fds_last: u64,
    open_max: Option<f64>,
}

/// One phase: what the load returned, the probes and the samples.
struct Observed<T> {
    out: T,
    probes: Probed,
    sampled: Sampled,
    /// VmHWM at the end (reset at the start).
    hwm_kib: Option<u64>,
}

/// Runs the scenario: one berth per load (and Distribution under silent connections, when
/// asked), figures into `m`.
pub async fn run(env: &Env<'_>, m: &mut Metrics) -> anyhow::Result<()> {
    let plan = Plan::new(env.quick);
    raise_open_files();
    std::fs::create_dir_all(&env.work)?;
    let loads: [(&str, LoadFn); 4] = [
        ("silent", |p, e, m| Box::pin(silent(p, e, m))),
        ("slowloris", |p, e, m| Box::pin(slowloris(p, e, m))),
        ("uploads", |p, e, m| Box::pin(uploads(p, e, m))),
        ("logins", |p, e, m| Box::pin(logins(p, e, m))),
    ];
    for (name, load) in loads {
        if !env.loads.is_empty() && !env.loads.iter().any(|l| l == name) {
            continue;
        }
        let t = Instant::now();
        if let Err(e) = load(&plan, env, m).await {
            eprintln!("!! limits/{name}: {e:#}");
            m.error("bench", &format!("limits: {name}"), 1, &[format!("{e:#}")]);
        }
        progress(format!(
            "   limits/{name} took {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

type LoadFn = for<'a> fn(
    &'a Plan,
    &'a Env<'a>,
    &'a mut Metrics,
) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

fn progress(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

/// The soft open-files limit raised to the hard one: the attack holds thousands of sockets.
fn raise_open_files() {
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Descriptors this process may still open, keeping 1,000 in reserve.
fn fd_room() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    let used = servers::fds_of(std::process::id()).unwrap_or(0);
    usize::try_from(soft.saturating_sub(used).saturating_sub(1000)).unwrap_or(usize::MAX)
}

/// The kernel's TCP counters (/proc/net/netstat, TcpExt) that tell of a full listen queue.
/// System-wide: other traffic of the machine counts too (little, on loopback benchmarks).
fn kernel_counters() -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = BTreeMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some(n), Some(v)) = (
            names.strip_prefix("TcpExt:"),
            values.strip_prefix("TcpExt:"),
        ) else {
            continue;
        };
        for (k, v) in n.split_whitespace().zip(v.split_whitespace()) {
            if ["ListenOverflows", "ListenDrops", "SyncookiesSent"].contains(&k)
                && let Ok(v) = v.parse::<f64>()
            {
                out.insert(k.to_owned(), v);
            }
        }
    }
    out
}

/// The soft open-files limit of a process, from /proc/<pid>/limits.
fn open_files_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Address `i` of the attack network `net`: 127.net.(i / 250).(i % 250 + 1).
fn addr(net: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        net,
        u8::try_from(i / 250).unwrap_or(u8::MAX),
        (i % 250 + 1) as u8,
    ))
}

/// The source address of each connection, in the order they are opened: first `one` from a
/// single address of `net + 1` (at once, so that they meet the per-address cap), then `n`
/// spread round-robin over `addrs` addresses of `net`, shuffled.
fn sources(net: u8, n: usize, addrs: usize, one: usize, seed: u64) -> Vec<IpAddr> {
    let mut spread: Vec<IpAddr> = (0..n).map(|i| addr(net, i % addrs.max(1))).collect();
    let mut rng = Rng::new(seed);
    for i in (1..spread.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        spread.swap(i, j);
    }
    let mut v = vec![addr(net + 1, 0); one];
    v.extend(spread);
    v
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Starts a berth for one load; returns it with its endpoint.
async fn start_berth(
    env: &Env<'_>,
    name: &str,
    vars: Vec<(String, String)>,
    auth: bool,
) -> anyhow::Result<Server> {
    let addr = servers::free_addr()?;
    let ep = Endpoint::plain(addr);
    let dir = env.work.join(name);
    let mut srv = servers::berth(name, env.berth, &dir, addr, ep, vars)?;
    if auth {
        // /v2/ answers 401 with auth on.
        srv.ready_path = "/healthz".into();
    }
    srv.start(Duration::from_secs(60)).await?;
    Ok(srv)
}

/// Pushes the probe's config, layer and manifest (tag `probe`) into [`REPO`].
async fn seed(conn: &mut Conn, mode: Monolithic, env: &Env<'_>) -> anyhow::Result<(String, usize)> {
    ops::push_monolithic(conn, mode, REPO, &env.config).await?;
    ops::push_monolithic(conn, mode, REPO, &env.layer).await?;
    let manifest = Bytes::from(ops::manifest(&env.config, &[&env.layer], "limits"));
    ops::put_manifest(conn, REPO, "probe", &manifest).await?;
    Ok((format!("/v2/{REPO}/manifests/probe"), manifest.len()))
}

fn spec(
    ep: Arc<Endpoint>,
    health: &'static str,
    manifest: (String, usize),
    layer: &Blob,
    auth: Option<String>,
) -> Arc<ProbeSpec> {
    Arc::new(ProbeSpec {
        ep,
        health,
        manifest: manifest.0,
        manifest_len: manifest.1,
        blob: format!("/v2/{REPO}/blobs/{}", layer.digest),
        blob_digest: layer.digest.clone(),
        auth,
    })
}

async fn probe_health(spec: &ProbeSpec) -> anyhow::Result<()> {
    let mut c = Conn::new(spec.ep.clone()).with_timeout(PROBE_TIMEOUT);
    let r = c.get(spec.health, &[]).await?;
    ensure!(r.status == 200, "GET {}: {}", spec.health, r.describe());
    Ok(())
}

async fn probe_pull(spec: &ProbeSpec) -> anyhow::Result<()> {
    let mut c = Conn::new(spec.ep.clone()).with_timeout(PROBE_TIMEOUT);
    if let Some(a) = &spec.auth {
        c = c.with_header("authorization", a)?;
    }
    ops::get_manifest(&mut c, &spec.manifest, spec.manifest_len).await?;
    let r = c.get(&spec.blob, &[]).await?;
    ensure!(r.status == 200, "GET {}: {}", spec.blob, r.describe());
    let got = sha256_hex(&r.body);
    ensure!(
        got == spec.blob_digest,
        "GET {}: content hashes to {got}",
        spec.blob
    );
    Ok(())
}

/// `GET /healthz`, then a manifest and blob pull, each from a fresh connection from 127.0.0.1,
/// every `every`, until `stop`.
async fn probe_loop(spec: Arc<ProbeSpec>, every: Duration, stop: Arc<AtomicBool>) -> Probed {
    let mut p = Probed::default();
    loop {
        let s = Instant::now();
        match probe_health(&spec).await {
            Ok(()) => p.health.ok(s),
            Err(e) => p.health.fail(format!("{e:#}")),
        }
        let s = Instant::now();
        match probe_pull(&spec).await {
            Ok(()) => p.pull.ok(s),
            Err(e) => p.pull.fail(format!("{e:#}")),
        }
        if stop.load(Ordering::Relaxed) {
            return p;
        }
        tokio::time::sleep(every).await;
        if stop.load(Ordering::Relaxed) {
            return p;
        }
    }
}

/// Berth's counters from `/metrics`: `open`, `accept_errors` and each `outcome` of
/// `berth_connections_total`. Empty when the server has none (Distribution).
async fn counters(conn: &mut Conn) -> BTreeMap<String, f64> {
    match conn.get("/metrics", &[]).await {
        Ok(r) if r.status == 200 => parse_counters(&String::from_utf8_lossy(&r.body)),
        _ => BTreeMap::new(),
    }
}

fn parse_counters(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if name == "berth_connections_open" {
            out.insert("open".into(), v);
        } else if name == "berth_accept_errors_total" {
            out.insert("accept_errors".into(), v);
        } else if let Some(rest) = name.strip_prefix("berth_connections_total{outcome=\"") {
            out.insert(rest.trim_end_matches("\"}").to_owned(), v);
        }
    }
    out
}

async fn sample_loop(pid: Option<u32>, ep: Arc<Endpoint>, stop: Arc<AtomicBool>) -> Sampled {
    let mut s = Sampled::default();
    let mut conn = Conn::new(ep).with_timeout(Duration::from_secs(5));
    loop {
        if let Some(pid) = pid {
            if let Some(mem) = servers::mem_of(pid) {
                s.rss_max_kib = s.rss_max_kib.max(mem.rss_kib);
                s.rss_last_kib = mem.rss_kib;
            }
            if let Some(n) = servers::fds_of(pid) {
                s.fds_max = s.fds_max.max(n);
                s.fds_last = n;
            }
        }
        if let Some(open) = counters(&mut conn).await.get("open") {
            s.open_max = Some(s.open_max.map_or(*open, |m| m.max(*open)));
        }
        if stop.load(Ordering::Relaxed) {
            return s;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// Runs `load` while probing and sampling `t`.
async fn observe<T>(t: &Target<'_>, every: Duration, load: impl Future<Output = T>) -> Observed<T> {
    t.srv.reset_peak();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe_loop(t.spec.clone(), every, stop.clone()));
    let sampler = tokio::spawn(sample_loop(t.srv.pid(), t.spec.ep.clone(), stop.clone()));
    let out = load.await;
    stop.store(true, Ordering::Relaxed);
    let probes = prober.await.unwrap_or_default();
    let sampled = sampler.await.unwrap_or_default();
    Observed {
        out,
        probes,
        sampled,
        hwm_kib: t.srv.mem().map(|m| m.hwm_kib),
    }
}

/// Records one phase's figures under `lim_<load>[_<phase>]_*`.
fn record<T>(m: &mut Metrics, load: &str, phase: &str, who: &str, o: &Observed<T>) {
    let prefix = if phase == "during" {
        format!("lim_{load}")
    } else {
        format!("lim_{load}_{phase}")
    };
    let id = |what: &str| format!("{prefix}_{what}");
    m.add_opt(&id("health_p50"), who, o.probes.health.p(0.5));
    m.add_opt(&id("health_p99"), who, o.probes.health.p(0.99));
    m.add_opt(&id("pull_p50"), who, o.probes.pull.p(0.5));
    m.add_opt(&id("pull_p99"), who, o.probes.pull.p(0.99));
    let n = o.probes.health.count() + o.probes.pull.count();
    let failed = o.probes.health.errors + o.probes.pull.errors;
    m.add(&id("probes"), who, (n as u64 + failed) as f64);
    m.add(&id("probe_failures"), who, failed as f64);
    for (what, t) in [("/healthz", &o.probes.health), ("pull", &o.probes.pull)] {
        m.error(
            who,
            &format!("limits: {what} probes {phase} {load}"),
            t.errors,
            &t.samples,
        );
    }
    if o.sampled.rss_last_kib > 0 {
        m.add(&id("rss"), who, o.sampled.rss_last_kib as f64 / 1024.0);
        m.add(&id("rss_max"), who, o.sampled.rss_max_kib as f64 / 1024.0);
        m.add(&id("fds"), who, o.sampled.fds_last as f64);
        m.add(&id("fds_max"), who, o.sampled.fds_max as f64);
    }
    if phase == "during"
        && let Some(h) = o.hwm_kib
    {
        m.add(&id("rss_peak"), who, h as f64 / 1024.0);
    }
    m.add_opt(&id("open_max"), who, o.sampled.open_max);
    progress(format!(
        "   {who} {load} {phase}: /healthz p50 {:.2} p99 {:.2} ms, pull p50 {:.2} p99 {:.2} ms, {failed} of {} probes failed; RSS {:.1} MiB (peak {:.1}), fds {} (max {}){}",
        o.probes.health.p(0.5).unwrap_or(f64::NAN),
        o.probes.health.p(0.99).unwrap_or(f64::NAN),
        o.probes.pull.p(0.5).unwrap_or(f64::NAN),
        o.probes.pull.p(0.99).unwrap_or(f64::NAN),
        n as u64 + failed,
        o.sampled.rss_last_kib as f64 / 1024.0,
        o.hwm_kib.unwrap_or(o.sampled.rss_max_kib) as f64 / 1024.0,
        o.sampled.fds_last,
        o.sampled.fds_max,
        o.sampled
            .open_max
            .map(|v| format!(", open connections max {v}"))
            .unwrap_or_default(),
    ));
}

/// Records the change of each counter over a load as `lim_<load>_c_<counter>`.
fn record_counters(
    m: &mut Metrics,
    load: &str,
    who: &str,
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) {
    for (k, v) in after {
        if k != "open" {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            m.add(&format!("lim_{load}_c_{k}"), who, d);
        }
    }
    if !after.is_empty() {
        progress(format!(
            "   {who} {load} counters (change): {}",
            after
                .iter()
                .filter(|(k, _)| *k != "open")
                .map(|(k, v)| format!("{k} {}", v - before.get(k).copied().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

/// The warnings and errors berth logged (from byte `from` of its log), as a note.
fn log_note(m: &mut Metrics, srv: &Server, load: &str, from: usize) -> usize {
    let text = std::fs::read(srv.log_path()).unwrap_or_default();
    let new = String::from_utf8_lossy(&text[from.min(text.len())..]).into_owned();
    // What berth says at start-up (the data directory's mode, auth off) is not the load's.
    let new = match new.find("listening") {
        Some(at) => new[at..].to_owned(),
        None => new,
    };
    let bad: Vec<&str> = new
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    m.add(&format!("lim_{load}_log_warnings"), BERTH, bad.len() as f64);
    if !bad.is_empty() {
        let mut shown: Vec<String> = Vec::new();
        for l in &bad {
            let l = strip_ansi(l);
            // The message without its timestamp, once each.
            let msg = l
                .split_once("  ")
                .map_or(l.as_str(), |(_, r)| r)
                .trim()
                .to_owned();
            if !shown.contains(&msg) && shown.len() < 3 {
                shown.push(msg);
            }
        }
        m.note(format!(
            "limits/{load}: berth logged {} warning(s) or error(s), e.g. {}",
            bad.len(),
            shown.join(" | ")
        ));
    }
    text.len()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The connection cap berth states in its "listening" line (fitted to its open-files limit).
fn cap_from_log(srv: &Server) -> Option<f64> {
    let text = strip_ansi(&std::fs::read_to_string(srv.log_path()).ok()?);
    let at = text.find("max_connections=")? + "max_connections=".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Idle baseline of a freshly started target, then its process figures.
async fn baseline(m: &mut Metrics, plan: &Plan, load: &str, t: &Target<'_>) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = observe(t, plan.probe_every, tokio::time::sleep(plan.idle)).await;
    record(m, load, "idle", t.who, &o);
    if let Some(pid) = t.srv.pid()
        && let Some(n) = open_files_of(pid)
    {
        m.add(&format!("lim_{load}_nofile"), t.who, n as f64);
    }
}

/// What became of a set of attack connections, as the client saw it.
#[derive(Default, Debug)]
struct Held {
    attempted: u64,
    opened: u64,
    connect_failed: u64,
    /// Not attempted: the benchmark's own open-files limit was near.
    not_attempted: u64,
    /// Closed by the server before 90 % of the header timeout (refused, or evicted).
    closed_early: u64,
    /// Closed by the server at the header timeout (up to 1 s past it).
    closed_timeout: u64,
    /// Closed by the server later: connections the kernel completed but berth accepted late
    /// (a full listen queue drops the handshake's last ACK; the client believes it is connected
    /// until a retried SYN-ACK gets it into the queue).
    closed_late: u64,
    /// Still open from the client's side `hold_past` after the header timeout, but closed by
    /// the server within its header timeout once the client sent a byte: a handshake the
    /// kernel answered with a SYN cookie whose last ACK a full listen queue dropped, which the
    /// server knew nothing of until then.
    ghost: u64,
    /// Still open after that too: held open by the server past its header timeout.
    still_open: u64,
    /// The longest a connection stayed open before the server closed it, s.
    max_life: f64,
    samples: Vec<String>,
}

enum Fate {
    ConnectFailed(String),
    Closed(Duration),
    Ghost,
    StillOpen,
}

/// Opens one connection from each of `sources` (`CONNECT_CONCURRENCY` at a time) and holds it
/// until the server closes it or `timeout + past` passes: silent, or with `slow`, sending an
/// unfinished request one byte per `slow` (slowloris).
async fn hold(
    addr: SocketAddr,
    sources: Vec<IpAddr>,
    timeout: Duration,
    past: Duration,
    slow: Option<Duration>,
) -> Held {
    let room = fd_room();
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let mut held = Held::default();
    for src in sources {
        held.attempted += 1;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        if open.load(Ordering::Relaxed) >= room {
            held.not_attempted += 1;
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let open = open.clone();
        tasks.spawn(async move {
            let fate = one_connection(addr, src, permit, timeout, past, slow).await;
            open.fetch_sub(1, Ordering::Relaxed);
            fate
        });
    }
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Fate::ConnectFailed(e)) => {
                held.connect_failed += 1;
                if held.samples.len() < 3 {
                    held.samples.push(e);
                }
            }
            Ok(Fate::Closed(life)) => {
                held.opened += 1;
                let s = life.as_secs_f64();
                held.max_life = held.max_life.max(s);
                let t = timeout.as_secs_f64();
                if s < 0.9 * t {
                    held.closed_early += 1;
                } else if s <= t + 1.0 {
                    held.closed_timeout += 1;
                } else {
                    held.closed_late += 1;
                }
            }
            Ok(Fate::Ghost) => {
                held.opened += 1;
                held.ghost += 1;
            }
            Ok(Fate::StillOpen) => {
                held.opened += 1;
                held.still_open += 1;
            }
            Err(e) => {
                held.connect_failed += 1;
                if held.samples.len() < 3 {
                    held.samples.push(format!("task failed: {e}"));
                }
            }
        }
    }
    held
}

async fn one_connection(
    addr: SocketAddr,
    src: IpAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    timeout: Duration,
    past: Duration,
    slow: Option<Duration>,
) -> Fate {
    let stream =
        match tokio::time::timeout(Duration::from_secs(10), connect_from(addr, Some(src))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Fate::ConnectFailed(format!("connect from {src}: {e}")),
            Err(_) => return Fate::ConnectFailed(format!("connect from {src}: timed out")),
        };
    drop(permit);
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout + past;
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = [0u8; 1024];
    let mut tick = slow.map(tokio::time::interval);
    let mut started = false;
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Fate::Closed(start.elapsed()),
                Ok(_) => {}
            },
            () = tokio::time::sleep_until(deadline) => break,
            _ = async {
                match tick.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                let bytes: &[u8] = if started {
                    b"a"
                } else {
                    started = true;
                    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
                };
                if wr.write_all(bytes).await.is_err() {
                    return Fate::Closed(start.elapsed());
                }
            }
        }
    }
    // Open as far as the client can tell. A handshake answered with a SYN cookie whose last
    // ACK a full listen queue dropped leaves no state at the server: the connection exists
    // only here. A byte sent on it completes it (the cookie is still valid), the server
    // accepts it only now, and closes it within its header timeout; a connection the server
    // has held open all along would stay open.
    if wr.write_all(b"\r").await.is_err() {
        return Fate::Ghost;
    }
    let closed = async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(timeout + Duration::from_secs(1), closed).await {
        Ok(()) => Fate::Ghost,
        Err(_) => Fate::StillOpen,
    }
}

fn record_held(m: &mut Metrics, load: &str, who: &str, h: &Held) {
    for (what, v) in [
        ("attempted", h.attempted),
        ("opened", h.opened),
        ("connect_failed", h.connect_failed),
        ("not_attempted", h.not_attempted),
        ("closed_early", h.closed_early),
        ("closed_timeout", h.closed_timeout),
        ("closed_late", h.closed_late),
        ("ghost", h.ghost),
        ("still_open", h.still_open),
    ] {
        m.add(&format!("lim_{load}_{what}"), who, v as f64);
    }
    if h.opened > h.still_open {
        m.add(&format!("lim_{load}_max_life"), who, h.max_life);
    }
    progress(format!("   {who} {load}: {h:?}"));
}

/// The change of the kernel's listen-queue counters since `before`, as `lim_<load>_k_<name>`.
fn record_kernel(m: &mut Metrics, load: &str, who: &str, before: &BTreeMap<String, f64>) {
    let now = kernel_counters();
    let mut shown = Vec::new();
    for (k, v) in &now {
        let d = v - before.get(k).copied().unwrap_or(0.0);
        m.add(&format!("lim_{load}_k_{k}"), who, d);
        shown.push(format!("{k} {d}"));
    }
    progress(format!(
        "   {who} {load} kernel (change): {}",
        shown.join(", ")
    ));
}

/// Silent connections, against berth and (when asked) Distribution.
async fn silent(plan: &Plan, env: &Env<'_>, m: &mut Metrics) -> anyhow::Result<()> {
    let load = "silent";
    progress(format!(
        "   silent connections: {} from {} addresses and {} from one, header timeout {:?}",
        plan.silent_n, plan.silent_addrs, plan.silent_one_addr, plan.header_timeout
    ));
    let mut srv = start_berth(env, "limits-silent", plan.env(&[]), false).await?;
    if let Some(cap) = cap_from_log(&srv) {
        m.add("lim_cap", BERTH, cap);
    }
    let mut conn = Conn::new(srv.endpoint.clone());
    let manifest = seed(&mut conn, Monolithic::Post, env).await?;
    let t = Target {
        who: BERTH,
        srv: &srv,
        spec: spec(srv.endpoint.clone(), "/healthz", manifest, &env.layer, None),
    };
    silent_on(plan, env, m, &t, &mut conn).await?;
    log_note(m, &srv, load, 0);
    srv.check_alive()?;
    srv.stop(Duration::from_secs(30)).await?;

    if let Some(bin) = env.distribution {
        let addr = servers::free_addr()?;
        let mut d = servers::distribution(bin, &env.work.join("limits-distribution"), addr)?;
        d.start(Duration::from_secs(60)).await?;
        let mut conn = Conn::new(d.endpoint.clone());
        let probe_blob = env.config.clone();
        let mode = ops::probe_monolithic(&mut conn, REPO, &probe_blob).await?;
        let manifest = seed(&mut conn, mode, env).await?;
        // Distribution has no /healthz: /v2/ answers 200 without auth.
        let t = Target {
            who: DIST,
            srv: &d,
            spec: spec(d.endpoint.clone(), "/v2/", manifest, &env.layer, None),
        };
        silent_on(plan, env, m, &t, &mut conn).await?;
        d.check_alive()?;
        d.stop(Duration::from_secs(30)).await?;
    }
    Ok(())
}

async fn silent_on(
    plan: &Plan,
    env: &Env<'_>,
    m: &mut Metrics,
    t: &Target<'_>,
    conn: &mut Conn,
) -> anyhow::Result<()> {
    let load = "silent";
    baseline(m, plan, load, t).await;
    let before = counters(conn).await;
    let srcs = sources(
        10,
        plan.silent_n,
        plan.silent_addrs,
        plan.silent_one_addr,
        env.nonce,
    );
    let kernel = kernel_counters();
    let o = observe(
        t,
        plan.probe_every,
        hold(
            t.spec.ep.addr,
            srcs,
            plan.header_timeout,
            plan.hold_past,
            None,
        ),
    )
    .await;
    record(m, load, "during", t.who, &o);
    record_held(m, load, t.who, &o.out);
    record_kernel(m, load, t.who, &kernel);
    let a = observe(t, plan.probe_every, tokio::time::sleep(plan.after)).await;
    record(m, load, "after", t.who, &a);
    record_counters(m, load, t.who, &before, &counters(conn).await);
    Ok(())
}

async fn slowloris(plan: &Plan, env: &Env<'_>, m: &mut Metrics) -> anyhow::Result<()> {
    let load = "slowloris";
    progress(format!(
        "   slowloris: {} connections from {} addresses, a header byte every {:?}, header timeout {:?}",
        plan.slowloris_n, plan.slowloris_addrs, plan.slowloris_every, plan.header_timeout
    ));
    let mut srv = start_berth(env, "limits-slowloris", plan.env(&[]), false).await?;
    let mut conn = Conn::new(srv.endpoint.clone());
    let manifest = seed(&mut conn, Monolithic::Post, env).await?;
    let t = Target {
        who: BERTH,
        srv: &srv,
        spec: spec(srv.endpoint.clone(), "/healthz", manifest, &env.layer, None),
    };
    baseline(m, plan, load, &t).await;
    let before = counters(&mut conn).await;
    let srcs = sources(12, plan.slowloris_n, plan.slowloris_addrs, 0, env.nonce ^ 1);
    let kernel = kernel_counters();
    let o = observe(
        &t,
        plan.probe_every,
        hold(
            srv.endpoint.addr,
            srcs,
            plan.header_timeout,
            plan.hold_past,
            Some(plan.slowloris_every),
        ),
    )
    .await;
    record(m, load, "during", BERTH, &o);
    record_held(m, load, BERTH, &o.out);
    record_kernel(m, load, BERTH, &kernel);
    let a = observe(&t, plan.probe_every, tokio::time::sleep(plan.after)).await;
    record(m, load, "after", BERTH, &a);
    record_counters(m, load, BERTH, &before, &counters(&mut conn).await);
    log_note(m, &srv, load, 0);
    srv.check_alive()?;
    srv.stop(Duration::from_secs(30)).await?;
    Ok(())
}

/// Opens `n` upload sessions (`POST /blobs/uploads/`, left unfinished) from `conc` workers, each
/// from its own address; returns their locations and the POSTs' latencies.
async fn open_sessions(ep: &Arc<Endpoint>, n: usize, conc: usize) -> (Vec<String>, Tally) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for w in 0..conc {
        let (ep, next) = (ep.clone(), next.clone());
        tasks.spawn(async move {
            let mut t = Tally::default();
            let mut locations = Vec::new();
            let mut conn = Conn::new(ep)
                .with_source(addr(20, w))
                .with_timeout(Duration::from_secs(30));
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let s = Instant::now();
                let r = conn
                    .request(
                        Method::POST,
                        &format!("/v2/{REPO}-up/blobs/uploads/"),
                        &[],
                        ReqBody::empty(),
                    )
                    .await;
                match r {
                    Ok(r) if r.status == 202 => match r.header("location") {
                        Some(l) => {
                            t.ok(s);
                            locations.push(l.to_owned());
                        }
                        None => t.fail("POST upload: 202 without Location"),
                    },
                    Ok(r) => t.fail(format!("POST upload: {}", r.describe())),
                    Err(e) => t.fail(format!("{e:#}")),
                }
            }
            (locations, t)
        });
    }
    let mut all = Tally::default();
    let mut locations = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((l, t)) => {
                locations.extend(l);
                all.merge(t);
            }
            Err(e) => all.fail(format!("worker failed: {e}")),
        }
    }
    (locations, all)
}

/// What the slow PATCHes got.
#[derive(Default, Debug)]
struct Patched {
    accepted: u64,
    refused_429: u64,
    with_retry_after: u64,
    other: u64,
    /// Seconds to the 429s.
    wait_429: Vec<f64>,
    /// Seconds to the 202s.
    took_202: Vec<f64>,
    samples: Vec<String>,
}

/// One streaming PATCH per location, all at once, each sending its body slowly.
async fn slow_patches(ep: &Arc<Endpoint>, plan: &Plan, locations: Vec<String>) -> Patched {
    let piece = Bytes::from(vec![b'x'; plan.patch_piece]);
    let mut tasks = JoinSet::new();
    for (i, loc) in locations.into_iter().enumerate() {
        let ep = ep.clone();
        let body = ReqBody::paced(
            std::iter::repeat_n(piece.clone(), plan.patch_pieces),
            plan.patch_every,
        );
        let src = addr(21, i % plan.patch_addrs.max(1));
        tasks.spawn(async move {
            let mut conn = Conn::new(ep)
                .with_source(src)
                .with_timeout(Duration::from_secs(120));
            let s = Instant::now();
            let r = conn
                .request(
                    Method::PATCH,
                    &loc,
                    &[("content-type", "application/octet-stream")],
                    body,
                )
                .await;
            (r, s.elapsed())
        });
    }
    let mut p = Patched::default();
    while let Some(r) = tasks.join_next().await {
        let sample = match r {
            Ok((Ok(r), took)) if r.status == 202 => {
                p.accepted += 1;
                p.took_202.push(took.as_secs_f64());
                None
            }
            Ok((Ok(r), took)) if r.status == 429 => {
                p.refused_429 += 1;
                p.wait_429.push(took.as_secs_f64());
                if r.header("retry-after").is_some() {
                    p.with_retry_after += 1;
                }
                None
            }
            Ok((Ok(r), _)) => Some(format!("PATCH: {}", r.describe())),
            Ok((Err(e), _)) => Some(format!("{e:#}")),
            Err(e) => Some(format!("task failed: {e}")),
        };
        if let Some(s) = sample {
            p.other += 1;
            if p.samples.len() < 5 {
                p.samples.push(s);
            }
        }
    }
    p
}

async fn uploads(plan: &Plan, env: &Env<'_>, m: &mut Metrics) -> anyhow::Result<()> {
    progress(format!(
        "   upload sessions: {} POSTs left open; then {} slow streaming PATCHes ({} B, {} B every {:?}) with upload_buffer_memory = {} MiB",
        plan.sessions_n,
        plan.patch_n,
        plan.patch_pieces * plan.patch_piece,
        plan.patch_piece,
        plan.patch_every,
        plan.patch_budget_mib
    ));
    let budget = format!("{}MiB", plan.patch_budget_mib);
    let mut srv = start_berth(
        env,
        "limits-uploads",
        plan.env(&[("BERTH_LIMITS__UPLOAD_BUFFER_MEMORY", &budget)]),
        false,
    )
    .await?;
    let mut conn = Conn::new(srv.endpoint.clone());
    let manifest = seed(&mut conn, Monolithic::Post, env).await?;
    let t = Target {
        who: BERTH,
        srv: &srv,
        spec: spec(srv.endpoint.clone(), "/healthz", manifest, &env.layer, None),
    };
    // Thousands of sessions, opened and left.
    let load = "sessions";
    baseline(m, plan, load, &t).await;
    let started = Instant::now();
    let o = observe(
        &t,
        plan.probe_every,
        open_sessions(&srv.endpoint, plan.sessions_n, plan.sessions_conc),
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    record(m, load, "during", BERTH, &o);
    let (locations, posts) = &o.out;
    m.error(
        BERTH,
        "limits: opening upload sessions",
        posts.errors,
        &posts.samples,
    );
    m.add("lim_sessions_opened", BERTH, locations.len() as f64);
    m.add("lim_sessions_rate", BERTH, locations.len() as f64 / secs);
    m.add_opt("lim_sessions_post_p99", BERTH, posts.p(0.99));
    progress(format!(
        "   {} sessions opened in {secs:.1} s ({} failed)",
        locations.len(),
        posts.errors
    ));
    let a = observe(&t, plan.probe_every, tokio::time::sleep(plan.after)).await;
    record(m, load, "after", BERTH, &a);
    let mark = log_note(m, &srv, load, 0);

    // Slow streaming PATCHes on some of them, beyond the buffer budget.
    let load = "patches";
    let chosen: Vec<String> = locations.iter().take(plan.patch_n).cloned().collect();
    let o = observe(
        &t,
        plan.probe_every,
        slow_patches(&srv.endpoint, plan, chosen),
    )
    .await;
    record(m, load, "during", BERTH, &o);
    let p = &o.out;
    m.add("lim_patches_accepted", BERTH, p.accepted as f64);
    m.add("lim_patches_429", BERTH, p.refused_429 as f64);
    m.add(
        "lim_patches_429_retry_after",
        BERTH,
        p.with_retry_after as f64,
    );
    m.add("lim_patches_other", BERTH, p.other as f64);
    m.add_opt("lim_patches_wait_429", BERTH, percentile(&p.wait_429, 0.5));
    m.add_opt("lim_patches_took_202", BERTH, percentile(&p.took_202, 0.5));
    m.add("lim_patches_budget", BERTH, plan.patch_budget_mib as f64);
    m.error(
        BERTH,
        "limits: slow PATCHes (neither 202 nor 429)",
        p.other,
        &p.samples,
    );
    progress(format!("   slow PATCHes: {p:?}"));
    let a = observe(&t, plan.probe_every, tokio::time::sleep(plan.after)).await;
    record(m, load, "after", BERTH, &a);
    log_note(m, &srv, load, mark);
    srv.check_alive()?;
    srv.stop(Duration::from_secs(30)).await?;
    Ok(())
}

/// What the wrong-password flood got back.
#[derive(Default, Debug)]
struct Flood {
    sent: u64,
    unauthorized: u64,
    throttled: u64,
    busy: u64,
    other: u64,
    lat_ms: Vec<f64>,
    samples: Vec<String>,
}

async fn flood(
    ep: Arc<Endpoint>,
    workers: usize,
    every: Duration,
    until: Instant,
    nonce: u64,
) -> Flood {
    let mut tasks = JoinSet::new();
    for w in 0..workers {
        let ep = ep.clone();
        tasks.spawn(async move {
            let mut f = Flood::default();
            let mut conn = Conn::new(ep)
                .with_source(addr(30, w))
                .with_timeout(Duration::from_secs(30));
            let mut k = 0usize;
            while Instant::now() < until {
                k += 1;
                let name = GUESSED_NAMES[(w + k) % GUESSED_NAMES.len()];
                let auth = basic(name, &format!("guess-{nonce}-{w}-{k}"));
                let s = Instant::now();
                f.sent += 1;
                match conn.get("/v2/", &[("authorization", &auth)]).await {
                    Ok(r) => {
                        f.lat_ms.push(ms(s.elapsed()));
                        match (r.status, classify_429(&r)) {
                            (401, _) => f.unauthorized += 1,
                            (429, Some(true)) => f.throttled += 1,
                            (429, Some(false)) => f.busy += 1,
                            _ => {
                                f.other += 1;
                                if f.samples.len() < 3 {
                                    f.samples.push(r.describe());
                                }
                            }
                        }
                    }
                    Err(e) => {
                        f.other += 1;
                        if f.samples.len() < 3 {
                            f.samples.push(format!("{e:#}"));
                        }
                    }
                }
                tokio::time::sleep(every).await;
            }
            f
        });
    }
    let mut all = Flood::default();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(f) => {
                all.sent += f.sent;
                all.unauthorized += f.unauthorized;
                all.throttled += f.throttled;
                all.busy += f.busy;
                all.other += f.other;
                all.lat_ms.extend(f.lat_ms);
                for s in f.samples {
                    if all.samples.len() < 5 {
                        all.samples.push(s);
                    }
                }
            }
            Err(e) => {
                all.other += 1;
                all.samples.push(format!("task failed: {e}"));
            }
        }
    }
    all
}

/// For a 429: whether it is the failed-login throttle (true) or the full password-check queue
/// (false); `None` for anything else.
fn classify_429(r: &Resp) -> Option<bool> {
    if r.status != 429 {
        return None;
    }
    let body = String::from_utf8_lossy(&r.body);
    if body.contains("failed logins") {
        Some(true)
    } else if body.contains("being checked") {
        Some(false)
    } else {
        None
    }
}

/// A first login (what `docker login` does: the token endpoint with Basic credentials),
/// retried on 429 after its Retry-After until `until` (the end of the flood: a login that
/// only succeeds once the flood is over says nothing about the flood).
#[derive(Debug)]
struct Login {
    first_status: u16,
    first_ms: f64,
    /// Time to a token, retries included.
    total_ms: Option<f64>,
    attempts: u32,
    /// Attempts answered 429.
    refused: u32,
    last: String,
}

async fn real_login(ep: &Arc<Endpoint>, user: &str, password: &str, until: Instant) -> Login {
    let auth = basic(user, password);
    let start = Instant::now();
    let mut login = Login {
        first_status: 0,
        first_ms: 0.0,
        total_ms: None,
        attempts: 0,
        refused: 0,
        last: String::new(),
    };
    loop {
        login.attempts += 1;
        let mut conn = Conn::new(ep.clone()).with_timeout(Duration::from_secs(30));
        let s = Instant::now();
        let r = conn
            .get("/auth/token?service=berth", &[("authorization", &auth)])
            .await;
        let (status, wait) = match &r {
            Ok(r) => (
                r.status,
                r.header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1),
            ),
            Err(_) => (0, 1),
        };
        if login.attempts == 1 {
            login.first_status = status;
            login.first_ms = ms(s.elapsed());
        }
        login.last = match &r {
            Ok(r) => r.describe(),
            Err(e) => format!("{e:#}"),
        };
        if status == 200 {
            login.total_ms = Some(ms(start.elapsed()));
            break;
        }
        if status != 429 {
            break;
        }
        login.refused += 1;
        let wait = Duration::from_secs(wait.min(5));
        if Instant::now() + wait >= until {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    login
}

async fn admin_request(
    conn: &mut Conn,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<Resp> {
    conn.request(
        method,
        path,
        &[("content-type", "application/json")],
        ReqBody::full(Bytes::from(serde_json::to_vec(&body)?)),
    )
    .await
}

async fn logins(plan: &Plan, env: &Env<'_>, m: &mut Metrics) -> anyhow::Result<()> {
    let load = "logins";
    progress(format!(
        "   parallel logins: {} addresses each sending a wrong password every {:?} for {:?} (Basic on /v2/), while {} users log in for the first time",
        plan.flood_workers, plan.flood_every, plan.flood_duration, plan.real_logins
    ));
    let admin_pw = format!("limits-admin-{}", env.nonce);
    let mut srv = start_berth(
        env,
        "limits-logins",
        plan.env(&[
            ("BERTH_AUTH__ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", &admin_pw),
        ]),
        true,
    )
    .await?;
    let ep = srv.endpoint.clone();
    let mut admin =
        Conn::new(ep.clone()).with_header("authorization", &basic("admin", &admin_pw))?;
    let r = admin_request(
        &mut admin,
        Method::POST,
        "/api/v1/projects",
        serde_json::json!({ "name": "bench" }),
    )
    .await?;
    ensure!(
        r.status == 201 || r.status == 409,
        "creating project bench: {}",
        r.describe()
    );
    let manifest = seed(&mut admin, Monolithic::Post, env).await?;
    // The probes pull with a Bearer token: no password check on their path.
    let r = admin
        .get(
            &format!("/auth/token?service=berth&scope=repository:{REPO}:pull"),
            &[],
        )
        .await?;
    ensure!(r.status == 200, "admin token: {}", r.describe());
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    let token = v["token"]
        .as_str()
        .or_else(|| v["access_token"].as_str())
        .context("no token in the token endpoint's answer")?;
    // Users who have never logged in (cold caches): a few for the idle baseline, the rest
    // during the flood.
    let users: Vec<(String, String)> = (0..plan.idle_logins + plan.real_logins)
        .map(|i| {
            (
                format!("real-{i}"),
                format!("real-password-{}-{i}", env.nonce),
            )
        })
        .collect();
    for (name, password) in &users {
        let r = admin_request(
            &mut admin,
            Method::POST,
            "/api/v1/users",
            serde_json::json!({ "name": name, "password": password }),
        )
        .await?;
        ensure!(r.status == 201, "creating user {name}: {}", r.describe());
    }
    let t = Target {
        who: BERTH,
        srv: &srv,
        spec: spec(
            ep.clone(),
            "/healthz",
            manifest,
            &env.layer,
            Some(format!("Bearer {token}")),
        ),
    };
    baseline(m, plan, load, &t).await;
    let mut idle_ms = Vec::new();
    for (name, password) in &users[..plan.idle_logins] {
        let l = real_login(
            &ep,
            name,
            password,
            Instant::now() + Duration::from_secs(30),
        )
        .await;
        match l.total_ms {
            Some(v) if l.attempts == 1 => idle_ms.push(v),
            _ => m.error(
                BERTH,
                "limits: idle first login",
                1,
                std::slice::from_ref(&l.last),
            ),
        }
    }
    m.add_opt("lim_logins_idle_login", BERTH, percentile(&idle_ms, 0.5));

    let until = Instant::now() + plan.flood_duration;
    let real = users[plan.idle_logins..].to_vec();
    // The real users arrive one after the other from 1 s into the flood to 1 s before its end,
    // each on their own (a refused one retrying does not hold the next back).
    let gap = plan
        .flood_duration
        .saturating_sub(Duration::from_secs(2))
        .div_f64(real.len().max(1) as f64);
    let both = async {
        let flooding = tokio::spawn(flood(
            ep.clone(),
            plan.flood_workers,
            plan.flood_every,
            until,
            env.nonce,
        ));
        let mut logins = JoinSet::new();
        for (i, (name, password)) in real.iter().cloned().enumerate() {
            let ep = ep.clone();
            let at = Duration::from_secs(1) + gap.mul_f64(i as f64);
            logins.spawn(async move {
                tokio::time::sleep(at).await;
                real_login(&ep, &name, &password, until).await
            });
        }
        let mut got = Vec::new();
        while let Some(l) = logins.join_next().await {
            if let Ok(l) = l {
                got.push(l);
            }
        }
        let f = flooding.await.unwrap_or_default();
        (f, got)
    };
    let o = observe(&t, plan.probe_every, both).await;
    record(m, load, "during", BERTH, &o);
    let (f, got) = &o.out;
    for (what, v) in [
        ("sent", f.sent),
        ("401", f.unauthorized),
        ("429_throttled", f.throttled),
        ("429_busy", f.busy),
        ("other", f.other),
    ] {
        m.add(&format!("lim_flood_{what}"), BERTH, v as f64);
    }
    m.add(
        "lim_flood_rate",
        BERTH,
        f.sent as f64 / plan.flood_duration.as_secs_f64(),
    );
    m.add_opt("lim_flood_p50", BERTH, percentile(&f.lat_ms, 0.5));
    m.add_opt("lim_flood_p99", BERTH, percentile(&f.lat_ms, 0.99));
    m.error(
        BERTH,
        "limits: flood answers other than 401/429",
        f.other,
        &f.samples,
    );
    progress(format!(
        "   flood: sent {}, 401 {}, 429 throttled {}, 429 queue full {}, other {}",
        f.sent, f.unauthorized, f.throttled, f.busy, f.other
    ));
    let first_ok: Vec<f64> = got
        .iter()
        .filter(|l| l.first_status == 200)
        .map(|l| l.first_ms)
        .collect();
    let total: Vec<f64> = got.iter().filter_map(|l| l.total_ms).collect();
    m.add("lim_real_n", BERTH, got.len() as f64);
    m.add("lim_real_first_ok", BERTH, first_ok.len() as f64);
    m.add(
        "lim_real_first_429",
        BERTH,
        got.iter().filter(|l| l.first_status == 429).count() as f64,
    );
    m.add("lim_real_got_token", BERTH, total.len() as f64);
    m.add_opt("lim_real_first_p50", BERTH, percentile(&first_ok, 0.5));
    m.add_opt("lim_real_first_max", BERTH, crate::stats::max(&first_ok));
    m.add_opt("lim_real_total_p50", BERTH, percentile(&total, 0.5));
    m.add_opt("lim_real_total_max", BERTH, crate::stats::max(&total));
    m.add(
        "lim_real_attempts",
        BERTH,
        got.iter().map(|l| l.attempts).sum::<u32>() as f64,
    );
    m.add(
        "lim_real_attempts_429",
        BERTH,
        got.iter().map(|l| l.refused).sum::<u32>() as f64,
    );
    for l in got {
        progress(format!(
            "   real login: first answer {} in {:.0} ms; {} attempt(s), token after {}",
            l.first_status,
            l.first_ms,
            l.attempts,
            l.total_ms
                .map(|v| format!("{v:.0} ms"))
                .unwrap_or_else(|| format!("none before the flood ended ({})", l.last)),
        ));
    }
    let a = observe(&t, plan.probe_every, tokio::time::sleep(plan.after)).await;
    record(m, load, "after", BERTH, &a);
    log_note(m, &srv, load, 0);
    srv.check_alive()?;
    srv.stop(Duration::from_secs(30)).await?;
    Ok(())
}

/// The rows of the table, for the loads that ran.
pub fn rows(m: &Metrics, quick: bool, judge: bool) -> Vec<Row> {
    let p = Plan::new(quick);
    let mut r = Rows {
        m,
        judge,
        rows: Vec::new(),
    };
    let has = |load: &str| {
        m.median(&format!("lim_{load}_idle_health_p50"), BERTH)
            .is_some()
    };
    let timeout = p.header_timeout.as_secs_f64();
    if has("silent") {
        let s = "limits: silent connections";
        let dist = m.median("lim_silent_idle_health_p50", DIST).is_some();
        r.add(
            s,
            "lim_silent_attempted",
            &format!(
                "silent connections: {} from one address, then {} from {}; header timeout {} s",
                p.silent_one_addr,
                p.silent_n,
                p.silent_addrs,
                fmt_secs(timeout)
            ),
            dist,
            Cell::None,
            "",
            "",
            None,
        );
        r.held(s, "silent", dist, &p);
        r.counters(s, "silent");
        r.common(s, "silent", "lim_silent_idle", "lim_silent_nofile", dist);
    }
    if has("slowloris") {
        let s = "limits: slowloris";
        r.add(
            s,
            "lim_slowloris_attempted",
            &format!(
                "slowloris connections: {} from {} addresses, a header byte every {} s",
                p.slowloris_n,
                p.slowloris_addrs,
                fmt_secs(p.slowloris_every.as_secs_f64())
            ),
            false,
            Cell::None,
            "",
            "",
            None,
        );
        r.held(s, "slowloris", false, &p);
        r.counters(s, "slowloris");
        r.common(
            s,
            "slowloris",
            "lim_slowloris_idle",
            "lim_slowloris_nofile",
            false,
        );
    }
    if has("sessions") {
        let s = "limits: upload sessions left open";
        r.add(
            s,
            "lim_sessions_opened",
            &format!(
                "upload sessions opened (POST from {} addresses, c{}), of {}",
                p.sessions_conc, p.sessions_conc, p.sessions_n
            ),
            false,
            Cell::None,
            "",
            "",
            None,
        );
        r.plain(s, "lim_sessions_rate", "sessions opened per second");
        r.common(
            s,
            "sessions",
            "lim_sessions_idle",
            "lim_sessions_nofile",
            false,
        );
    }
    if m.median("lim_patches_accepted", BERTH).is_some() {
        let s = "limits: slow streaming PATCHes";
        let budget = m.median("lim_patches_budget", BERTH);
        r.add(
            s,
            "lim_patches_accepted",
            &format!(
                "of {} concurrent PATCHes ({} B, {} B per {} s, from {} addresses), answered 202",
                p.patch_n,
                p.patch_pieces * p.patch_piece,
                p.patch_piece,
                fmt_secs(p.patch_every.as_secs_f64()),
                p.patch_addrs
            ),
            false,
            budget.into(),
            "upload_buffer_memory, MiB (1 MiB per upload)",
            "",
            None,
        );
        r.plain(s, "lim_patches_429", "answered 429");
        r.plain(
            s,
            "lim_patches_429_retry_after",
            "answered 429 with Retry-After",
        );
        r.zero(s, "lim_patches_other", "answered otherwise, or failed");
        r.add(
            s,
            "lim_patches_wait_429",
            "time to the 429, p50 s",
            false,
            Cell::V(5.0),
            "berth's wait",
            "",
            None,
        );
        r.plain(s, "lim_patches_took_202", "time to the 202, p50 s");
        // The sessions' "after" is this load's baseline.
        r.common(
            s,
            "patches",
            "lim_sessions_after",
            "lim_sessions_nofile",
            false,
        );
    }
    if has("logins") {
        let s = "limits: parallel logins";
        let idle_login = m.median("lim_logins_idle_login", BERTH);
        r.plain(
            s,
            "lim_logins_idle_login",
            "first login of a user (token endpoint, Basic), idle, p50 ms",
        );
        r.add(
            s,
            "lim_flood_sent",
            &format!(
                "wrong passwords sent (Basic on /v2/): {} addresses, one every {} s each, for {} s",
                p.flood_workers,
                fmt_secs(p.flood_every.as_secs_f64()),
                fmt_secs(p.flood_duration.as_secs_f64())
            ),
            false,
            Cell::None,
            "",
            "",
            None,
        );
        r.plain(s, "lim_flood_rate", "wrong passwords sent per second");
        r.plain(s, "lim_flood_401", "answered 401 (checked: wrong)");
        r.plain(
            s,
            "lim_flood_429_busy",
            "answered 429, password-check queue full",
        );
        r.plain(
            s,
            "lim_flood_429_throttled",
            "answered 429, failed-login throttle",
        );
        r.zero(s, "lim_flood_other", "answered otherwise, or failed");
        r.plain(s, "lim_flood_p50", "time to the flood's answers, p50 ms");
        r.plain(s, "lim_flood_p99", "time to the flood's answers, p99 ms");
        r.plain(
            s,
            "lim_real_n",
            "users logging in for the first time, spread over the flood",
        );
        r.plain(s, "lim_real_first_ok", "answered 200 at the first attempt");
        r.plain(s, "lim_real_first_429", "answered 429 at the first attempt");
        for (id, label) in [
            ("lim_real_first_p50", "first-attempt 200s, p50 ms"),
            ("lim_real_first_max", "first-attempt 200s, slowest, ms"),
        ] {
            r.add(
                s,
                id,
                label,
                false,
                idle_login.into(),
                "idle login",
                "",
                None,
            );
        }
        r.plain(
            s,
            "lim_real_got_token",
            "got a token before the flood ended, retrying after Retry-After",
        );
        r.plain(
            s,
            "lim_real_attempts",
            "login attempts of these users during the flood, retries included",
        );
        r.plain(s, "lim_real_attempts_429", "of them answered 429");
        for (id, label) in [
            (
                "lim_real_total_p50",
                "time to the token, retries included, p50 ms",
            ),
            (
                "lim_real_total_max",
                "time to the token, retries included, slowest, ms",
            ),
        ] {
            r.add(
                s,
                id,
                label,
                false,
                idle_login.into(),
                "idle login",
                "",
                None,
            );
        }
        r.common(s, "logins", "lim_logins_idle", "lim_logins_nofile", false);
    }
    r.rows
}

fn fmt_secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

/// Builds the limits rows.
struct Rows<'a> {
    m: &'a Metrics,
    judge: bool,
    rows: Vec<Row>,
}

impl Rows<'_> {
    fn med(&self, id: &str, who: &str) -> Option<f64> {
        self.m.median(id, who)
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        section: &'static str,
        id: &str,
        label: &str,
        dist: bool,
        reference: Cell,
        reference_what: &str,
        target: &str,
        met: Option<bool>,
    ) {
        let dist = if dist {
            self.med(id, DIST).into()
        } else {
            Cell::None
        };
        self.rows.push(Row {
            section,
            id: id.to_owned(),
            label: label.to_owned(),
            berth: self.med(id, BERTH).into(),
            dist,
            reference,
            reference_what: reference_what.to_owned(),
            target: target.to_owned(),
            met: if self.judge { met } else { None },
        });
    }

    /// A figure with no reference or target.
    fn plain(&mut self, section: &'static str, id: &str, label: &str) {
        self.add(section, id, label, false, Cell::None, "", "", None);
    }

    /// A count whose target is 0.
    fn zero(&mut self, section: &'static str, id: &str, label: &str) {
        self.zero_dist(section, id, label, false);
    }

    fn zero_dist(&mut self, section: &'static str, id: &str, label: &str, dist: bool) {
        let met = self.med(id, BERTH).map(|v| v == 0.0);
        self.add(section, id, label, dist, Cell::None, "", "0", met);
    }

    /// What became of the attack's connections.
    fn held(&mut self, s: &'static str, load: &str, dist: bool, p: &Plan) {
        let timeout = p.header_timeout.as_secs_f64();
        for (what, label) in [
            ("opened", "connections opened"),
            ("connect_failed", "connections that could not be opened"),
            (
                "not_attempted",
                "not attempted (the benchmark's own open-files limit)",
            ),
            (
                "closed_early",
                "closed by the server before the header timeout (refused or evicted)",
            ),
            (
                "closed_timeout",
                "closed by the server at the header timeout (up to 1 s past it)",
            ),
            (
                "closed_late",
                "closed by the server later (accepted late: see the listen-queue overflows)",
            ),
            (
                "ghost",
                "known to the client only (SYN cookie, last ACK dropped); closed after a byte",
            ),
        ] {
            self.add(
                s,
                &format!("lim_{load}_{what}"),
                label,
                dist,
                Cell::None,
                "",
                "",
                None,
            );
        }
        self.zero_dist(
            s,
            &format!("lim_{load}_still_open"),
            &format!(
                "still open {} s past the header timeout, and timeout + 1 s past a byte",
                fmt_secs(p.hold_past.as_secs_f64())
            ),
            dist,
        );
        self.add(
            s,
            &format!("lim_{load}_max_life"),
            "longest a connection stayed open before the server closed it, s",
            dist,
            Cell::V(timeout),
            "header timeout",
            "",
            None,
        );
        for (what, label) in [
            (
                "ListenOverflows",
                "listen-queue overflows during the load (kernel, TcpExt ListenOverflows)",
            ),
            (
                "SyncookiesSent",
                "SYN cookies sent during the load (kernel, TcpExt SyncookiesSent)",
            ),
        ] {
            self.add(
                s,
                &format!("lim_{load}_k_{what}"),
                label,
                dist,
                Cell::None,
                "",
                "",
                None,
            );
        }
    }

    /// The connection counters of /metrics.
    fn counters(&mut self, s: &'static str, load: &str) {
        let cap = self.med("lim_cap", BERTH);
        self.add(
            s,
            &format!("lim_{load}_open_max"),
            "berth_connections_open, most sampled",
            false,
            cap.into(),
            "max_connections in effect",
            "",
            None,
        );
        for c in [
            "accepted",
            "refused_per_address",
            "refused_total",
            "evicted",
            "closed_idle",
        ] {
            self.plain(
                s,
                &format!("lim_{load}_c_{c}"),
                &format!("berth_connections_total{{outcome=\"{c}\"}}, change"),
            );
        }
        self.zero(
            s,
            &format!("lim_{load}_c_accept_errors"),
            "berth_accept_errors_total, change",
        );
    }

    /// The figures every load has: probes, memory, descriptors. `idle` is the prefix of the
    /// baseline's figures.
    fn common(&mut self, s: &'static str, load: &str, idle: &str, nofile: &str, dist: bool) {
        for (what, label) in [
            ("health", "GET /healthz, fresh connection"),
            ("pull", "manifest + 4 KiB blob pull, fresh connection"),
        ] {
            for q in ["p50", "p99"] {
                let reference = self.med(&format!("{idle}_{what}_{q}"), BERTH);
                self.add(
                    s,
                    &format!("lim_{load}_{what}_{q}"),
                    &format!("{label}, during, {q} ms"),
                    dist,
                    reference.into(),
                    "idle",
                    "",
                    None,
                );
            }
            let reference = self.med(&format!("{idle}_{what}_p99"), BERTH);
            self.add(
                s,
                &format!("lim_{load}_after_{what}_p99"),
                &format!("{label}, after, p99 ms"),
                dist,
                reference.into(),
                "idle",
                "",
                None,
            );
        }
        self.add(
            s,
            &format!("lim_{load}_probes"),
            "probe requests made during (each: /healthz or a pull)",
            dist,
            Cell::None,
            "",
            "",
            None,
        );
        self.zero_dist(
            s,
            &format!("lim_{load}_probe_failures"),
            "probe requests that failed, during",
            dist,
        );
        self.zero_dist(
            s,
            &format!("lim_{load}_after_probe_failures"),
            "probe requests that failed, after",
            dist,
        );
        let idle_rss = self.med(&format!("{idle}_rss"), BERTH);
        self.add(
            s,
            &format!("lim_{load}_rss_peak"),
            "peak RSS during (VmHWM), MiB",
            dist,
            idle_rss.into(),
            "idle RSS",
            "",
            None,
        );
        self.add(
            s,
            &format!("lim_{load}_after_rss"),
            "RSS after, MiB",
            dist,
            idle_rss.into(),
            "idle RSS",
            "",
            None,
        );
        let idle_fds = self.med(&format!("{idle}_fds"), BERTH);
        let nofile = self.med(nofile, BERTH);
        let fds = self.med(&format!("lim_{load}_fds_max"), BERTH);
        self.add(
            s,
            &format!("lim_{load}_fds_max"),
            "open fds during, most sampled",
            dist,
            idle_fds.into(),
            "idle",
            &nofile
                .map(|n| format!("< open-files limit ({n:.0})"))
                .unwrap_or_default(),
            match (fds, nofile) {
                (Some(f), Some(n)) => Some(f < n),
                _ => None,
            },
        );
        self.add(
            s,
            &format!("lim_{load}_after_fds"),
            "open fds after",
            dist,
            idle_fds.into(),
            "idle",
            "",
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"admin:pw"), "YWRtaW46cHc=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn sources_spread_and_shuffle() {
        let v = sources(10, 100, 10, 5, 1);
        assert_eq!(v.len(), 105);
        let one = addr(11, 0);
        assert!(v[..5].iter().all(|a| *a == one));
        assert_eq!(v.iter().filter(|a| **a == one).count(), 5);
        assert_eq!(v.iter().filter(|a| **a == addr(10, 3)).count(), 10);
        assert_eq!(addr(10, 251), "127.10.1.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn metrics_counters_parse() {
        let text = "# HELP x y\nberth_connections_open 3\nberth_connections_total{outcome=\"evicted\"} 7\nberth_accept_errors_total 0\nberth_storage_blobs 9\n";
        let c = parse_counters(text);
        assert_eq!(c.get("open"), Some(&3.0));
        assert_eq!(c.get("evicted"), Some(&7.0));
        assert_eq!(c.get("accept_errors"), Some(&0.0));
        assert_eq!(c.len(), 3);
    }
}
