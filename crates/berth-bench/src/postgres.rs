//! The `postgres` scenario: berth with its metadata in SQLite against berth with it in
//! PostgreSQL, on one node and on three, side by side in the same run; and how soon a tag moved
//! on one node is seen on another.
//!
//! It starts berths of its own (the release binary): one on SQLite; one on PostgreSQL; and three
//! `berth serve` processes sharing one PostgreSQL database and one blob directory, as nodes
//! behind a load balancer. Each PostgreSQL registry gets a database of its own on the server
//! given with `--postgres-url`, created with `psql` and dropped at the end. Every registry keeps
//! its blobs on the filesystem, so the figures differ by the metadata store only. Berth locks
//! its data directory, so each node has one of its own whose `blobs` and `uploads` are links to
//! the shared ones (what a shared volume gives nodes on separate hosts).
//!
//! The loads are those of the `small` and `manifests` scenarios ([`crate::loads`]); on three
//! nodes, every client spreads its requests over the nodes round-robin. Each registry is warmed
//! up first with GETs by tag, so that its database connections are open before anything is
//! measured, and the registries take turns in every run. Then a tag is moved
//! (a new manifest PUT under it) on one node while another node is asked for it (GET by tag)
//! until it answers the new manifest: with no tag cached on PostgreSQL, the first GET after the
//! PUT's 201 should already answer it.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;

use crate::data::{Blob, BlobMaker, sha256_hex};
use crate::http::{Endpoint, RoundRobin};
use crate::loads;
use crate::ops::{self, Monolithic};
use crate::report::{self, Line, Metrics};
use crate::servers::{self, Server};
use crate::stats::{Tally, ms, percentile};

/// Who the figures belong to: the three registries.
pub const SQLITE: &str = "sqlite";
pub const PG: &str = "postgres";
pub const PG3: &str = "postgres-3";
/// Nodes of the scaled-out registry.
const NODES: usize = 3;
/// The repository and tag of the GET-by-tag load, and of the tag moves.
const HOT_REPO: &str = "bench/man";
const HOT_PATH: &str = "/v2/bench/man/manifests/latest";
const MOVE_REPO: &str = "bench/moving";
const MOVE_PATH: &str = "/v2/bench/moving/manifests/moving";
/// How long a node may keep answering the old manifest after a tag move before the benchmark
/// counts the move as failed.
const MOVE_GIVE_UP: Duration = Duration::from_secs(10);

/// Sizes, counts and durations of one mode.
#[derive(Debug, Clone)]
pub struct Plan {
    quick: bool,
    runs: usize,
    small_n: usize,
    small_conc: usize,
    manifests_n: usize,
    hot_conc: usize,
    hot_duration: Duration,
    /// GET by tag at `hot_conc` before the parts, not counted: each node opens its database
    /// connections on first use (on PostgreSQL, a process forked by the server for each).
    warm_up: Duration,
    moves: usize,
}

impl Plan {
    pub fn new(quick: bool, runs: usize) -> Plan {
        if quick {
            Plan {
                quick,
                runs,
                small_n: 200,
                small_conc: 16,
                manifests_n: 100,
                hot_conc: 64,
                hot_duration: Duration::from_secs(2),
                warm_up: Duration::from_millis(500),
                moves: 100,
            }
        } else {
            Plan {
                quick,
                runs,
                small_n: 2_000,
                small_conc: 16,
                manifests_n: 1_000,
                hot_conc: 64,
                hot_duration: Duration::from_secs(10),
                warm_up: Duration::from_secs(2),
                moves: 1_000,
            }
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": if self.quick { "quick" } else { "full" },
            "runs": self.runs,
            "nodes": NODES,
            "small_blobs": self.small_n,
            "small_blob_bytes": 4096,
            "small_concurrency": self.small_conc,
            "manifests": self.manifests_n,
            "manifest_get_concurrency": self.hot_conc,
            "manifest_get_seconds": self.hot_duration.as_secs_f64(),
            "warm_up_seconds": self.warm_up.as_secs_f64(),
            "tag_moves": self.moves,
        })
    }
}

/// What the scenario needs from the benchmark.
pub struct Env<'a> {
    pub berth: &'a Path,
    /// A PostgreSQL URL whose role may create databases.
    pub admin_url: &'a str,
    pub work: PathBuf,
    pub plan: Plan,
    /// The config and layer every manifest references, and the manifest GET by tag.
    pub config: Blob,
    pub layer: Blob,
    pub hot_manifest: Bytes,
    /// 4 KiB blobs.
    pub small: BlobMaker,
    pub nonce: u64,
    /// The parts to run (`small`, `manifests`, `tagmove`); empty: all.
    pub parts: Vec<String>,
}

/// A registry under test: its nodes, in the order requests go round.
struct Registry {
    who: &'static str,
    nodes: Vec<Arc<Endpoint>>,
    servers: Vec<Server>,
}

impl Registry {
    fn check_alive(&mut self, m: &mut Metrics) {
        for srv in &mut self.servers {
            if let Err(e) = srv.check_alive() {
                eprintln!("!! {}: {e:#}", self.who);
                m.error(self.who, "process", 1, &[format!("{e:#}")]);
            }
        }
    }
}

/// A database of the benchmark's own on the PostgreSQL server, dropped (with any session still
/// on it) when this is dropped.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create(admin_url: &str, name: String) -> anyhow::Result<Database> {
        let url = database_url(admin_url, &name)?;
        psql(admin_url, &format!("CREATE DATABASE \"{name}\""))?;
        Ok(Database {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.admin_url, &sql) {
            eprintln!("!! dropping the database {}: {e:#}", self.name);
        }
    }
}

/// Runs one statement with `psql` and returns what it printed.
pub(crate) fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .context("running psql (Debian's postgresql-client)")?;
    ensure!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `url` with its database replaced by `db` (user, host, port and parameters kept).
fn database_url(url: &str, db: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| matches!(*s, "postgres" | "postgresql"))
        .context("a PostgreSQL URL starts with postgres:// or postgresql://")?;
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let authority = main.split('/').next().unwrap_or(main);
    let mut out = format!("{scheme}://{authority}/{db}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Fails unless every host of the URL is a loopback address, `localhost`, or none (a local
/// socket): the benchmark sends traffic to loopback only.
pub(crate) fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let main = rest.split(['/', '?']).next().unwrap_or(rest);
    let hosts = main.rsplit_once('@').map_or(main, |(_, h)| h);
    for host in hosts.split(',') {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => host.split(':').next().unwrap_or(host),
        };
        let local = name.is_empty()
            || name == "localhost"
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        ensure!(
            local,
            "{name}: the benchmark only talks to loopback; give a PostgreSQL on 127.0.0.1 \
             (scripts/pg-test-server.sh starts one)"
        );
    }
    Ok(())
}

/// Links `data`'s `blobs` and `uploads` to the ones under `shared`.
fn share_blob_dirs(data: &Path, shared: &Path) -> anyhow::Result<()> {
    for d in ["blobs", "uploads"] {
        let target = shared.join(d);
        std::fs::create_dir_all(&target)?;
        std::os::unix::fs::symlink(&target, data.join(d)).with_context(|| {
            format!("linking {} to {}", data.join(d).display(), target.display())
        })?;
    }
    Ok(())
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

/// Starts a registry: `nodes` berths on `database_url` (SQLite when `None`). The first node
/// is ready (its migrations done) before the others start.
async fn start(
    env: &Env<'_>,
    who: &'static str,
    nodes: usize,
    database_url: Option<&str>,
) -> anyhow::Result<Registry> {
    let dir = env.work.join(who);
    let vars = match database_url {
        Some(url) => servers::berth_env(&[("BERTH_DATABASE__URL", url)]),
        None => servers::berth_env(&[]),
    };
    let mut reg = Registry {
        who,
        nodes: Vec::new(),
        servers: Vec::new(),
    };
    for i in 0..nodes {
        let addr = servers::free_addr()?;
        let ep = Endpoint::plain(addr);
        let (name, node_dir) = if nodes == 1 {
            (who.to_owned(), dir.clone())
        } else {
            (
                format!("{who}-node{}", i + 1),
                dir.join(format!("node{}", i + 1)),
            )
        };
        let mut srv = servers::berth(&name, env.berth, &node_dir, addr, ep.clone(), vars.clone())?;
        if nodes > 1 {
            share_blob_dirs(&node_dir.join("data"), &dir.join("shared"))?;
        }
        if i == 0 {
            srv.start(Duration::from_secs(60)).await?;
        }
        reg.nodes.push(ep);
        reg.servers.push(srv);
    }
    for srv in reg.servers.iter_mut().skip(1) {
        srv.start(Duration::from_secs(60)).await?;
    }
    Ok(reg)
}

/// Runs the scenario; figures into `m`.
pub async fn run(env: &Env<'_>, m: &mut Metrics) -> anyhow::Result<()> {
    check_loopback(env.admin_url)?;
    let version = psql(env.admin_url, "SHOW server_version")?;
    m.note(format!(
        "postgres: PostgreSQL {version} at {}",
        redact(env.admin_url)
    ));
    std::fs::create_dir_all(&env.work)?;
    // Declared before the registries, so dropped after them: the nodes are gone first.
    let unique = format!("{}_{}", std::process::id(), env.nonce % 1_000_000);
    let db1 = Database::create(env.admin_url, format!("bench_{unique}_pg1"))?;
    let db3 = Database::create(env.admin_url, format!("bench_{unique}_pg3"))?;
    let mut regs = vec![
        start(env, SQLITE, 1, None).await?,
        start(env, PG, 1, Some(&db1.url)).await?,
        start(env, PG3, NODES, Some(&db3.url)).await?,
    ];
    progress(format!(
        "   started berth on SQLite, on PostgreSQL (database {}) and {NODES} nodes on PostgreSQL (database {})",
        db1.name, db3.name
    ));
    seed_and_warm_up(env, &regs, m).await?;
    type Part = for<'a> fn(
        &'a Env<'a>,
        &'a mut [Registry],
        &'a mut Metrics,
    ) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;
    let parts: [(&str, Part); 3] = [
        ("small", |e, r, m| Box::pin(small(e, r, m))),
        ("manifests", |e, r, m| Box::pin(manifests(e, r, m))),
        ("tagmove", |e, r, m| Box::pin(tag_moves(e, r, m))),
    ];
    for (name, part) in parts {
        if !env.parts.is_empty() && !env.parts.iter().any(|p| p == name) {
            continue;
        }
        let t = Instant::now();
        if let Err(e) = part(env, &mut regs, m).await {
            eprintln!("!! postgres/{name}: {e:#}");
            m.error(
                "bench",
                &format!("postgres: {name}"),
                1,
                &[format!("{e:#}")],
            );
        }
        for reg in &mut regs {
            reg.check_alive(m);
        }
        progress(format!(
            "   postgres/{name} took {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }
    for reg in &mut regs {
        for srv in &mut reg.servers {
            srv.stop(Duration::from_secs(30)).await?;
        }
    }
    drop(regs);
    drop((db1, db3));
    Ok(())
}

/// The URL without its password, for the notes.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (main, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            match main.rsplit_once('@') {
                Some((user, host)) => {
                    let user = user.split(':').next().unwrap_or(user);
                    format!("{scheme}://{user}@{host}{tail}")
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// Records a tally's failures and its p50 and p99 under `{id}_p50` and `{id}_p99`.
fn record(m: &mut Metrics, who: &str, what: &str, id: &str, t: &Tally) {
    m.error(who, &format!("postgres: {what}"), t.errors, &t.samples);
    m.add_opt(&format!("{id}_p50"), who, t.p(0.5));
    m.add_opt(&format!("{id}_p99"), who, t.p(0.99));
}

async fn small(env: &Env<'_>, regs: &mut [Registry], m: &mut Metrics) -> anyhow::Result<()> {
    let p = &env.plan;
    for run in 0..p.runs {
        for reg in regs.iter() {
            let blobs: Arc<Vec<Blob>> =
                Arc::new((0..p.small_n).map(|_| env.small.make()).collect());
            let repo = Arc::new(format!("bench/small-{run}"));
            for pulling in [false, true] {
                let (tally, secs) = loads::small_blobs(
                    &reg.nodes,
                    Monolithic::Post,
                    &repo,
                    &blobs,
                    p.small_conc,
                    pulling,
                )
                .await;
                let (op, what) = if pulling {
                    ("pg_small_pull", "4 KiB pull")
                } else {
                    ("pg_small_push", "4 KiB push")
                };
                let rate = tally.count() as f64 / secs;
                m.add(&format!("{op}_ops"), reg.who, rate);
                record(m, reg.who, what, op, &tally);
                progress(format!(
                    "   run {}/{} {}: {what}: {rate:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
                    run + 1,
                    p.runs,
                    reg.who,
                    tally.p(0.5).unwrap_or(f64::NAN),
                    tally.p(0.99).unwrap_or(f64::NAN),
                    tally.errors
                ));
            }
        }
    }
    Ok(())
}

/// Pushes the manifest the GET by tag reads into every registry, then loads each with that
/// GET for the plan's warm-up time (not counted, but any failure is).
async fn seed_and_warm_up(env: &Env<'_>, regs: &[Registry], m: &mut Metrics) -> anyhow::Result<()> {
    for reg in regs {
        let mut rr = RoundRobin::new(&reg.nodes, 0, Duration::from_secs(60));
        let conn = rr.turn();
        ops::push_monolithic(conn, Monolithic::Post, HOT_REPO, &env.config).await?;
        ops::push_monolithic(conn, Monolithic::Post, HOT_REPO, &env.layer).await?;
        ops::put_manifest(conn, HOT_REPO, "latest", &env.hot_manifest)
            .await
            .with_context(|| format!("{}: the manifest the GET by tag reads", reg.who))?;
        let p = &env.plan;
        let len = env.hot_manifest.len();
        let (tally, _) = loads::hot_get(&reg.nodes, HOT_PATH, len, p.hot_conc, p.warm_up).await;
        m.error(
            reg.who,
            "postgres: warm-up GET by tag",
            tally.errors,
            &tally.samples,
        );
    }
    Ok(())
}

async fn manifests(env: &Env<'_>, regs: &mut [Registry], m: &mut Metrics) -> anyhow::Result<()> {
    let p = &env.plan;
    let digest_path = format!("/v2/{HOT_REPO}/manifests/{}", sha256_hex(&env.hot_manifest));
    let len = env.hot_manifest.len();
    for run in 0..p.runs {
        for reg in regs.iter() {
            let bodies: Vec<Bytes> = (0..p.manifests_n)
                .map(|k| {
                    Bytes::from(ops::manifest(
                        &env.config,
                        &[&env.layer],
                        &format!("pg-{}-{run}-{k}", env.nonce),
                    ))
                })
                .collect();
            let r =
                loads::manifests_one_at_a_time(&reg.nodes, HOT_REPO, &format!("m{run}-"), &bodies)
                    .await;
            record(m, reg.who, "manifest PUT by tag", "pg_man_put", &r.put);
            record(m, reg.who, "manifest GET by digest", "pg_man_get", &r.get);
            m.add("pg_man_put_ops", reg.who, r.put.count() as f64 / r.put_secs);
            m.add("pg_man_get_ops", reg.who, r.get.count() as f64 / r.get_secs);
            progress(format!(
                "   run {}/{} {}: manifest PUT p50 {:.2} ms p99 {:.2} ms; GET by digest p50 {:.2} ms p99 {:.2} ms",
                run + 1,
                p.runs,
                reg.who,
                r.put.p(0.5).unwrap_or(f64::NAN),
                r.put.p(0.99).unwrap_or(f64::NAN),
                r.get.p(0.5).unwrap_or(f64::NAN),
                r.get.p(0.99).unwrap_or(f64::NAN)
            ));
        }
        // The same manifest by tag and by digest: on PostgreSQL the tag is read from the
        // database every time and the payload comes from the cache, so the difference between
        // the two is the tag's round trip.
        for (what, id, path) in [
            ("manifest GET by tag", "pg_hot_tag", HOT_PATH),
            (
                "manifest GET by digest",
                "pg_hot_digest",
                digest_path.as_str(),
            ),
        ] {
            for reg in regs.iter() {
                let (tally, secs) =
                    loads::hot_get(&reg.nodes, path, len, p.hot_conc, p.hot_duration).await;
                let rps = tally.count() as f64 / secs;
                m.add(&format!("{id}_rps"), reg.who, rps);
                record(m, reg.who, &format!("{what} c{}", p.hot_conc), id, &tally);
                progress(format!(
                    "   run {}/{} {}: {what} c{}: {rps:.0} req/s, p99 {:.2} ms",
                    run + 1,
                    p.runs,
                    reg.who,
                    p.hot_conc,
                    tally.p(0.99).unwrap_or(f64::NAN)
                ));
            }
        }
    }
    Ok(())
}

/// A tag moved on one node (PUT of a new manifest under it), then asked for on the next node
/// (GET by tag) until that node answers the new manifest; the nodes take turns.
async fn tag_moves(env: &Env<'_>, regs: &mut [Registry], m: &mut Metrics) -> anyhow::Result<()> {
    let p = &env.plan;
    let Some(reg) = regs.iter().find(|r| r.nodes.len() > 1) else {
        bail!("no registry with several nodes");
    };
    let n = reg.nodes.len();
    let mut rr = RoundRobin::new(&reg.nodes, 0, Duration::from_secs(10));
    let conn = rr.turn();
    ops::push_monolithic(conn, Monolithic::Post, MOVE_REPO, &env.config).await?;
    ops::push_monolithic(conn, Monolithic::Post, MOVE_REPO, &env.layer).await?;
    for run in 0..p.runs {
        // Per move: ms from the PUT's 201 to the answer with the new manifest.
        let mut seen_after = Vec::with_capacity(p.moves);
        let mut gets = Tally::default();
        let mut puts = Tally::default();
        let mut stale_answers = 0u64;
        let mut failed = Tally::default();
        for i in 0..p.moves {
            let (a, b) = (i % n, (i + 1) % n);
            let body = Bytes::from(ops::manifest(
                &env.config,
                &[&env.layer],
                &format!("move-{}-{run}-{i}", env.nonce),
            ));
            let digest = sha256_hex(&body);
            let s = Instant::now();
            if let Err(e) = ops::put_manifest(rr.node(a), MOVE_REPO, "moving", &body).await {
                puts.fail(format!("{e:#}"));
                continue;
            }
            puts.ok(s);
            let moved = Instant::now();
            loop {
                let s = Instant::now();
                let r = rr
                    .node(b)
                    .get(MOVE_PATH, &[("accept", ops::OCI_MANIFEST)])
                    .await;
                match r {
                    Ok(r) if r.status == 200 => {
                        gets.ok(s);
                        if sha256_hex(&r.body) == digest {
                            seen_after.push(ms(moved.elapsed()));
                            break;
                        }
                        stale_answers += 1;
                        if moved.elapsed() > MOVE_GIVE_UP {
                            failed.fail(format!(
                                "node {} still answered the old manifest {MOVE_GIVE_UP:?} after the tag moved on node {}",
                                b + 1,
                                a + 1
                            ));
                            break;
                        }
                    }
                    Ok(r) => {
                        failed.fail(format!(
                            "GET {MOVE_PATH} on node {}: {}",
                            b + 1,
                            r.describe()
                        ));
                        break;
                    }
                    Err(e) => {
                        failed.fail(format!("node {}: {e:#}", b + 1));
                        break;
                    }
                }
            }
        }
        m.error(
            reg.who,
            "postgres: tag move PUT",
            puts.errors,
            &puts.samples,
        );
        m.error(
            reg.who,
            "postgres: tag move, GET on another node",
            failed.errors,
            &failed.samples,
        );
        m.add_opt("pg_move_seen_p50", reg.who, percentile(&seen_after, 0.5));
        m.add_opt("pg_move_seen_p99", reg.who, percentile(&seen_after, 0.99));
        m.add_opt("pg_move_seen_max", reg.who, percentile(&seen_after, 1.0));
        m.add_opt("pg_move_get_p50", reg.who, gets.p(0.5));
        m.add_opt("pg_move_put_p50", reg.who, puts.p(0.5));
        m.add("pg_move_stale", reg.who, stale_answers as f64);
        m.add("pg_move_count", reg.who, seen_after.len() as f64);
        progress(format!(
            "   run {}/{} {}: {} tag moves: new manifest on the next node after p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (one GET: p50 {:.2} ms); {stale_answers} stale answers",
            run + 1,
            p.runs,
            reg.who,
            seen_after.len(),
            percentile(&seen_after, 0.5).unwrap_or(f64::NAN),
            percentile(&seen_after, 0.99).unwrap_or(f64::NAN),
            percentile(&seen_after, 1.0).unwrap_or(f64::NAN),
            gets.p(0.5).unwrap_or(f64::NAN),
        ));
    }
    Ok(())
}

/// The scenario's table: SQLite and PostgreSQL side by side, with the ratios. `None` when
/// nothing was measured.
pub fn table(m: &Metrics, plan: &Plan, judge: bool) -> Option<(String, serde_json::Value)> {
    let rows = rows(m, plan, judge);
    if rows.is_empty() {
        return None;
    }
    let (scaled, scaled_ratio) = (
        format!("PostgreSQL, {NODES} nodes"),
        format!("{NODES} nodes/SQLite"),
    );
    let header = [
        "measurement",
        "SQLite, 1 node",
        "PostgreSQL, 1 node",
        "PostgreSQL/SQLite",
        scaled.as_str(),
        scaled_ratio.as_str(),
        "target",
    ];
    let mut lines = Vec::new();
    let mut section = "";
    let mut json = Vec::new();
    let show = |v: Option<f64>| v.map_or("–".to_owned(), report::fmt);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let show_ratio =
        |r: Option<f64>| r.map_or("–".to_owned(), |r| format!("{}×", report::fmt(r)));
    for r in &rows {
        if r.section != section {
            section = r.section;
            lines.push(Line::Section(section.to_owned()));
        }
        let (s, p1, p3) = (r.values[0], r.values[1], r.values[2]);
        lines.push(Line::Cells(vec![
            r.label.clone(),
            show(s),
            show(p1),
            show_ratio(ratio(p1, s)),
            show(p3),
            show_ratio(ratio(p3, s)),
            report::target_text(&r.target, r.met),
        ]));
        json.push(serde_json::json!({
            "section": r.section,
            "id": r.id,
            "measurement": r.label,
            SQLITE: s,
            PG: p1,
            PG3: p3,
            "postgres_over_sqlite": ratio(p1, s),
            "postgres_3_over_sqlite": ratio(p3, s),
            "target": r.target,
            "target_met": r.met,
        }));
    }
    Some((
        report::markdown(
            &header,
            &[true, false, false, false, false, false, true],
            &lines,
        ),
        serde_json::Value::Array(json),
    ))
}

struct PgRow {
    section: &'static str,
    id: String,
    label: String,
    /// SQLite, PostgreSQL, PostgreSQL on 3 nodes.
    values: [Option<f64>; 3],
    target: String,
    met: Option<bool>,
}

fn rows(m: &Metrics, p: &Plan, judge: bool) -> Vec<PgRow> {
    let mut rows = Vec::new();
    let mut add =
        |section: &'static str, id: &str, label: String, target: &str, met: Option<bool>| {
            let values = [SQLITE, PG, PG3].map(|who| m.median(id, who));
            if values.iter().all(Option::is_none) {
                return;
            }
            rows.push(PgRow {
                section,
                id: id.to_owned(),
                label,
                values,
                target: target.to_owned(),
                met: if judge { met } else { None },
            });
        };
    let s = "SQLite and PostgreSQL: 4 KiB blobs, concurrency 16";
    for (op, what) in [
        ("pg_small_push", "push"),
        ("pg_small_pull", "pull (digest verified)"),
    ] {
        add(
            s,
            &format!("{op}_ops"),
            format!("{} × 4 KiB {what}, ops/s", p.small_n),
            "",
            None,
        );
        for q in ["p50", "p99"] {
            add(
                s,
                &format!("{op}_{q}"),
                format!("4 KiB {what}, {q} ms"),
                "",
                None,
            );
        }
    }
    let s = "SQLite and PostgreSQL: manifests";
    for (op, what) in [
        ("pg_man_put", "PUT by tag"),
        ("pg_man_get", "GET by digest"),
    ] {
        for q in ["p50", "p99"] {
            add(
                s,
                &format!("{op}_{q}"),
                format!("{} manifests {what}, one at a time, {q} ms", p.manifests_n),
                "",
                None,
            );
        }
    }
    let rate = |who| m.median("pg_hot_tag_rps", who);
    let met = match (rate(PG), rate(SQLITE)) {
        (Some(pg), Some(sq)) => Some(pg >= 0.5 * sq),
        _ => None,
    };
    let secs = p.hot_duration.as_secs();
    add(
        s,
        "pg_hot_tag_rps",
        format!("manifest GET by tag, c{}, {secs} s, req/s", p.hot_conc),
        "1 node ≥ 0.5 × SQLite",
        met,
    );
    for q in ["p50", "p99"] {
        add(
            s,
            &format!("pg_hot_tag_{q}"),
            format!("manifest GET by tag, c{}, {q} ms", p.hot_conc),
            "",
            None,
        );
    }
    add(
        s,
        "pg_hot_digest_rps",
        format!(
            "manifest GET by digest (same manifest), c{}, {secs} s, req/s",
            p.hot_conc
        ),
        "",
        None,
    );
    add(
        s,
        "pg_hot_digest_p99",
        format!(
            "manifest GET by digest (same manifest), c{}, p99 ms",
            p.hot_conc
        ),
        "",
        None,
    );
    let s = "a tag moved on one node, asked for on the next one";
    let count = m.median("pg_move_count", PG3).unwrap_or(0.0);
    add(
        s,
        "pg_move_count",
        format!(
            "tag moves (PUT on a node, then GET by tag on the next node until it answers the new manifest), of {}",
            p.moves
        ),
        "",
        None,
    );
    for (q, what) in [("p50", "p50"), ("p99", "p99"), ("max", "slowest")] {
        add(
            s,
            &format!("pg_move_seen_{q}"),
            format!("from the PUT's 201 to the new manifest on the next node, {what} ms"),
            "",
            None,
        );
    }
    add(
        s,
        "pg_move_get_p50",
        "one GET by tag on the next node, p50 ms".into(),
        "",
        None,
    );
    let stale = m.max("pg_move_stale", PG3);
    add(
        s,
        "pg_move_stale",
        "answers with the old manifest after the PUT's 201".into(),
        "0",
        stale.map(|v| v == 0.0 && count > 0.0),
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_all_but_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "b1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            database_url("postgresql://u:p%2Fw@localhost/x?sslmode=disable", "b2").unwrap(),
            "postgresql://u:p%2Fw@localhost/b2?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://127.0.0.1:5432", "b3").unwrap(),
            "postgres://127.0.0.1:5432/b3"
        );
        assert!(database_url("mysql://127.0.0.1/x", "b").is_err());
    }

    #[test]
    fn only_loopback_servers() {
        for ok in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://u:pw@localhost/db",
            "postgres://[::1]:5432/db",
            "postgres:///db?host=/run/postgresql",
        ] {
            assert!(check_loopback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "postgres://db.internal:5432/x",
            "postgres://u@10.0.0.1/x",
            "postgres://127.0.0.1,10.0.0.2/x",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_left_out_of_notes() {
        assert_eq!(
            redact("postgres://u:secret@127.0.0.1:5432/db"),
            "postgres://u@127.0.0.1:5432/db"
        );
        assert_eq!(redact("postgres://127.0.0.1/db"), "postgres://127.0.0.1/db");
    }
}
