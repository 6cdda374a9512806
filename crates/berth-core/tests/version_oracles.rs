//! `berth_core::version` against the real tools: each test generates versions of one scheme
//! from a seeded generator (realistic ones and edge cases: epochs, `~`, `^`, letters,
//! pre-releases, long numbers with leading zeros, near-misses of the syntax), asks the tool
//! which it accepts and how it orders a few thousand pairs, and checks that ours agrees on
//! every one. The helpers the tools run are in `tests/oracles/`.
//!
//! They do real work only with `ORACLE_TESTS=1`; plain `cargo test` prints that they were not
//! run. With `ORACLE_TESTS=1` a missing tool fails the test, naming how to install it:
//!   - Dpkg: `dpkg --compare-versions` (Debian's dpkg).
//!   - Rpm: `rpm.vercmp` in rpm's Lua (`apt-get install rpm`).
//!   - Pep440: Python `packaging`, with `$ORACLE_PYTHON` (default `.venv/bin/python` of the
//!     workspace).
//!   - SemVer: npm's `semver` package under `$ORACLE_NODE_MODULES` (default
//!     `.cache/oracles/node_modules` of the workspace), run by `node`.
//!   - Go: no Go toolchain is needed. Versions are built from their SemVer parts, written in
//!     the Go forms (`v1.2.3`, `1.2.3`, `v1.2`, pseudo-versions, `+incompatible`, `go1.21rc2`,
//!     `1.21rc2`), and their order is checked against node-semver's order of the SemVer text
//!     `golang.org/x/mod/semver` and golang/vulndb map them to.
//!   - Maven: `ComparableVersion` from `$ORACLE_MAVEN_JAR` (default Debian's
//!     `/usr/share/maven/lib/maven-artifact-3.x.jar`), run by `java`.
//!   - RubyGems: `Gem::Version` of the RubyGems that Debian's `ruby` brings
//!     (`apt-get install --no-install-recommends ruby`), run by `ruby`.
//!
//! Not covered here: NuGet (no `dotnet`) and Apk (apk-tools is not packaged for Debian). Their
//! orderings are checked by the tables in `src/version/{nuget,apk}.rs`, written from each
//! tool's test suite and sources.
//!
//! `ORACLE_SEED` picks another seed; a failure prints the seed and the first disagreements.

use std::cmp::Ordering;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use berth_core::version::{Scheme, Version};

/// Pairs each test must have compared, both sides accepted by the tool.
const MIN_PAIRS: usize = 2000;
/// Versions each generator draws, as families of a base and near variants of it.
const POOL: usize = 900;
/// Pairs drawn from the versions the tool accepts.
const PAIRS: usize = 2600;

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn dpkg_agrees_with_dpkg() {
    if !enabled("dpkg") {
        return;
    }
    require(
        Command::new("dpkg").arg("--version"),
        "dpkg",
        "apt-get install -y dpkg",
    );
    let oracle = |input: &str| {
        // One dpkg process per question: split the work across both cores.
        let lines: Vec<&str> = input.lines().collect();
        let (first, second) = lines.split_at(lines.len() / 2);
        std::thread::scope(|s| {
            let halves = [first, second].map(|half| {
                s.spawn(move || {
                    let mut cmd = Command::new("sh");
                    cmd.arg(oracles_dir().join("dpkg.sh"));
                    run(cmd, &(half.join("\n") + "\n"))
                })
            });
            halves
                .into_iter()
                .flat_map(|h| h.join().expect("the dpkg oracle thread panicked"))
                .collect()
        })
    };
    check(Scheme::Dpkg, dpkg_version, Encoding::Plain, oracle);
}

#[test]
fn rpm_agrees_with_rpm() {
    if !enabled("rpm") {
        return;
    }
    require(
        Command::new("rpm").arg("--version"),
        "rpm",
        "apt-get install -y rpm",
    );
    let oracle = |input: &str| {
        let script = oracles_dir().join("rpm.lua");
        let mut cmd = Command::new("rpm");
        cmd.arg("--eval")
            .arg(format!("%{{lua: dofile('{}')}}", script.display()));
        run(cmd, input)
    };
    check(Scheme::Rpm, rpm_version, Encoding::Hex, oracle);
}

#[test]
fn pep440_agrees_with_packaging() {
    if !enabled("PEP 440") {
        return;
    }
    let python = std::env::var_os("ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"));
    require(
        Command::new(&python).args(["-c", "import packaging.version"]),
        &format!("Python packaging ({})", python.display()),
        "python3 -m venv .venv && .venv/bin/pip install packaging==26.4 (or set ORACLE_PYTHON)",
    );
    let oracle = |input: &str| {
        let mut cmd = Command::new(&python);
        cmd.arg(oracles_dir().join("pep440.py"));
        run(cmd, input)
    };
    check(Scheme::Pep440, pep440_version, Encoding::Hex, oracle);
}

#[test]
fn semver_agrees_with_node_semver() {
    if !enabled("SemVer") {
        return;
    }
    let oracle = node_semver_oracle();
    check(Scheme::SemVer, semver_version, Encoding::Hex, oracle);
}

#[test]
fn go_agrees_with_node_semver_on_the_mapped_versions() {
    if !enabled("Go") {
        return;
    }
    let started = Instant::now();
    let mut rng = Rng::new(seed() ^ 0x60);
    let mut versions: Vec<GoVersion> = Vec::new();
    for family in 0.. {
        if versions.len() >= POOL {
            break;
        }
        for _ in 0..=rng.below(4) {
            versions.push(go_version(&mut rng, family));
        }
    }
    let mut failures = Vec::new();
    for v in &versions {
        if let Err(e) = Version::parse(Scheme::Go, &v.text) {
            failures.push(format!(
                "we refuse {:?} (SemVer {}): {}",
                v.text, v.semver, e.reason
            ));
        }
    }
    let pairs: Vec<(usize, usize)> = (0..PAIRS)
        .map(|_| pick_pair(&mut rng, versions.len(), |i| versions[i].family))
        .collect();
    let input: String = pairs
        .iter()
        .map(|&(a, b)| {
            format!(
                "C {} {}\n",
                hex(&versions[a].semver),
                hex(&versions[b].semver)
            )
        })
        .collect();
    let answers = node_semver_oracle()(&input);
    let mut compared = 0;
    for (&(a, b), answer) in pairs.iter().zip(&answers) {
        let (va, vb) = (&versions[a], &versions[b]);
        let want = match answer.as_str() {
            "lt" => Ordering::Less,
            "eq" => Ordering::Equal,
            "gt" => Ordering::Greater,
            other => {
                failures.push(format!(
                    "node-semver refuses {} or {}: {other}",
                    va.semver, vb.semver
                ));
                continue;
            }
        };
        let ours = berth_core::version::compare(Scheme::Go, &va.text, &vb.text);
        compared += 1;
        if ours != Ok(want) {
            failures.push(format!(
                "{:?} vs {:?} (SemVer {} vs {}): node-semver says {want:?}, we say {ours:?}",
                va.text, vb.text, va.semver, vb.semver
            ));
        }
    }
    report(
        &format!("Go ({} versions)", versions.len()),
        compared,
        started,
        failures,
    );
}

#[test]
fn maven_agrees_with_comparable_version() {
    if !enabled("Maven") {
        return;
    }
    let jar = std::env::var_os("ORACLE_MAVEN_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/maven/lib/maven-artifact-3.x.jar"));
    require(
        Command::new("java").arg("-version"),
        "java",
        "apt-get install -y default-jre-headless",
    );
    assert!(
        jar.exists(),
        "the Maven oracle needs maven-artifact at {}: apt-get install -y maven \
         (or set ORACLE_MAVEN_JAR)",
        jar.display()
    );
    let oracle = |input: &str| {
        let mut cmd = Command::new("java");
        cmd.arg("-cp")
            .arg(&jar)
            .arg(oracles_dir().join("Maven.java"));
        run(cmd, input)
    };
    check(Scheme::Maven, maven_version, Encoding::Hex, oracle);
}

#[test]
fn rubygems_agrees_with_gem_version() {
    if !enabled("RubyGems") {
        return;
    }
    require(
        Command::new("ruby").args(["-e", "exit Gem::Version.correct?('1.0.a')"]),
        "ruby (Gem::Version)",
        "apt-get install -y --no-install-recommends ruby",
    );
    let oracle = |input: &str| {
        let mut cmd = Command::new("ruby");
        cmd.arg(oracles_dir().join("rubygems.rb"));
        run(cmd, input)
    };
    // The one place we are stricter on purpose: `Gem::Version.correct?` takes an empty or
    // all-blank string and `Gem::Version.new` reads it as "0", while an empty version in an
    // advisory or a lockfile is a mistake to report, not a version 0 that every range
    // matches. The oracle answers "blank" for these, which `check` counts as a refusal;
    // here we make sure the tool really takes them and that we refuse exactly them.
    let blanks = ["", " ", "\t", "\n", " \u{b}\u{c}\r ", "\r\n"];
    let input: String = blanks.iter().map(|v| format!("V {}\n", hex(v))).collect();
    let answers = oracle(&input);
    assert_eq!(
        answers.len(),
        blanks.len(),
        "the oracle answered {answers:?}"
    );
    for (v, answer) in blanks.iter().zip(&answers) {
        assert_eq!(answer, "blank", "{v:?}: Gem::Version does not read it as 0");
        assert!(
            Version::parse(Scheme::RubyGems, v).is_err(),
            "{v:?}: we accept a blank RubyGems version"
        );
    }
    check(Scheme::RubyGems, rubygems_version, Encoding::Hex, oracle);
}

// ---------------------------------------------------------------------------------------
// Running the tools and comparing.

fn enabled(tool: &str) -> bool {
    if std::env::var("ORACLE_TESTS").as_deref() == Ok("1") {
        return true;
    }
    // Straight to stderr: the test harness captures print! but not this.
    let _ = writeln!(
        std::io::stderr(),
        "version_oracles: the {tool} oracle was not run (set ORACLE_TESTS=1 to compare with the real tool)"
    );
    false
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn oracles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracles")
}

fn seed() -> u64 {
    std::env::var("ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0b3e_7a11)
}

/// Fails the test, naming the tool and its install command, when `cmd` cannot run.
fn require(cmd: &mut Command, tool: &str, install: &str) {
    let ok = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "ORACLE_TESTS=1 but {tool} is not available; install it with: {install}"
    );
}

/// Runs `cmd` with `input` on stdin and returns its stdout lines.
fn run(mut cmd: Command, input: &str) -> Vec<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("waiting for the oracle");
    writer
        .join()
        .expect("the stdin writer panicked")
        .expect("writing the oracle's input");
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("the oracle answers in UTF-8")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn node_semver_oracle() -> impl Fn(&str) -> Vec<String> {
    let modules = std::env::var_os("ORACLE_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/oracles/node_modules"));
    require(
        Command::new("node").arg("--version"),
        "node",
        "apt-get install -y nodejs",
    );
    assert!(
        modules.join("semver/package.json").exists(),
        "ORACLE_TESTS=1 but npm's semver is not under {}; install it with: \
         npm install --prefix .cache/oracles semver@7.8.6 (or set ORACLE_NODE_MODULES)",
        modules.display()
    );
    move |input: &str| {
        let mut cmd = Command::new("node");
        cmd.arg(oracles_dir().join("semver.js"))
            .env("ORACLE_NODE_MODULES", &modules);
        run(cmd, input)
    }
}

/// How versions travel to the oracle: as they are (dpkg's shell loop; no whitespace) or as
/// hex of their UTF-8 bytes.
#[derive(Clone, Copy)]
enum Encoding {
    Plain,
    Hex,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The common procedure: draw versions, ask the tool which it accepts, draw pairs among
/// those, ask the tool their order, and compare both answers with ours.
fn check(
    scheme: Scheme,
    generate: fn(&mut Rng) -> String,
    encoding: Encoding,
    oracle: impl Fn(&str) -> Vec<String>,
) {
    let started = Instant::now();
    let mut rng = Rng::new(seed() ^ scheme as u64);
    let encode = |s: &str| match encoding {
        Encoding::Plain => s.to_owned(),
        Encoding::Hex => hex(s),
    };

    // Families of a base version and near variants, so that pairs often differ by little.
    let mut versions: Vec<String> = Vec::new();
    let mut families: Vec<usize> = Vec::new();
    let mut family = 0;
    while versions.len() < POOL {
        let base = generate(&mut rng);
        let variants = rng.below(4);
        for i in 0..=variants {
            let v = if i == 0 {
                base.clone()
            } else {
                mutate(&mut rng, &base, scheme)
            };
            let plain_ok = !matches!(encoding, Encoding::Plain) || !v.contains(char::is_whitespace);
            if !v.is_empty() && plain_ok && !versions.contains(&v) {
                versions.push(v);
                families.push(family);
            }
        }
        family += 1;
    }

    let input: String = versions
        .iter()
        .map(|v| format!("V {}\n", encode(v)))
        .collect();
    let answers = oracle(&input);
    assert_eq!(
        answers.len(),
        versions.len(),
        "the oracle answered {} of {} questions",
        answers.len(),
        versions.len()
    );
    let mut failures = Vec::new();
    let mut accepted = Vec::new();
    for (i, (v, answer)) in versions.iter().zip(&answers).enumerate() {
        let tool_ok = answer == "ok";
        let ours = Version::parse(scheme, v);
        if tool_ok != ours.is_ok() {
            failures.push(format!(
                "{v:?}: the tool {}, we {}",
                if tool_ok { "accepts it" } else { "refuses it" },
                match &ours {
                    Ok(_) => "accept it".to_owned(),
                    Err(e) => format!("refuse it ({})", e.reason),
                }
            ));
        }
        if tool_ok && ours.is_ok() {
            accepted.push(i);
        }
    }

    let pairs: Vec<(usize, usize)> = (0..PAIRS)
        .map(|_| {
            let (a, b) = pick_pair(&mut rng, accepted.len(), |i| families[accepted[i]]);
            (accepted[a], accepted[b])
        })
        .collect();
    let input: String = pairs
        .iter()
        .map(|&(a, b)| format!("C {} {}\n", encode(&versions[a]), encode(&versions[b])))
        .collect();
    let answers = oracle(&input);
    assert_eq!(
        answers.len(),
        pairs.len(),
        "the oracle answered {} of {} pairs",
        answers.len(),
        pairs.len()
    );
    let mut compared = 0;
    for (&(a, b), answer) in pairs.iter().zip(&answers) {
        let (va, vb) = (&versions[a], &versions[b]);
        let want = match answer.as_str() {
            "lt" => Ordering::Less,
            "eq" => Ordering::Equal,
            "gt" => Ordering::Greater,
            other => {
                failures.push(format!("{va:?} vs {vb:?}: the tool answered {other:?}"));
                continue;
            }
        };
        compared += 1;
        let ours = berth_core::version::compare(scheme, va, vb);
        if ours != Ok(want) {
            failures.push(format!(
                "{va:?} vs {vb:?}: the tool says {want:?}, we say {ours:?}"
            ));
        }
    }
    let name = format!(
        "{scheme:?} ({} of {} versions accepted)",
        accepted.len(),
        versions.len()
    );
    report(&name, compared, started, failures);
}

fn report(name: &str, compared: usize, started: Instant, failures: Vec<String>) {
    let _ = writeln!(
        std::io::stderr(),
        "version_oracles: {name}: {compared} pairs compared in {:.1} s, {} disagreements (seed {})",
        started.elapsed().as_secs_f64(),
        failures.len(),
        seed()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} disagreements with the tool (seed {}), the first ones:\n{}",
        failures.len(),
        seed(),
        failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        compared >= MIN_PAIRS,
        "{name}: only {compared} pairs compared, want {MIN_PAIRS}"
    );
}

/// Two indices below `len`: most often two members of one family, else any two.
fn pick_pair(rng: &mut Rng, len: usize, family: impl Fn(usize) -> usize) -> (usize, usize) {
    assert!(len > 0, "no version to pair");
    let a = rng.below(len);
    if rng.chance(60) {
        let near: Vec<usize> = (a.saturating_sub(4)..(a + 5).min(len))
            .filter(|&i| i != a && family(i) == family(a))
            .collect();
        if !near.is_empty() {
            return (a, near[rng.below(near.len())]);
        }
    }
    (a, rng.below(len))
}

// ---------------------------------------------------------------------------------------
// The generators.

/// SplitMix64: small, seeded, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// A number as versions write them: mostly small, sometimes with leading zeros, a date,
    /// or very long.
    fn number(&mut self) -> String {
        match self.below(20) {
            0 => format!("0{}", self.below(100)),
            1 => format!("00{}", self.below(10)),
            2 => format!(
                "20{:02}{:02}{:02}",
                self.below(30),
                1 + self.below(12),
                1 + self.below(28)
            ),
            3 => (0..20 + self.below(6))
                .map(|_| char::from(b'0' + self.below(10) as u8))
                .collect(),
            4 => "0".repeat(1 + self.below(12)),
            5 => format!("{}", self.below(100_000)),
            _ => format!("{}", self.below(13)),
        }
    }

    /// `count` parts from `part`, joined by separators from `separators`.
    fn joined(
        &mut self,
        count: usize,
        separators: &[&str],
        mut part: impl FnMut(&mut Rng) -> String,
    ) -> String {
        let mut out = part(self);
        for _ in 1..count {
            out.push_str(self.pick(separators));
            out.push_str(&part(self));
        }
        out
    }
}

/// A near variant: one small edit, with pieces typical of the scheme.
fn mutate(rng: &mut Rng, base: &str, scheme: Scheme) -> String {
    let (pieces, keywords): (&[&str], &[&str]) = match scheme {
        Scheme::Dpkg => (
            &[
                "~", "~~", "+", ".", "-", ":", "a", "Z", "0", "00", "~rc1", "+dfsg", "\u{e9}",
                "1:", "-1",
            ],
            &[
                "~", "~~", "+", ".", "-", "a", "b", "rc", "ubuntu", "deb", "",
            ],
        ),
        Scheme::Rpm => (
            &[
                "~", "^", ".", "_", "-", ":", "a", "0", "00", "~rc1", "^git1", "\u{e9}", "+", "%",
            ],
            &["~", "^", ".", "_", "-", "rc", "git", "el", "a", ""],
        ),
        Scheme::Pep440 => (
            &[
                ".", "-", "_", "a", "b", "rc", "c", "pre", "alpha", "post", "rev", "r", "dev", "+",
                "!", "v", " ", "0", "00", "local", "\u{e9}", "1",
            ],
            &[
                "a", "b", "rc", "c", "alpha", "beta", "pre", "preview", "post", "rev", "r", "dev",
                ".", "-", "_", "+", "",
            ],
        ),
        Scheme::SemVer => (
            &[
                ".",
                "-",
                "+",
                "0",
                "01",
                "alpha",
                "A",
                "x",
                " ",
                "v",
                "\u{e9}",
                "_",
                "9007199254740992",
            ],
            &[
                "alpha", "beta", "rc", "pre", "-", ".", "+", "0", "1", "A", "",
            ],
        ),
        Scheme::RubyGems => (
            &[
                ".", "..", "-", "--", ".-", "a", "A", "b2", "0", "00", "pre", "rc1", "_", "+", "v",
                " ", "\t", "\u{b}", "\u{a0}", "\u{e9}", "\n1",
            ],
            &[
                "alpha", "beta", "rc", "pre", "a", "b", ".", "-", "0", "A", "",
            ],
        ),
        _ => (
            &[
                ".",
                "-",
                "a",
                "b",
                "m",
                "RC",
                "cr",
                "SP",
                "ga",
                "final",
                "release",
                "snapshot",
                "0",
                "00",
                "0000000000",
                "\u{661}",
                "\u{ff11}",
                "\u{130}",
                "xyz",
                "Alpha",
            ],
            &[
                "alpha",
                "a",
                "beta",
                "b",
                "milestone",
                "m",
                "rc",
                "cr",
                "snapshot",
                "ga",
                "final",
                "release",
                "sp",
                ".",
                "-",
                "abc",
                "0",
                "",
            ],
        ),
    };
    let chars: Vec<char> = base.chars().collect();
    let at = rng.below(chars.len() + 1);
    let (head, tail): (String, String) =
        (chars[..at].iter().collect(), chars[at..].iter().collect());
    let flip_case = |c: char| {
        if c.is_ascii_lowercase() {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        }
    };
    let out = match rng.below(9) {
        0 => format!("{base}{}", rng.pick(pieces)),
        1 => format!("{head}{}{tail}", rng.pick(pieces)),
        2 if !tail.is_empty() => format!(
            "{head}{}",
            &tail[tail.chars().next().map_or(0, char::len_utf8)..]
        ),
        3 => base
            .chars()
            .map(|c| {
                if c.is_ascii_digit() && rng.chance(30) {
                    char::from(b'0' + rng.below(10) as u8)
                } else {
                    c
                }
            })
            .collect(),
        4 => format!("{head}0{tail}"),
        5 => base
            .chars()
            .map(|c| if rng.chance(25) { flip_case(c) } else { c })
            .collect(),
        // Swap one keyword for another: a pre-release for a post-release, a separator for
        // another, or drop it.
        6 => {
            let found: Vec<(usize, &str)> = keywords
                .iter()
                .filter(|k| !k.is_empty())
                .flat_map(|k| base.match_indices(*k).collect::<Vec<_>>())
                .collect();
            match found.get(rng.below(found.len().max(1))) {
                Some(&(i, k)) => format!(
                    "{}{}{}",
                    &base[..i],
                    rng.pick(keywords),
                    &base[i + k.len()..]
                ),
                None => format!("{base}{}", rng.pick(keywords)),
            }
        }
        // Cut the end off: a release against its pre-releases and suffixes.
        7 if !head.is_empty() => head,
        _ => format!(
            "{head}{}{tail}",
            tail.chars().next().map(String::from).unwrap_or_default()
        ),
    };
    // node-semver refuses the "=" that we take as `semver.clean` does; keep it out.
    if scheme == Scheme::SemVer {
        out.replace('=', "")
    } else {
        out
    }
}

fn dpkg_version(rng: &mut Rng) -> String {
    let mut v = String::new();
    if rng.chance(15) {
        v.push_str(&format!(
            "{}:",
            rng.pick(&[
                "0",
                "1",
                "2",
                "10",
                "01",
                "2147483647",
                "2147483648",
                "+1",
                "a",
                ""
            ])
        ));
    }
    if rng.chance(5) {
        v.push_str(rng.pick(&["a", "~", "+", "."]));
    }
    let parts = 1 + rng.below(4);
    let upstream = rng.joined(parts, &[".", ".", "+", "~", "", ":"], |r| {
        match r.below(8) {
            0 => r
                .pick(&["a", "b", "rc1", "beta2", "dfsg", "git20240101", "ds", "Z"])
                .to_owned(),
            1 => format!("{}{}", r.number(), r.pick(&["a", "b", "p1", "~", "~~"])),
            _ => r.number(),
        }
    });
    v.push_str(&upstream);
    if rng.chance(10) {
        v.push_str(rng.pick(&["~rc1", "~~", "~", "~beta", "+really1.0", "\u{e9}"]));
    }
    if rng.chance(55) {
        v.push('-');
        v.push_str(&match rng.below(6) {
            0 => format!("{}ubuntu{}", rng.number(), rng.number()),
            1 => format!("{}+deb{}u{}", rng.number(), rng.below(13), rng.below(5)),
            2 => format!("0~{}", rng.number()),
            3 => format!("{}.{}", rng.number(), rng.number()),
            4 => rng.pick(&["", "a", "~", "1~bpo1", "0.1"]).to_owned(),
            _ => rng.number(),
        });
    }
    v
}

fn rpm_version(rng: &mut Rng) -> String {
    let mut v = String::new();
    if rng.chance(15) {
        v.push_str(&format!("{}:", rng.pick(&["0", "1", "2", "10", "01", ""])));
    }
    let parts = 1 + rng.below(4);
    v.push_str(
        &rng.joined(
            parts,
            &[".", ".", "_", "+", "~", "^", "", "%"],
            |r| match r.below(8) {
                0 => r
                    .pick(&["a", "b", "rc1", "beta", "git20240101", "pre", "Z", "\u{e9}"])
                    .to_owned(),
                1 => format!(
                    "{}{}",
                    r.number(),
                    r.pick(&["a", "p1", "~rc1", "^git1", "~"])
                ),
                _ => r.number(),
            },
        ),
    );
    if rng.chance(60) {
        v.push('-');
        v.push_str(&match rng.below(5) {
            0 => format!("{}.el{}", rng.number(), rng.below(10)),
            1 => format!("0.rc{}.fc{}", rng.number(), 30 + rng.below(10)),
            2 => format!("{}^git{}", rng.number(), rng.number()),
            3 => rng.pick(&["", "1~", "a", "-", "1.1"]).to_owned(),
            _ => rng.number(),
        });
    }
    v
}

fn pep440_version(rng: &mut Rng) -> String {
    let sep = |r: &mut Rng| r.pick(&["", "", ".", "-", "_"]).to_owned();
    let case = |r: &mut Rng, s: &str| {
        if r.chance(15) {
            s.to_uppercase()
        } else {
            s.to_owned()
        }
    };
    let mut v = String::new();
    if rng.chance(5) {
        v.push_str(rng.pick(&[" ", "\t", "\n", "\u{2003}"]));
    }
    if rng.chance(10) {
        v.push_str(rng.pick(&["v", "V"]));
    }
    if rng.chance(10) {
        v.push_str(&format!("{}!", rng.number()));
    }
    let parts = 1 + rng.below(4);
    v.push_str(&rng.joined(parts, &["."], Rng::number));
    if rng.chance(35) {
        let letter = rng.pick(&["a", "b", "rc", "c", "alpha", "beta", "pre", "preview"]);
        v.push_str(&sep(rng));
        v.push_str(&case(rng, letter));
        v.push_str(&sep(rng));
        if rng.chance(80) {
            v.push_str(&rng.number());
        }
    }
    if rng.chance(25) {
        if rng.chance(30) {
            v.push_str(&format!("-{}", rng.number()));
        } else {
            let word = rng.pick(&["post", "rev", "r"]);
            v.push_str(&sep(rng));
            v.push_str(&case(rng, word));
            v.push_str(&sep(rng));
            if rng.chance(70) {
                v.push_str(&rng.number());
            }
        }
    }
    if rng.chance(25) {
        v.push_str(&sep(rng));
        v.push_str(&case(rng, "dev"));
        v.push_str(&sep(rng));
        if rng.chance(70) {
            v.push_str(&rng.number());
        }
    }
    if rng.chance(20) {
        v.push('+');
        let parts = 1 + rng.below(3);
        v.push_str(&rng.joined(parts, &[".", "-", "_"], |r| {
            match r.below(3) {
                0 => r.number(),
                1 => r
                    .pick(&["ubuntu", "cpu", "cu121", "Abc", "local", "g1234"])
                    .to_owned(),
                _ => format!("{}", r.below(20)),
            }
        }));
    }
    if rng.chance(5) {
        v.push_str(rng.pick(&[" ", "\n", "\u{1f}"]));
    }
    v
}

/// Numbers node-semver compares exactly: below 2^53.
fn semver_number(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => format!("{}", rng.next() % 9_007_199_254_740_991),
        1 => rng
            .pick(&["9007199254740991", "9007199254740992", "01", "00"])
            .to_owned(),
        _ => format!("{}", rng.below(25)),
    }
}

fn semver_version(rng: &mut Rng) -> String {
    let mut v = String::new();
    if rng.chance(5) {
        v.push_str(rng.pick(&[" ", "\t", "\u{a0}", "\u{feff}"]));
    }
    if rng.chance(15) {
        v.push('v');
    }
    v.push_str(&format!(
        "{}.{}.{}",
        semver_number(rng),
        semver_number(rng),
        semver_number(rng)
    ));
    let identifier = |r: &mut Rng| match r.below(6) {
        0 => semver_number(r),
        1 => format!("{}", r.below(30)),
        2 => r.pick(&["0a", "-", "x-y", "A", "Z9", "a-1"]).to_owned(),
        _ => r
            .pick(&["alpha", "beta", "rc", "pre", "dev", "next", "canary"])
            .to_owned(),
    };
    if rng.chance(50) {
        v.push('-');
        let parts = 1 + rng.below(4);
        v.push_str(&rng.joined(parts, &["."], identifier));
    }
    if rng.chance(20) {
        v.push('+');
        let parts = 1 + rng.below(3);
        v.push_str(&rng.joined(parts, &["."], |r| {
            r.pick(&["build", "001", "sha", "exp-1", "20240101"])
                .to_owned()
        }));
    }
    v
}

fn maven_version(rng: &mut Rng) -> String {
    let parts = 1 + rng.below(5);
    let v = rng.joined(parts, &[".", ".", "-", "-", ""], |r| match r.below(10) {
        0 => r
            .pick(&[
                "alpha",
                "a",
                "beta",
                "b",
                "milestone",
                "m",
                "rc",
                "cr",
                "snapshot",
                "SNAPSHOT",
                "ga",
                "final",
                "release",
                "sp",
                "RC",
                "Final",
            ])
            .to_owned(),
        1 => r
            .pick(&[
                "abc",
                "jre",
                "android",
                "xyz",
                "pom",
                "M",
                "GA",
                "incubating",
                "\u{130}",
                "\u{3a3}x",
            ])
            .to_owned(),
        2 => format!(
            "{}{}",
            r.pick(&["a", "b", "m", "rc", "beta", "alpha"]),
            r.number()
        ),
        3 => r
            .pick(&[
                "\u{661}\u{662}",
                "\u{ff11}",
                "0000000000",
                "00000000000000000000",
                "1234567890",
                "",
                "-",
            ])
            .to_owned(),
        _ => r.number(),
    });
    if v.is_empty() { "0".to_owned() } else { v }
}

fn rubygems_version(rng: &mut Rng) -> String {
    let letters = |r: &mut Rng| {
        r.pick(&[
            "a", "b", "rc", "pre", "beta", "alpha", "dev", "x", "z", "RC", "Beta", "A", "ZZ",
        ])
        .to_owned()
    };
    let segment = |r: &mut Rng| match r.below(10) {
        0 => letters(r),
        // beta1, rc1, a10: a letter run and a number in one segment.
        1 => format!("{}{}", letters(r), r.below(12)),
        // 0b2, 2a, 3rc1: the mixed forms of `1.0b2`.
        2 => format!("{}{}{}", r.below(10), letters(r), r.number()),
        _ => r.number(),
    };
    let mut v = String::new();
    if rng.chance(5) {
        v.push_str(rng.pick(&[
            " ", "\t", "\n", "\u{b}", "\u{c}", "\r", "\u{a0}", "\u{3000}",
        ]));
    }
    match rng.below(8) {
        // As gems are released: 1, 1.0, 1.0.0, 3.2.22.5, then maybe a pre-release.
        0..=3 => {
            v.push_str(&format!("{}", rng.below(10)));
            for _ in 0..rng.below(4) {
                let part = if rng.chance(40) { 0 } else { rng.below(20) };
                v.push_str(&format!(".{part}"));
            }
            if rng.chance(50) {
                v.push_str(rng.pick(&[
                    ".rc1", ".rc.1", ".rc2", ".beta", ".beta.2", ".beta1", ".alpha", ".pre",
                    ".pre.1", ".a", ".b", "b2", "a", ".0.a", ".0.rc1", "-beta.1", "-rc1", "-alpha",
                    "-1",
                ]));
            }
        }
        // Numbers only, with leading zeros, dates and long numbers.
        4 | 5 => {
            v.push_str(&rng.number());
            for _ in 0..rng.below(5) {
                let part = if rng.chance(30) {
                    "0".to_owned()
                } else {
                    rng.number()
                };
                v.push('.');
                v.push_str(&part);
            }
        }
        _ => {
            v.push_str(&rng.number());
            for _ in 0..rng.below(5) {
                v.push('.');
                v.push_str(&segment(rng));
            }
        }
    }
    if rng.chance(10) {
        // The SemVer-like tail, read as ".pre.": 1.0.0-beta.1, 1.0-x-y, 1-0.
        v.push('-');
        let parts = 1 + rng.below(3);
        v.push_str(&rng.joined(parts, &[".", ".", "-"], |r| {
            match r.below(4) {
                0 => r
                    .pick(&["beta", "rc", "alpha", "x-y", "0", "pre"])
                    .to_owned(),
                1 => segment(r),
                _ => format!("{}", r.below(15)),
            }
        }));
    }
    if rng.chance(5) {
        v.push_str(rng.pick(&[" ", "\n", " \r\n", "\u{c}", "\u{0}", "\u{85}"]));
    }
    v
}

/// A Go version written in one of the Go forms, with the SemVer text it stands for.
struct GoVersion {
    text: String,
    semver: String,
    family: usize,
}

fn go_version(rng: &mut Rng, family: usize) -> GoVersion {
    // A family shares major and minor, so that its pairs often tie early.
    let major = family % 3;
    let minor = [0, 1, 2, 18, 21, 22][family % 6];
    let patch = [0, 0, 1, 2, 5, 10][rng.below(6)];
    let (pre, go_pre): (Option<String>, Option<(&str, usize)>) = match rng.below(8) {
        0 | 1 => {
            let kind = rng.pick(&["rc", "beta"]);
            let n = 1 + rng.below(3);
            (Some(format!("{kind}.{n}")), Some((kind, n)))
        }
        2 => (
            Some(format!(
                "0.2019{:02}{:02}021931-{:012x}",
                1 + rng.below(12),
                1 + rng.below(28),
                rng.next() >> 16
            )),
            None,
        ),
        3 => (
            Some(format!(
                "{}.0.20191109021931-daa7c04131f5",
                rng.pick(&["pre", "alpha"])
            )),
            None,
        ),
        4 => (
            Some(
                rng.pick(&["alpha", "alpha.1", "beta.11", "rc.1", "0", "1-x", "A"])
                    .to_owned(),
            ),
            None,
        ),
        _ => (None, None),
    };
    let build = if rng.chance(15) {
        Some(rng.pick(&["incompatible", "meta.1", "001"]))
    } else {
        None
    };
    let mut semver = format!("{major}.{minor}.{patch}");
    if let Some(pre) = &pre {
        semver.push_str(&format!("-{pre}"));
    }
    if let Some(build) = build {
        semver.push_str(&format!("+{build}"));
    }
    let text = match rng.below(6) {
        // The toolchain forms, where they exist: go1.21rc2, 1.21rc2, go1.21.5, go1.21.
        0 | 1 if major == 1 && build.is_none() && (pre.is_none() || go_pre.is_some()) => {
            let prefix = if rng.chance(70) { "go" } else { "" };
            let patch_text = if patch == 0 && (go_pre.is_some() || minor != 0) && rng.chance(70) {
                String::new()
            } else {
                format!(".{patch}")
            };
            let pre_text = go_pre
                .map(|(kind, n)| format!("{kind}{n}"))
                .unwrap_or_default();
            format!("{prefix}{major}.{minor}{patch_text}{pre_text}")
        }
        // The shorthands v1 and v1.2.
        2 if pre.is_none() && build.is_none() && patch == 0 => {
            if minor == 0 && rng.chance(50) {
                format!("v{major}")
            } else {
                format!("v{major}.{minor}")
            }
        }
        3 => semver.clone(),
        _ => format!("v{semver}"),
    };
    GoVersion {
        text,
        semver,
        family,
    }
}
