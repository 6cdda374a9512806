//! The `vulndb` scenario: importing a vulnerability database and matching an inventory
//! against it, in the benchmark's own process (berth-jobs' import, berth-service's matcher),
//! on SQLite (`vulndb.db` beside `berth.db`, as `berth serve` keeps it) and, given
//! `--postgres-url`, on PostgreSQL in a schema of its own.
//!
//! - The sources are made from the shapes of the real records in
//!   `crates/berth-scan/testdata/vulndb` (compiled in): an osv.dev-style `all.zip` (one
//!   `<ID>.json` per member) of OSV records of Ubuntu, Debian, npm, PyPI, Maven, Go and
//!   crates.io, each a fixture record of its ecosystem with a new id, aliases, package names
//!   and versions; a Debian Security Tracker JSON in the shape of the fixture's; and an Alpine
//!   secdb file, so that the three readers all run. 500,000 records in all (20,000 in quick
//!   mode), the same bytes in every run (a fixed seed).
//! - The import (`berth_jobs::vulndb::import`) into an empty store: time, records/s, and the
//!   process's peak RSS (VmHWM reset before it) beside the RSS before; then the database's size
//!   on disk. Beside it, the parse floor: the same sources read and parsed by berth-scan's
//!   readers with every entry dropped, the least an import can cost.
//! - The same sources imported again (nothing changes, nothing is published), and sources in
//!   which 1 % of the records changed, with the `packages_changed` the import reports beside
//!   the number the generator knows.
//! - An inventory of 1,000 packages (a Debian 12 image's dpkg packages and language packages,
//!   most of them named by records, half at versions below the records' fixes and half above)
//!   matched with `berth_service::vulndb::match_inventory` 20 times: p50 and slowest, beside
//!   the target of 100 ms.
//!
//! Memory is read from `/proc/self/status`: nothing else runs in the process during the
//! scenario, and freed memory is handed back to the system (`malloc_trim`) before each
//! measurement, so that what an earlier step left in the allocator does not hide a peak.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_jobs::vulndb::{ImportOptions, ImportReport, import};
use berth_meta::{MetaStore, PgOptions, VulnStore};
use berth_scan::vulndb::source::{Limits, read_path};
use berth_scan::vulndb::{canonical_ecosystem, canonical_name, matching};
use berth_scan::{Coverage, Ecosystem, Inventory, OsRelease, Package, SourcePackage};
use serde_json::{Map, Value, json};

use crate::postgres::{check_loopback, psql};
use crate::report::{Cell, Metrics, Row};
use crate::servers;
use crate::stats::{MIB, Rng, ms, percentile};

/// Who the figures belong to: the two stores.
pub const SQLITE: &str = "sqlite";
pub const PG: &str = "postgres";
/// The same sources read and parsed, every entry dropped.
pub const FLOOR: &str = "parse-floor";
/// What the generator wrote.
pub const SOURCES: &str = "sources";

/// The sources are the same bytes in every run.
const SEED: u64 = 0x05f_da7a;
/// The target for matching one inventory.
const MATCH_TARGET_MS: f64 = 100.0;
/// Share of the records changed in the third import (1 in this many).
const CHANGED_ONE_IN: usize = 100;

/// The fixture records each ecosystem's records are made from.
const UBUNTU: &[&str] = &[
    include_str!("../../berth-scan/testdata/vulndb/osv/ubuntu/UBUNTU-CVE-2014-9913.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/ubuntu/UBUNTU-CVE-2022-24823.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/ubuntu/USN-3863-1.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/ubuntu/USN-5614-1.json"),
];
const DEBIAN: &[&str] = &[include_str!(
    "../../berth-scan/testdata/vulndb/osv/debian/DSA-3029-1.json"
)];
const NPM: &[&str] = &[
    include_str!("../../berth-scan/testdata/vulndb/osv/npm/GHSA-3787-6prv-h9w3.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/npm/GHSA-m4v8-wqvr-p9f7.json"),
];
const PYPI: &[&str] = &[
    include_str!("../../berth-scan/testdata/vulndb/osv/pypi/PYSEC-2005-1.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/pypi/PYSEC-2006-1.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/pypi/PYSEC-2022-43012.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/pypi/PYSEC-2023-120.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/pypi/PYSEC-2023-237.json"),
];
const MAVEN: &[&str] = &[
    include_str!("../../berth-scan/testdata/vulndb/osv/maven/GHSA-5mg8-w23w-74h3.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/maven/GHSA-7g45-4rm6-3mm3.json"),
];
const GO: &[&str] = &[
    include_str!("../../berth-scan/testdata/vulndb/osv/go/GO-2020-0001.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/go/GO-2021-0053.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/go/GO-2022-1144.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/go/GO-2023-1571.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/go/GO-2024-2687.json"),
];
const CRATES: &[&str] = &[
    include_str!("../../berth-scan/testdata/vulndb/osv/crates.io/RUSTSEC-2016-0001.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/crates.io/RUSTSEC-2018-0002.json"),
    include_str!("../../berth-scan/testdata/vulndb/osv/crates.io/RUSTSEC-2019-0009.json"),
];
const TRACKER: &str =
    include_str!("../../berth-scan/testdata/vulndb/debian-security-tracker/debian.json");
const SECDB: &str = include_str!("../../berth-scan/testdata/vulndb/alpine-secdb/v3.4/main.json");

/// Where a record's packages come from: its ecosystem, and how its names and versions look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Ubuntu,
    Debian,
    Npm,
    PyPi,
    Maven,
    Go,
    Crates,
}

/// One ecosystem of the OSV records: its share of them (percent), how many distinct packages
/// it names in full mode, and its fixture records.
struct Shape {
    kind: Kind,
    percent: u64,
    names: usize,
    templates: &'static [&'static str],
}

/// The mix, roughly osv.dev's (without its hundreds of thousands of npm malware reports):
/// distributions first, npm the largest language, crates.io the smallest.
const SHAPES: [Shape; 7] = [
    Shape {
        kind: Kind::Ubuntu,
        percent: 28,
        names: 4_000,
        templates: UBUNTU,
    },
    Shape {
        kind: Kind::Debian,
        percent: 24,
        names: 5_000,
        templates: DEBIAN,
    },
    Shape {
        kind: Kind::Npm,
        percent: 22,
        names: 40_000,
        templates: NPM,
    },
    Shape {
        kind: Kind::PyPi,
        percent: 12,
        names: 15_000,
        templates: PYPI,
    },
    Shape {
        kind: Kind::Maven,
        percent: 6,
        names: 8_000,
        templates: MAVEN,
    },
    Shape {
        kind: Kind::Go,
        percent: 5,
        names: 4_000,
        templates: GO,
    },
    Shape {
        kind: Kind::Crates,
        percent: 3,
        names: 1_500,
        templates: CRATES,
    },
];

/// The inventory: packages per ecosystem (Debian: binary packages, two per source package),
/// 1,000 in all.
const INVENTORY: [(Kind, usize); 6] = [
    (Kind::Debian, 350),
    (Kind::Npm, 250),
    (Kind::PyPi, 150),
    (Kind::Maven, 100),
    (Kind::Go, 100),
    (Kind::Crates, 50),
];

/// The Debian release of the inventory, and the one counted for it.
const DEBIAN_RELEASE: &str = "Debian:12";

/// Sizes of one mode.
#[derive(Debug, Clone)]
pub struct Plan {
    quick: bool,
    /// Records in all three sources.
    records: usize,
    /// Source packages of the tracker's JSON.
    tracker_packages: usize,
    /// Packages of the secdb file.
    secdb_packages: usize,
    matches: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        let (records, tracker_packages, secdb_packages) = if quick {
            (20_000, 300, 40)
        } else {
            (500_000, 3_000, 400)
        };
        Plan {
            quick,
            records,
            tracker_packages,
            secdb_packages,
            matches: 20,
        }
    }

    /// Free disk space the scenario asks for, GiB: two editions of the sources and the
    /// database (SQLite here, PostgreSQL wherever its server keeps it).
    pub fn disk_gib(&self) -> f64 {
        if self.quick { 1.0 } else { 8.0 }
    }

    pub fn json(&self) -> Value {
        json!({
            "mode": if self.quick { "quick" } else { "full" },
            "records": self.records,
            "tracker_source_packages": self.tracker_packages,
            "secdb_packages": self.secdb_packages,
            "inventory_packages": INVENTORY.iter().map(|(_, n)| n).sum::<usize>(),
            "matches": self.matches,
            "changed_share": 1.0 / CHANGED_ONE_IN as f64,
        })
    }

    /// Distinct package names of an ecosystem: the full mode's, scaled with the records.
    fn names(&self, shape: &Shape) -> usize {
        (shape.names * self.records / 500_000).max(50)
    }
}

/// What the scenario needs from the benchmark.
pub struct Env {
    pub work: PathBuf,
    pub plan: Plan,
    /// A PostgreSQL URL whose role may create schemas; None: SQLite only.
    pub postgres_url: Option<String>,
    pub nonce: u64,
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

pub async fn run(env: &Env, m: &mut Metrics) -> anyhow::Result<()> {
    let plan = &env.plan;
    std::fs::create_dir_all(&env.work)?;
    let free = servers::free_gib(&env.work).unwrap_or(f64::INFINITY);
    ensure!(
        free >= plan.disk_gib(),
        "{} has {free:.1} GiB free; the scenario needs about {} GiB",
        env.work.display(),
        plan.disk_gib()
    );

    // The sources: the tracker's and the secdb file, then both editions of all.zip at once
    // (one thread each).
    let t = Instant::now();
    let src = env.work.join("sources");
    let changed_dir = env.work.join("changed");
    std::fs::create_dir_all(&src)?;
    std::fs::create_dir_all(&changed_dir)?;
    let side = {
        let (p, dir) = (plan.clone(), src.clone());
        tokio::task::spawn_blocking(move || side_sources(&p, &dir)).await??
    };
    let osv_records = plan
        .records
        .checked_sub(side.tracker_entries + side.secdb_entries)
        .context("the tracker and secdb entries outnumber the records asked for")?;
    let editions = [
        (false, src.join("all.zip")),
        (true, changed_dir.join("all.zip")),
    ];
    let mut writers = Vec::new();
    for (changed, path) in editions.clone() {
        let p = plan.clone();
        writers.push(tokio::task::spawn_blocking(move || {
            write_zip(&p, osv_records, changed, &path)
        }));
    }
    let mut written = Vec::new();
    for w in writers {
        written.push(w.await??);
    }
    let changed_zip = written.pop().context("two editions")?;
    let mut osv = written.pop().context("two editions")?;
    for (p, n) in side.tracker_cves.iter().enumerate() {
        *osv.named.entry((Kind::Debian, p)).or_default() += n;
    }
    trim_heap();
    let sources: Vec<PathBuf> = vec![
        editions[0].1.clone(),
        side.tracker.clone(),
        side.secdb.clone(),
    ];
    let changed_sources: Vec<PathBuf> = vec![
        editions[1].1.clone(),
        side.tracker.clone(),
        side.secdb.clone(),
    ];
    let stored: u64 = sources
        .iter()
        .map(|p| std::fs::metadata(p).map(|md| md.len()))
        .sum::<std::io::Result<u64>>()?;
    progress(format!(
        "   sources written in {:.1} s: {osv_records} OSV records in all.zip ({:.0} MiB, {:.0} MiB of JSON), \
         {} tracker entries of {} source packages ({:.1} MiB), {} secdb entries; {} changed in the second edition",
        t.elapsed().as_secs_f64(),
        osv.zip_bytes as f64 / MIB,
        osv.json_bytes as f64 / MIB,
        side.tracker_entries,
        plan.tracker_packages,
        side.tracker_bytes as f64 / MIB,
        side.secdb_entries,
        changed_zip.changed,
    ));
    m.add("vulndb_records", SOURCES, plan.records as f64);
    m.add("vulndb_osv_records", SOURCES, osv_records as f64);
    m.add(
        "vulndb_tracker_entries",
        SOURCES,
        side.tracker_entries as f64,
    );
    m.add("vulndb_secdb_entries", SOURCES, side.secdb_entries as f64);
    m.add("vulndb_zip_mib", SOURCES, osv.zip_bytes as f64 / MIB);
    m.add(
        "vulndb_json_mib",
        SOURCES,
        (osv.json_bytes + side.tracker_bytes + side.secdb_bytes) as f64 / MIB,
    );
    m.add("vulndb_stored_mib", SOURCES, stored as f64 / MIB);
    m.add("vulndb_changed", SOURCES, changed_zip.changed as f64);
    m.add(
        "vulndb_packages_changed",
        SOURCES,
        changed_zip.changed_packages.len() as f64,
    );

    // The parse floor: berth-scan's readers over the same files, every entry dropped.
    let (took, entries, mem) = measured(async {
        let files = sources.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Duration, u64)> {
            let t = Instant::now();
            let mut entries = 0;
            for f in &files {
                let r = read_path(f, Limits::default(), &mut |_| Ok(()))
                    .map_err(|e| anyhow::anyhow!(e))?;
                ensure!(r.rejected == 0, "{}: {:?}", f.display(), r.rejections);
                entries += r.entries;
            }
            Ok((t.elapsed(), entries))
        })
        .await?
    })
    .await
    .map(|((took, entries), mem)| (took, entries, mem))?;
    let secs = took.as_secs_f64();
    m.add("vulndb_import_secs", FLOOR, secs);
    m.add("vulndb_import_rate", FLOOR, entries as f64 / secs);
    m.add("vulndb_rss_before", FLOOR, mem.before_mib);
    m.add("vulndb_rss_peak", FLOOR, mem.peak_mib);
    if entries != plan.records as u64 {
        m.error(
            FLOOR,
            "vulndb",
            1,
            &[format!(
                "the readers found {entries} entries, the sources hold {}",
                plan.records
            )],
        );
    }
    progress(format!(
        "   parse floor: {entries} entries in {secs:.1} s ({:.0}/s), RSS {:.0} → {:.0} MiB",
        entries as f64 / secs,
        mem.before_mib,
        mem.peak_mib
    ));

    let (inventory, naming) = inventory(&osv.named)?;
    m.add("vulndb_inventory_records", SOURCES, naming as f64);
    let stores: Vec<&str> = match env.postgres_url {
        Some(_) => vec![SQLITE, PG],
        None => {
            let why = "vulndb: PostgreSQL skipped (give --postgres-url or \
                       BERTH_BENCH_POSTGRES_URL): SQLite only";
            progress(format!("   {why}"));
            m.note(why);
            vec![SQLITE]
        }
    };
    let expected = Expected {
        records: plan.records as i64,
        changed: changed_zip.changed as i64,
        packages_changed: changed_zip.changed_packages.len() as i64,
    };
    for who in stores {
        let result = match who {
            SQLITE => {
                let dir = env.work.join("sqlite");
                std::fs::create_dir_all(&dir)?;
                let meta = MetaStore::open_sqlite(&dir.join("berth.db")).await?;
                let store = meta.vuln_store(&dir.join("vulndb.db")).await?;
                let size = || sqlite_size(&dir.join("vulndb.db"));
                let r = measure_store(
                    who,
                    &store,
                    &sources,
                    &changed_sources,
                    &inventory,
                    &expected,
                    plan,
                    &size,
                    m,
                )
                .await;
                meta.close().await;
                r
            }
            _ => {
                let url = env.postgres_url.as_deref().unwrap_or_default().trim();
                let schema =
                    Schema::create(url, &format!("bench_vulndb_{}", env.nonce % 1_000_000))?;
                let meta = MetaStore::open_postgres(&PgOptions::new(schema.url.clone())).await?;
                let store = meta.vuln_store(&env.work.join("unused.db")).await?;
                let size = || schema.size();
                let r = measure_store(
                    who,
                    &store,
                    &sources,
                    &changed_sources,
                    &inventory,
                    &expected,
                    plan,
                    &size,
                    m,
                )
                .await;
                meta.close().await;
                r
            }
        };
        if let Err(e) = result {
            eprintln!("!! vulndb on {who}: {e:#}");
            m.error(who, "vulndb", 1, &[format!("{e:#}")]);
        }
    }
    Ok(())
}

/// What the imports should report.
struct Expected {
    records: i64,
    changed: i64,
    packages_changed: i64,
}

/// The three imports and the matches on one store.
#[allow(clippy::too_many_arguments)]
async fn measure_store(
    who: &str,
    store: &VulnStore,
    sources: &[PathBuf],
    changed_sources: &[PathBuf],
    inventory: &Inventory,
    expected: &Expected,
    plan: &Plan,
    size: &dyn Fn() -> anyhow::Result<u64>,
    m: &mut Metrics,
) -> anyhow::Result<()> {
    let opts = ImportOptions {
        merge: false,
        max_record_bytes: 32 << 20,
        max_download_bytes: 4 << 30,
        download_timeout: Duration::from_secs(30 * 60),
        ca_file: None,
        holder: "bench".into(),
    };
    let names = |paths: &[PathBuf]| -> Vec<String> {
        paths.iter().map(|p| p.display().to_string()).collect()
    };
    let mut wrong = Vec::new();

    // The first import, into an empty store.
    // Timed here, from the call to its return (the report's own duration has changed form).
    let (first, mem) = measured(async {
        let t = Instant::now();
        let report = import(store, &names(sources), &opts)
            .await
            .context("the first import")?;
        Ok((report, t.elapsed()))
    })
    .await?;
    let (first, took) = first;
    let secs = took.as_secs_f64();
    m.add("vulndb_import_secs", who, secs);
    m.add("vulndb_import_rate", who, first.added as f64 / secs);
    m.add("vulndb_rss_before", who, mem.before_mib);
    m.add("vulndb_rss_peak", who, mem.peak_mib);
    m.add("vulndb_added", who, first.added as f64);
    let bytes = size()?;
    m.add("vulndb_db_mib", who, bytes as f64 / MIB);
    if (first.added, first.rejected, first.duplicates) != (expected.records, 0, 0) {
        wrong.push(format!(
            "the first import added {} records ({} rejected, {} duplicates; first reasons: {:?}), \
             the sources hold {}",
            first.added, first.rejected, first.duplicates, first.rejections, expected.records
        ));
    }
    progress(format!(
        "   {who}: imported {} records in {secs:.1} s ({:.0}/s), RSS {:.0} → {:.0} MiB, database {:.0} MiB",
        first.added,
        first.added as f64 / secs,
        mem.before_mib,
        mem.peak_mib,
        bytes as f64 / MIB
    ));

    // The same sources again: nothing to publish.
    let t = Instant::now();
    let again = import(store, &names(sources), &opts)
        .await
        .context("the second import")?;
    let again_secs = t.elapsed().as_secs_f64();
    m.add("vulndb_again_secs", who, again_secs);
    if again.published || again.unchanged != expected.records {
        wrong.push(format!(
            "importing the same sources again published {} ({} unchanged of {})",
            again.published, again.unchanged, expected.records
        ));
    }
    progress(format!(
        "   {who}: the same sources again in {:.1} s (published: {})",
        again_secs, again.published
    ));

    // 1 % of the records changed.
    let t = Instant::now();
    let changed: ImportReport = import(store, &names(changed_sources), &opts)
        .await
        .context("the import with changed records")?;
    let changed_secs = t.elapsed().as_secs_f64();
    m.add("vulndb_changed_secs", who, changed_secs);
    m.add("vulndb_changed", who, changed.changed as f64);
    m.add(
        "vulndb_packages_changed",
        who,
        changed.packages_changed as f64,
    );
    if !changed.published
        || changed.changed != expected.changed
        || changed.added + changed.withdrawn != 0
    {
        wrong.push(format!(
            "the import with {} changed records reported {} changed, {} added, {} withdrawn",
            expected.changed, changed.changed, changed.added, changed.withdrawn
        ));
    }
    progress(format!(
        "   {who}: {} changed records in {:.1} s, {} packages changed (the generator changed {})",
        changed.changed, changed_secs, changed.packages_changed, expected.packages_changed
    ));

    // Matching.
    let mut took = Vec::new();
    let mut findings = 0;
    let mut affected = BTreeSet::new();
    for _ in 0..plan.matches {
        let t = Instant::now();
        let v = berth_service::vulndb::match_inventory(store, inventory)
            .await
            .context("matching")?;
        took.push(ms(t.elapsed()));
        findings = v.findings.len();
        affected = v
            .findings
            .iter()
            .map(|f| (f.package.clone(), f.path.clone()))
            .collect();
        if !v.not_covered.is_empty() {
            wrong.push(format!("packages not covered: {:?}", v.not_covered));
        }
    }
    // The same lookups alone: what of a match is the database's.
    let mut alone = Vec::new();
    let mut fetched = 0;
    for _ in 0..plan.matches {
        let t = Instant::now();
        fetched = lookups(store, inventory).await?;
        alone.push(ms(t.elapsed()));
    }
    m.add_opt("vulndb_lookups_p50", who, percentile(&alone, 0.5));
    m.add("vulndb_fetched", who, fetched as f64);
    m.add_opt("vulndb_match_p50", who, percentile(&took, 0.5));
    m.add_opt("vulndb_match_max", who, percentile(&took, 1.0));
    m.add("vulndb_findings", who, findings as f64);
    m.add("vulndb_affected_packages", who, affected.len() as f64);
    progress(format!(
        "   {who}: matched {} packages {} times: p50 {:.1} ms, slowest {:.1} ms, {findings} findings in {} packages; \
         its lookups alone p50 {:.1} ms, {fetched} rows",
        inventory.packages.len(),
        plan.matches,
        percentile(&took, 0.5).unwrap_or(f64::NAN),
        percentile(&took, 1.0).unwrap_or(f64::NAN),
        affected.len(),
        percentile(&alone, 0.5).unwrap_or(f64::NAN),
    ));
    wrong.dedup();
    m.error(who, "vulndb", wrong.len() as u64, &wrong);
    Ok(())
}

/// The database lookups `match_inventory` makes for `inventory` (whether each ecosystem is
/// covered, then the records naming its packages), without parsing or matching what they
/// return: how many rows they return.
async fn lookups(store: &VulnStore, inventory: &Inventory) -> anyhow::Result<usize> {
    let version = store.published_version().await?;
    let mut by_ecosystem: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &inventory.packages {
        if let Ok(t) = matching::target(p, inventory.os.as_ref()) {
            by_ecosystem.entry(t.ecosystem).or_default().insert(t.name);
        }
    }
    let mut rows = 0;
    for (ecosystem, names) in by_ecosystem {
        if !store.covers(version, &ecosystem).await? {
            continue;
        }
        let names: Vec<String> = names.into_iter().collect();
        rows += store.lookup(version, &ecosystem, &names).await?.len();
    }
    Ok(rows)
}

/// Memory around a measured step: RSS before, and the process's peak during it.
struct Mem {
    before_mib: f64,
    peak_mib: f64,
}

/// Runs `fut` between a reset of the process's peak RSS and a reading of it.
async fn measured<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(T, Mem)> {
    trim_heap();
    let pid = std::process::id();
    let before = servers::mem_of(pid).context("reading /proc/self/status")?;
    // Resets VmHWM to the current RSS (as servers::Server::reset_peak does for a server).
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS")?;
    let out = fut.await?;
    let after = servers::mem_of(pid).context("reading /proc/self/status")?;
    Ok((
        out,
        Mem {
            before_mib: before.rss_kib as f64 / 1024.0,
            peak_mib: after.hwm_kib as f64 / 1024.0,
        },
    ))
}

/// Hands memory the allocator holds but nothing uses back to the system, so that the next
/// peak is the next step's own.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The SQLite database's size on disk: the file and its write-ahead log.
fn sqlite_size(db: &Path) -> anyhow::Result<u64> {
    let mut total = std::fs::metadata(db)
        .with_context(|| format!("{}", db.display()))?
        .len();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if let Ok(md) = std::fs::metadata(&wal) {
        total += md.len();
    }
    Ok(total)
}

/// A schema of the benchmark's own on the PostgreSQL server, dropped with everything in it
/// when this is dropped. (The `postgres` scenario makes whole databases; a schema is what
/// berth-meta's tests use, and all one store needs.)
struct Schema {
    admin_url: String,
    name: String,
    /// `admin_url` with the schema as its `search_path`.
    url: String,
}

impl Schema {
    fn create(admin_url: &str, name: &str) -> anyhow::Result<Schema> {
        check_loopback(admin_url)?;
        psql(admin_url, &format!("CREATE SCHEMA \"{name}\""))?;
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        Ok(Schema {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url: format!("{admin_url}{sep}options=-c%20search_path%3D{name}"),
        })
    }

    /// The vulnerability tables with their indexes and TOAST, bytes.
    fn size(&self) -> anyhow::Result<u64> {
        let out = psql(
            &self.admin_url,
            &format!(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = '{}' AND c.relkind = 'r' AND c.relname LIKE 'vuln%'",
                self.name
            ),
        )?;
        out.parse()
            .with_context(|| format!("the tables' size: {out:?}"))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        if let Err(e) = psql(&self.admin_url, &sql) {
            eprintln!("!! dropping the schema {}: {e:#}", self.name);
        }
    }
}

// ---- The sources -------------------------------------------------------------------------

/// A value in `0..1`.
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A package index in `0..n`, the low ones far more often (density ∝ 1 / (x + 10)): a few
/// packages have thousands of records, most have a handful, as in the real databases.
fn popular(rng: &mut Rng, n: usize) -> usize {
    const C: f64 = 10.0;
    let x = C * ((n as f64 + C) / C).powf(unit(rng)) - C;
    (x as usize).min(n - 1)
}

const WORDS: [&str; 32] = [
    "auth", "cache", "crypt", "http", "json", "xml", "yaml", "image", "zlib", "log", "mail", "net",
    "parse", "path", "proto", "queue", "rpc", "sql", "ssh", "ssl", "tar", "tmpl", "text", "time",
    "tls", "url", "uuid", "web", "zip", "core", "util", "stream",
];

/// Package number `i` of an ecosystem, spelled as that ecosystem spells names (and already in
/// the form the database indexes by).
fn package_name(kind: Kind, i: usize) -> String {
    let (a, b) = (WORDS[i % 32], WORDS[(i / 32) % 32]);
    match kind {
        // Ubuntu and Debian share their source packages' names, as they do.
        Kind::Ubuntu | Kind::Debian => format!("{a}{b}{i}"),
        Kind::Npm if i.is_multiple_of(5) => format!("@{a}/{b}-{i}"),
        Kind::Npm | Kind::PyPi | Kind::Crates => format!("{a}-{b}-{i}"),
        Kind::Maven => format!("org.{a}.{b}:{a}-{b}-{i}"),
        Kind::Go => format!("github.com/{a}-{i}/{b}"),
    }
}

/// A version `major.minor.patch` and a packaging revision.
#[derive(Clone, Copy)]
struct Ver(u64, u64, u64, u64);

impl Ver {
    fn start(rng: &mut Rng) -> Ver {
        Ver(rng.below(3), rng.below(10), rng.below(10), 1 + rng.below(4))
    }

    /// A later version.
    fn bump(self, rng: &mut Rng) -> Ver {
        if rng.below(4) == 0 {
            Ver(self.0 + 1, 0, rng.below(5), 1 + rng.below(4))
        } else {
            Ver(
                self.0,
                self.1 + 1 + rng.below(3),
                rng.below(10),
                1 + rng.below(4),
            )
        }
    }

    fn show(self, kind: Kind) -> String {
        let Ver(a, b, c, r) = self;
        match kind {
            Kind::Ubuntu => format!("{a}.{b}.{c}-{r}ubuntu0.1"),
            Kind::Debian => format!("{a}.{b}.{c}-{r}"),
            _ => format!("{a}.{b}.{c}"),
        }
    }
}

/// The letters of GHSA ids.
const GHSA: &[u8] = b"23456789cfghjmpqrvwx";

/// A GHSA id, distinct for each `n`.
fn ghsa(n: u64) -> String {
    let mut n = n.wrapping_mul(0x2545_f491_4f6c_dd1d) % 20u64.pow(12);
    let mut out = String::from("GHSA");
    for i in 0..12 {
        if i % 4 == 0 {
            out.push('-');
        }
        out.push(GHSA[(n % 20) as usize] as char);
        n /= 20;
    }
    out
}

/// A CVE id, distinct for each `n`.
fn cve(n: u64) -> String {
    format!("CVE-{}-{}", 1999 + n % 27, 10_000 + n)
}

/// Record `i`'s id, in its template's form (`PYSEC-2005-1` → `PYSEC-<year>-<i>`).
fn record_id(template: &str, i: u64) -> String {
    if template.starts_with("GHSA-") {
        return ghsa(i * 8);
    }
    let prefix = &template[..template.find(|c: char| c.is_ascii_digit()).unwrap_or(0)];
    format!("{prefix}{}-{}", 1999 + i % 27, i + 1)
}

/// An alias of record `i` (its `k`th) in the form of `old`.
fn alias(old: &str, i: u64, k: u64) -> String {
    if old.starts_with("GHSA-") {
        ghsa(i * 8 + 1 + k)
    } else if let Some(rest) = old.strip_prefix("UBUNTU-") {
        format!("UBUNTU-{}", alias(rest, i, k))
    } else if old.starts_with("CVE-") {
        cve(i * 8 + k)
    } else {
        let prefix = old.rsplit_once('-').map_or("", |(p, _)| p);
        format!("{prefix}-{}", i * 8 + k)
    }
}

/// Whether an `introduced` event opens the range at the first version.
fn from_the_start(v: &Value) -> bool {
    matches!(v.as_str(), Some("0" | "0.0.0-0"))
}

/// OSV record `i` made from `template`: a new id, aliases, package names and versions (and,
/// in the changed edition, a new `modified` and `details`). Returns its id, and the
/// `(ecosystem, name)` of the packages it names (canonical).
fn osv_record(
    shape: &Shape,
    template: &Value,
    names: usize,
    i: u64,
    changed: bool,
    rng: &mut Rng,
) -> (Value, String, Vec<(String, String)>) {
    let mut v = template.clone();
    let old_id = v["id"].as_str().unwrap_or("X-0").to_owned();
    let id = record_id(&old_id, i);
    v["id"] = Value::String(id.clone());
    for field in ["aliases", "upstream"] {
        if let Some(list) = v.get_mut(field).and_then(Value::as_array_mut) {
            for (k, a) in list.iter_mut().enumerate() {
                let new = alias(a.as_str().unwrap_or(""), i, k as u64);
                *a = Value::String(new);
            }
        }
    }
    if changed {
        v["modified"] = Value::String("2026-12-01T00:00:00Z".into());
        let details = v["details"].as_str().unwrap_or("").to_owned();
        v["details"] = Value::String(format!("Updated: {details}"));
    }
    // The first package's name is this record's; another package of the template (Go's
    // `stdlib` beside `golang.org/x/net`) gets another name of the same ecosystem.
    let first = v["affected"][0]["package"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let mine = package_name(shape.kind, popular(rng, names));
    let mut others: HashMap<String, String> = HashMap::new();
    let debian = format!("Debian:{}", 10 + rng.below(3));
    let mut named = Vec::new();
    for a in v["affected"].as_array_mut().into_iter().flatten() {
        let pkg = &mut a["package"];
        let old = pkg["name"].as_str().unwrap_or("").to_owned();
        let new = if old == first {
            mine.clone()
        } else {
            others
                .entry(old.clone())
                .or_insert_with(|| package_name(shape.kind, popular(rng, names)))
                .clone()
        };
        if let Some(purl) = pkg.get("purl").and_then(Value::as_str) {
            let purl = purl.replace(&format!("/{old}@"), &format!("/{new}@"));
            pkg["purl"] = Value::String(purl);
        }
        pkg["name"] = Value::String(new.clone());
        if shape.kind == Kind::Debian {
            pkg["ecosystem"] = Value::String(debian.clone());
        }
        let ecosystem = canonical_ecosystem(pkg["ecosystem"].as_str().unwrap_or(""));
        named.push((canonical_name(&ecosystem, &new), ecosystem));
        for range in a
            .get_mut("ranges")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            // GIT ranges name commits: the import drops them, they stay as they are.
            if !matches!(range["type"].as_str(), Some("ECOSYSTEM" | "SEMVER")) {
                continue;
            }
            let mut at = Ver::start(rng);
            for event in range["events"].as_array_mut().into_iter().flatten() {
                for (what, version) in event.as_object_mut().into_iter().flatten() {
                    if what == "introduced" && from_the_start(version) {
                        continue;
                    }
                    at = at.bump(rng);
                    *version = Value::String(at.show(shape.kind));
                }
            }
        }
    }
    let mut packages: Vec<(String, String)> = named.into_iter().map(|(n, e)| (e, n)).collect();
    packages.sort();
    packages.dedup();
    (v, id, packages)
}

/// What an edition of all.zip holds.
struct Zip {
    zip_bytes: u64,
    json_bytes: u64,
    /// Records in which `(kind, package index)` is named for the inventory's ecosystems
    /// (Debian: in `Debian:12` only; the tracker's are added to it).
    named: HashMap<(Kind, usize), u64>,
    /// Records changed in this edition, and the packages they name.
    changed: usize,
    changed_packages: BTreeSet<(String, String)>,
}

/// Whether record `i` of `n` is one of the changed edition's.
fn is_changed(i: usize, n: usize) -> bool {
    let want = (n / CHANGED_ONE_IN).max(1);
    let step = (n / want).max(1);
    i.is_multiple_of(step) && i / step < want
}

/// Writes an edition of all.zip: `n` OSV records (the same in both editions but for the
/// changed ones).
fn write_zip(plan: &Plan, n: usize, changed_edition: bool, path: &Path) -> anyhow::Result<Zip> {
    let shapes: Vec<(&Shape, Vec<Value>)> = SHAPES
        .iter()
        .map(|s| {
            let t = s
                .templates
                .iter()
                .map(|t| serde_json::from_str(t))
                .collect::<Result<Vec<Value>, _>>()?;
            Ok((s, t))
        })
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        SHAPES.iter().map(|s| s.percent).sum::<u64>() == 100,
        "the shares of the ecosystems add up to 100"
    );
    let file = File::create(path).with_context(|| format!("{}", path.display()))?;
    let mut zip = zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    // Level 1: the benchmark should not spend minutes compressing; inflating costs the
    // readers about the same at any level.
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1));
    let mut out = Zip {
        zip_bytes: 0,
        json_bytes: 0,
        named: HashMap::new(),
        changed: 0,
        changed_packages: BTreeSet::new(),
    };
    let mut buf = Vec::new();
    for i in 0..n {
        let mut rng = Rng::new(SEED ^ (i as u64).wrapping_mul(0x9E37_79B9));
        let mut pick = rng.below(100);
        let (shape, templates) = shapes
            .iter()
            .find(|(s, _)| {
                if pick < s.percent {
                    true
                } else {
                    pick -= s.percent;
                    false
                }
            })
            .context("the shares add up to 100")?;
        let template = &templates[rng.below(templates.len() as u64) as usize];
        let changed = changed_edition && is_changed(i, n);
        let (record, id, packages) = osv_record(
            shape,
            template,
            plan.names(shape),
            i as u64,
            changed,
            &mut rng,
        );
        if changed {
            out.changed += 1;
            out.changed_packages.extend(packages.iter().cloned());
        }
        for (ecosystem, name) in &packages {
            let kind = match ecosystem.as_str() {
                DEBIAN_RELEASE => Kind::Debian,
                "npm" => Kind::Npm,
                "PyPI" => Kind::PyPi,
                "Maven" => Kind::Maven,
                "Go" => Kind::Go,
                "crates.io" => Kind::Crates,
                _ => continue,
            };
            if let Some(index) = name_index(name) {
                *out.named.entry((kind, index)).or_default() += 1;
            }
        }
        buf.clear();
        serde_json::to_writer(&mut buf, &record)?;
        out.json_bytes += buf.len() as u64;
        zip.start_file(format!("{id}.json"), options)?;
        zip.write_all(&buf)?;
    }
    let mut file = zip.finish()?;
    file.flush()?;
    out.zip_bytes = file.get_ref().metadata()?.len();
    Ok(out)
}

/// The package index in a name [`package_name`] made (its last digits).
fn name_index(name: &str) -> Option<usize> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = name[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |p| p + 1);
    name[start..end].parse().ok()
}

/// The tracker's JSON and the secdb file.
struct SideSources {
    tracker: PathBuf,
    tracker_entries: usize,
    /// CVEs of each source package (package index → count), all of them in bookworm.
    tracker_cves: Vec<u64>,
    tracker_bytes: u64,
    secdb: PathBuf,
    secdb_entries: usize,
    secdb_bytes: u64,
}

/// Writes the Debian tracker's JSON (the Debian packages most named by the OSV records,
/// 1-10 CVEs each, in four releases) and an Alpine secdb file.
fn side_sources(plan: &Plan, dir: &Path) -> anyhow::Result<SideSources> {
    let mut rng = Rng::new(SEED ^ 0x7ac4e2);
    // The tracker: the fixture's first CVE, for each package and CVE, with today's releases.
    let fixture: Value = serde_json::from_str(TRACKER)?;
    let cve_shape = fixture
        .as_object()
        .and_then(|pkgs| pkgs.values().next())
        .and_then(Value::as_object)
        .and_then(|cves| cves.values().next())
        .context("the tracker fixture has a package with a CVE")?
        .clone();
    let release_shape = cve_shape["releases"]
        .as_object()
        .and_then(|r| r.values().next())
        .context("the tracker fixture's CVE has a release")?
        .clone();
    let mut tracker = Map::new();
    let mut tracker_entries = 0;
    let mut tracker_cves = Vec::new();
    let mut serial = 0u64;
    for p in 0..plan.tracker_packages {
        let mut cves = Map::new();
        for _ in 0..1 + rng.below(10) {
            serial += 1;
            let mut c = cve_shape.clone();
            c["debianbug"] = json!(900_000 + serial);
            let mut releases = Map::new();
            let mut at = Ver::start(&mut rng);
            for codename in ["bullseye", "bookworm", "trixie", "sid"] {
                at = at.bump(&mut rng);
                let mut r = release_shape.clone();
                let installed = at.show(Kind::Debian);
                r["repositories"] = json!({ codename: installed });
                r["urgency"] =
                    json!(["low", "medium", "high", "unimportant"][rng.below(4) as usize]);
                let obj = r.as_object_mut().context("a release is an object")?;
                match rng.below(20) {
                    0..=15 => {
                        obj.insert("status".into(), json!("resolved"));
                        obj.insert("fixed_version".into(), json!(installed));
                    }
                    16 => {
                        obj.insert("status".into(), json!("open"));
                        obj.remove("fixed_version");
                        obj.insert("nodsa".into(), json!("Minor issue"));
                        obj.insert("nodsa_reason".into(), json!("ignored"));
                    }
                    17 => {
                        obj.insert("status".into(), json!("open"));
                        obj.remove("fixed_version");
                        obj.insert("nodsa".into(), json!("Minor issue"));
                        obj.insert("nodsa_reason".into(), json!("postponed"));
                    }
                    18 => {
                        obj.insert("status".into(), json!("undetermined"));
                        obj.remove("fixed_version");
                    }
                    _ => {
                        obj.insert("status".into(), json!("open"));
                        obj.remove("fixed_version");
                    }
                }
                releases.insert(codename.into(), r);
            }
            c["releases"] = Value::Object(releases);
            cves.insert(cve(50_000_000 + serial), c);
            tracker_entries += 1;
        }
        tracker_cves.push(cves.len() as u64);
        tracker.insert(package_name(Kind::Debian, p), Value::Object(cves));
    }
    let tracker_path = dir.join("debian-tracker.json");
    let tracker_bytes = serde_json::to_vec(&Value::Object(tracker))?;
    std::fs::write(&tracker_path, &tracker_bytes)?;

    // The secdb file: the fixture's header, packages with 1-6 fixed versions of 1-3 CVEs.
    let mut secdb: Value = serde_json::from_str(SECDB)?;
    secdb["distroversion"] = json!("v3.20");
    let mut packages = Vec::new();
    let mut secdb_entries = 0;
    for p in 0..plan.secdb_packages {
        let mut secfixes = Map::new();
        let mut at = Ver::start(&mut rng);
        for _ in 0..1 + rng.below(6) {
            at = at.bump(&mut rng);
            let Ver(a, b, c, r) = at;
            let mut ids = Vec::new();
            for _ in 0..1 + rng.below(3) {
                serial += 1;
                ids.push(json!(cve(60_000_000 + serial)));
                secdb_entries += 1;
            }
            secfixes.insert(format!("{a}.{b}.{c}-r{r}"), Value::Array(ids));
        }
        packages.push(
            json!({ "pkg": { "name": package_name(Kind::Debian, p), "secfixes": secfixes } }),
        );
    }
    secdb["packages"] = Value::Array(packages);
    let secdb_path = dir.join("alpine-v3.20-main.json");
    let secdb_bytes = serde_json::to_vec(&secdb)?;
    std::fs::write(&secdb_path, &secdb_bytes)?;
    Ok(SideSources {
        tracker: tracker_path,
        tracker_entries,
        tracker_cves,
        tracker_bytes: tracker_bytes.len() as u64,
        secdb: secdb_path,
        secdb_entries,
        secdb_bytes: secdb_bytes.len() as u64,
    })
}

// ---- The inventory -------------------------------------------------------------------------

/// 1,000 packages of a Debian 12 image: 9 in 10 named by records (chosen evenly among the
/// packages that have any, not by popularity), 1 in 10 named by none; half at a version
/// below the records' fixes, half above all of them.
///
/// Also returns how many records name its packages (what the matcher's lookups should find).
fn inventory(named: &HashMap<(Kind, usize), u64>) -> anyhow::Result<(Inventory, u64)> {
    let mut rng = Rng::new(SEED ^ 0x1a7e);
    let mut packages = Vec::new();
    let mut naming = 0;
    for (kind, n) in INVENTORY {
        // Debian: two binary packages per source package.
        let wanted = if kind == Kind::Debian { n / 2 } else { n };
        let mut known: Vec<usize> = named
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, i)| *i)
            .collect();
        known.sort_unstable();
        let listed = wanted * 9 / 10;
        ensure!(
            known.len() >= listed,
            "only {} {kind:?} packages have records; the inventory wants {listed}",
            known.len()
        );
        // A partial Fisher-Yates shuffle: `listed` distinct packages.
        for j in 0..listed {
            let k = j + rng.below((known.len() - j) as u64) as usize;
            known.swap(j, k);
        }
        naming += known[..listed]
            .iter()
            .map(|i| named.get(&(kind, *i)).copied().unwrap_or(0))
            .sum::<u64>();
        let mut chosen: Vec<String> = known[..listed]
            .iter()
            .map(|&i| package_name(kind, i))
            .collect();
        chosen.extend((0..wanted - listed).map(|j| format!("unlisted-{j}")));
        for (j, name) in chosen.iter().enumerate() {
            let version = if j % 2 == 0 {
                Ver::start(&mut rng)
            } else {
                Ver(90 + rng.below(9), rng.below(10), rng.below(10), 1)
            };
            let shown = version.show(kind);
            let p = match kind {
                Kind::Debian => {
                    for binary in [name.clone(), format!("lib{name}-common")] {
                        let mut p =
                            Package::new(Ecosystem::Deb, &binary, &shown, "var/lib/dpkg/status");
                        p.source = Some(SourcePackage {
                            name: name.clone(),
                            version: shown.clone(),
                        });
                        packages.push(p);
                    }
                    continue;
                }
                Kind::Npm => Package::new(
                    Ecosystem::Npm,
                    name,
                    &shown,
                    &format!("srv/app/node_modules/{name}/package.json"),
                ),
                Kind::PyPi => Package::new(
                    Ecosystem::Pypi,
                    name,
                    &shown,
                    &format!("usr/lib/python3/dist-packages/{name}.dist-info/METADATA"),
                ),
                Kind::Maven => Package::new(Ecosystem::Maven, name, &shown, "srv/app/app.jar"),
                Kind::Go => {
                    Package::new(Ecosystem::Golang, name, &format!("v{shown}"), "usr/bin/app")
                }
                Kind::Crates => Package::new(Ecosystem::Cargo, name, &shown, "usr/bin/tool"),
                Kind::Ubuntu => bail!("the inventory is a Debian image's"),
            };
            packages.push(p);
        }
    }
    let inventory = Inventory {
        coverage: Coverage::Complete,
        os: Some(OsRelease {
            id: "debian".into(),
            version_id: Some("12".into()),
            version_codename: Some("bookworm".into()),
            pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
        }),
        packages,
        skipped: Vec::new(),
        errors: Vec::new(),
    };
    Ok((inventory, naming))
}

// ---- The table -----------------------------------------------------------------------------

/// The rows of the table, when the scenario ran.
pub fn rows(m: &Metrics, quick: bool, judge: bool) -> Vec<Row> {
    let p = Plan::new(quick);
    let med = |id: &str, who: &str| m.median(id, who);
    let mut rows = Vec::new();
    let Some(records) = med("vulndb_records", SOURCES) else {
        return rows;
    };
    let count = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0}"));
    let mut add = |section: &'static str,
                   id: &str,
                   label: String,
                   berth: Option<f64>,
                   reference: Cell,
                   reference_what: &str,
                   target: &str,
                   met: Option<bool>| {
        rows.push(Row {
            section,
            id: id.to_owned(),
            label,
            berth: berth.into(),
            dist: Cell::None,
            reference,
            reference_what: reference_what.to_owned(),
            target: target.to_owned(),
            met: if judge { met } else { None },
        });
    };
    for (who, section) in [
        (SQLITE, "vulnerability database on SQLite (vulndb)"),
        (PG, "vulnerability database on PostgreSQL (vulndb)"),
    ] {
        if med("vulndb_import_secs", who).is_none() && med("vulndb_match_p50", who).is_none() {
            continue;
        }
        add(
            section,
            "vulndb_import_secs",
            format!(
                "import of {records:.0} records ({} OSV in all.zip of {} MiB, {} tracker, {} secdb), s",
                count(med("vulndb_osv_records", SOURCES)),
                count(med("vulndb_zip_mib", SOURCES)),
                count(med("vulndb_tracker_entries", SOURCES)),
                count(med("vulndb_secdb_entries", SOURCES)),
            ),
            med("vulndb_import_secs", who),
            med("vulndb_import_secs", FLOOR).into(),
            "reading and parsing alone",
            "",
            None,
        );
        add(
            section,
            "vulndb_import_rate",
            "import, records/s".into(),
            med("vulndb_import_rate", who),
            med("vulndb_import_rate", FLOOR).into(),
            "reading and parsing alone",
            "",
            None,
        );
        add(
            section,
            "vulndb_rss_peak",
            "peak RSS of the benchmark's process during the import (VmHWM), MiB".into(),
            m.max("vulndb_rss_peak", who),
            m.max("vulndb_rss_peak", FLOOR).into(),
            "reading and parsing alone",
            "",
            None,
        );
        add(
            section,
            "vulndb_rss_before",
            "RSS before the import, MiB".into(),
            med("vulndb_rss_before", who),
            med("vulndb_rss_before", FLOOR).into(),
            "before reading alone",
            "",
            None,
        );
        add(
            section,
            "vulndb_db_mib",
            if who == SQLITE {
                "vulndb.db on disk after the import (with its WAL), MiB".into()
            } else {
                "the vuln_* tables after the import (indexes and TOAST included), MiB".into()
            },
            med("vulndb_db_mib", who),
            med("vulndb_json_mib", SOURCES).into(),
            "the sources' JSON",
            "",
            None,
        );
        add(
            section,
            "vulndb_again_secs",
            "the same sources imported again (nothing published), s".into(),
            med("vulndb_again_secs", who),
            med("vulndb_import_secs", who).into(),
            "first import",
            "",
            None,
        );
        add(
            section,
            "vulndb_changed_secs",
            format!(
                "import with 1 % of the records changed ({}), s",
                count(med("vulndb_changed", SOURCES))
            ),
            med("vulndb_changed_secs", who),
            med("vulndb_import_secs", who).into(),
            "first import",
            "",
            None,
        );
        add(
            section,
            "vulndb_packages_changed",
            "packages_changed reported by that import".into(),
            med("vulndb_packages_changed", who),
            med("vulndb_packages_changed", SOURCES).into(),
            "named by the changed records",
            "",
            None,
        );
        let inventory: usize = INVENTORY.iter().map(|(_, n)| n).sum();
        let target = format!("< {MATCH_TARGET_MS:.0} ms");
        for (id, what) in [("vulndb_match_p50", "p50"), ("vulndb_match_max", "slowest")] {
            let v = med(id, who);
            let (reference, reference_what) = if id == "vulndb_match_p50" {
                (
                    med("vulndb_lookups_p50", who).into(),
                    "its database lookups alone",
                )
            } else {
                (Cell::None, "")
            };
            add(
                section,
                id,
                format!(
                    "matching {inventory} packages (Debian 12 and 5 languages), {} times, {what}, ms",
                    p.matches
                ),
                v,
                reference,
                reference_what,
                &target,
                v.map(|v| v < MATCH_TARGET_MS),
            );
        }
        add(
            section,
            "vulndb_fetched",
            "advisory rows those lookups return".into(),
            med("vulndb_fetched", who),
            med("vulndb_inventory_records", SOURCES).into(),
            "records naming the packages",
            "",
            None,
        );
        add(
            section,
            "vulndb_findings",
            "findings of that match".into(),
            med("vulndb_findings", who),
            med("vulndb_affected_packages", who).into(),
            "packages affected",
            "",
            None,
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_scan::vulndb::osv;

    #[test]
    fn generated_records_parse_and_differ() {
        let plan = Plan::new(true);
        let mut ids = BTreeSet::new();
        let mut i = 0;
        for shape in &SHAPES {
            for t in shape.templates {
                let template: Value = serde_json::from_str(t).unwrap();
                for _ in 0..20 {
                    i += 1;
                    let mut rng = Rng::new(i);
                    let (record, id, packages) =
                        osv_record(shape, &template, plan.names(shape), i, false, &mut rng);
                    assert!(ids.insert(id.clone()), "{id} twice");
                    assert!(!packages.is_empty());
                    let bytes = serde_json::to_vec(&record).unwrap();
                    match osv::parse(&bytes) {
                        Ok(osv::Parsed::Entry(e)) => assert_eq!(e.key, id),
                        other => panic!("{id}: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn one_record_in_a_hundred_changes() {
        for n in [20_000 - 2_000, 477_000, 150] {
            let changed = (0..n).filter(|&i| is_changed(i, n)).count();
            assert_eq!(changed, (n / 100).max(1), "{n}");
        }
    }

    #[test]
    fn names_give_their_index_back() {
        for kind in [Kind::Debian, Kind::Npm, Kind::Maven, Kind::Go, Kind::Crates] {
            for i in [0, 5, 31, 32, 1_234, 39_999] {
                assert_eq!(name_index(&package_name(kind, i)), Some(i), "{kind:?} {i}");
            }
        }
        assert_ne!(ghsa(8), ghsa(16));
    }
}
