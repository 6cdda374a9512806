//! Matching on the real records of `testdata/vulndb` (OSV of seven ecosystems, Alpine secdb,
//! the Debian tracker): every entry of `expected-matches.json` (the negative ones too), each
//! read through the source readers and matched against inventories the layer walker reads
//! from the inventory fixtures; then fixed versions, statuses, severities and alias merging.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_core::cvss::Severity;
use berth_scan::vulndb::matching::{self, Finding};
use berth_scan::vulndb::source::{self, Limits};
use berth_scan::vulndb::{Advisory, Entry, Status};
use berth_scan::walk;
use berth_scan::{Ecosystem, Inventory, OsRelease, Package};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// Every entry of a record file or directory, read as an import reads it.
fn entries(path: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let report = source::read_path(path, Limits::default(), &mut |e| {
        out.push(e);
        Ok(())
    })
    .unwrap();
    assert_eq!(report.rejected, 0, "{:?}", report.rejections);
    out
}

/// The inventory of an image of one layer holding `fixture` (a directory, as the root; or a
/// file, at /app/) and an os-release, as the walker reads it.
fn inventory(fixture: &Path, os_release: Option<&str>) -> Inventory {
    let mut b = tar::Builder::new(Vec::new());
    if fixture.is_dir() {
        b.append_dir_all(".", fixture).unwrap();
    } else {
        let name = fixture.file_name().unwrap();
        b.append_path_with_name(fixture, Path::new("app").join(name))
            .unwrap();
    }
    if let Some(text) = os_release {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/os-release", text.as_bytes())
            .unwrap();
    }
    walk::inventory_of_tar(b.into_inner().unwrap(), &walk::Limits::default()).unwrap()
}

/// The os-release of the distribution an inventory fixture comes from.
fn os_release_of(inventory: &str) -> Option<&'static str> {
    if inventory.contains("ubuntu-18.04") {
        Some("ID=ubuntu\nVERSION_ID=\"18.04\"\n")
    } else if inventory.contains("alpine-3.4") {
        Some("ID=alpine\nVERSION_ID=3.4.6\n")
    } else {
        None
    }
}

/// The findings of `package` (in `inv`) against `advisories`.
fn findings_for(inv: &Inventory, package: &Package, advisories: &[Advisory]) -> Vec<Finding> {
    let target = matching::target(package, inv.os.as_ref()).unwrap();
    let refs: Vec<&Advisory> = advisories.iter().collect();
    matching::findings(package, &target, &refs)
}

#[test]
fn every_expected_match_of_the_fixtures() {
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(testdata().join("vulndb/expected-matches.json")).unwrap(),
    )
    .unwrap();
    let cases = expected["matches"].as_array().unwrap();
    assert!(cases.len() >= 22);
    let mut failures = Vec::new();
    for case in cases {
        let s = |k: &str| case[k].as_str();
        let inv_path = s("inventory").unwrap();
        let inv = inventory(&testdata().join(inv_path), os_release_of(inv_path));
        let record = s("record").unwrap();
        let advisories: Vec<Advisory> = match record.strip_suffix("/*") {
            Some(dir) => entries(&testdata().join(dir)),
            None => entries(&testdata().join(record)),
        }
        .into_iter()
        .map(|e| e.advisory)
        .collect();
        let packages: Vec<&Package> = match s("package").unwrap() {
            "(all)" => inv.packages.iter().collect(),
            name => {
                let version = s("version").unwrap();
                let found: Vec<&Package> = inv
                    .packages
                    .iter()
                    .filter(|p| p.name == name && p.version == version)
                    .collect();
                assert_eq!(found.len(), 1, "{name} {version} in {inv_path}");
                found
            }
        };
        assert!(!packages.is_empty(), "{inv_path} has packages");
        let mut found: Vec<Finding> = packages
            .iter()
            .flat_map(|p| findings_for(&inv, p, &advisories))
            .collect();
        if let Some(cve) = s("cve") {
            found.retain(|f| f.ids.iter().any(|i| i == cve));
        }
        let want = case["affected"].as_bool().unwrap();
        if found.is_empty() == want {
            failures.push(format!(
                "{} {} x {record} {}: want affected={want}, got {:?} ({})",
                s("package").unwrap(),
                s("version").unwrap_or(""),
                s("cve").unwrap_or(""),
                found.iter().map(|f| &f.id).collect::<Vec<_>>(),
                s("why").unwrap_or("")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn package(ecosystem: Ecosystem, name: &str, version: &str) -> Package {
    Package::new(ecosystem, name, version, "/test")
}

fn only(found: &[Finding], id: &str) -> Finding {
    let hits: Vec<&Finding> = found.iter().filter(|f| f.id == id).collect();
    assert_eq!(hits.len(), 1, "{id} in {found:#?}");
    hits[0].clone()
}

#[test]
fn fixed_versions_come_from_the_range_that_matched() {
    // apt on Ubuntu 18.04: USN-3863-1 is keyed by the source package and fixed in
    // 1.6.6ubuntu0.1; the binary libapt-pkg5.0 of source apt matches it too.
    let inv = inventory(
        &testdata().join("inventory/dpkg/ubuntu-18.04"),
        os_release_of("ubuntu-18.04"),
    );
    let usn: Vec<Advisory> = entries(&testdata().join("vulndb/osv/ubuntu/USN-3863-1.json"))
        .into_iter()
        .map(|e| e.advisory)
        .collect();
    let lib = inv
        .packages
        .iter()
        .find(|p| p.name == "libapt-pkg5.0")
        .unwrap();
    let f = only(&findings_for(&inv, lib, &usn), "USN-3863-1");
    assert_eq!(f.fixed_version.as_deref(), Some("1.6.6ubuntu0.1"));
    assert_eq!(f.status, Status::Fixed);
    assert_eq!(f.matched.ecosystem, "Ubuntu:18.04");
    assert_eq!(f.matched.name, "apt");

    // Go: GO-2022-1144 has two introduced/fixed pairs for the standard library; 1.19.2 is in
    // the second and is fixed by 1.19.4, 1.18.3 by 1.18.9, and 1.19.4 is not affected.
    let go: Vec<Advisory> = entries(&testdata().join("vulndb/osv/go/GO-2022-1144.json"))
        .into_iter()
        .map(|e| e.advisory)
        .collect();
    let empty = Inventory {
        coverage: berth_scan::Coverage::Complete,
        os: None,
        packages: Vec::new(),
        skipped: Vec::new(),
        errors: Vec::new(),
    };
    for (version, fixed) in [
        ("1.19.2", Some("1.19.4")),
        ("1.18.3", Some("1.18.9")),
        ("1.19.4", None),
    ] {
        let p = package(Ecosystem::Golang, "stdlib", version);
        let found = findings_for(&empty, &p, &go);
        match fixed {
            Some(fixed) => {
                let f = only(&found, "CVE-2022-41717");
                assert_eq!(f.fixed_version.as_deref(), Some(fixed), "stdlib {version}");
                assert!(f.ids.contains(&"GO-2022-1144".to_owned()));
                assert!(f.ids.contains(&"GHSA-xrjj-mj9h-534m".to_owned()));
            }
            None => assert!(found.is_empty(), "stdlib {version}: {found:?}"),
        }
    }
}

#[test]
fn debian_tracker_statuses_fixes_and_urgency() {
    let tracker: Vec<Advisory> =
        entries(&testdata().join("vulndb/debian-security-tracker/debian.json"))
            .into_iter()
            .map(|e| e.advisory)
            .collect();
    let debian = |version_id: &str| Inventory {
        coverage: berth_scan::Coverage::Complete,
        os: Some(OsRelease {
            id: "debian".into(),
            version_id: Some(version_id.into()),
            version_codename: None,
            pretty_name: None,
        }),
        packages: Vec::new(),
        skipped: Vec::new(),
        errors: Vec::new(),
    };
    // Fixed in 1.6.0.2-1 on stretch, urgency "high**": Debian's rating comes first.
    let p = package(Ecosystem::Deb, "libjs-prototype", "1.6.0.1-1");
    let mut p = p;
    p.source = Some(berth_scan::SourcePackage {
        name: "prototypejs".into(),
        version: "1.6.0.1-1".into(),
    });
    let found = findings_for(&debian("9"), &p, &tracker);
    let f = only(&found, "CVE-2008-7220");
    assert_eq!(f.fixed_version.as_deref(), Some("1.6.0.2-1"));
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.severity_source, "debian");
    // Fixed in "0": never affected.
    assert!(found.iter().all(|f| f.id != "CVE-2007-2383"));
    // chromium on buster: open and end-of-life, no fix; on bookworm fixed.
    let chromium = package(Ecosystem::Deb, "chromium", "90.0.4430.212-1");
    let f = only(
        &findings_for(&debian("10"), &chromium, &tracker),
        "CVE-2022-0456",
    );
    assert_eq!(f.status, Status::EndOfLife);
    assert_eq!(f.fixed_version, None);
    let f = only(
        &findings_for(&debian("12"), &chromium, &tracker),
        "CVE-2022-0456",
    );
    assert_eq!(f.status, Status::Fixed);
    assert_eq!(f.fixed_version.as_deref(), Some("98.0.4758.80-1"));
    // "not yet assigned" is no rating: nothing else rates it, so Unknown.
    assert_eq!(f.severity, Severity::Unknown);
    // A release the tracker has no entry for: not affected by this record.
    assert!(findings_for(&debian("13"), &chromium, &tracker).is_empty());
}

#[test]
fn ghsa_rating_comes_before_cvss_for_language_packages() {
    let ghsa: Vec<Advisory> = entries(&testdata().join("vulndb/osv/npm"))
        .into_iter()
        .map(|e| e.advisory)
        .collect();
    let p = package(Ecosystem::Npm, "undici", "5.28.3");
    let found = findings_for(
        &Inventory {
            coverage: berth_scan::Coverage::Complete,
            os: None,
            packages: Vec::new(),
            skipped: Vec::new(),
            errors: Vec::new(),
        },
        &p,
        &ghsa,
    );
    let f = only(&found, "CVE-2024-30260");
    assert_eq!(f.fixed_version.as_deref(), Some("5.28.4"));
    assert_eq!(f.severity, Severity::Low, "GHSA says LOW");
    assert_eq!(f.severity_source, "ghsa");
    let cvss = f.cvss.expect("the record's CVSS is shown");
    assert_eq!(cvss.vector, "CVSS:3.1/AV:N/AC:H/PR:H/UI:R/S:U/C:L/I:L/A:L");
    assert_eq!(cvss.score, 3.9);
}

#[test]
fn records_sharing_an_alias_merge_into_one_finding() {
    // DSA-3029-1 (alias CVE-2014-3616) and the tracker's entry for the same CVE of nginx on
    // wheezy are one vulnerability of nginx.
    let mut all: Vec<Advisory> = entries(&testdata().join("vulndb/osv/debian/DSA-3029-1.json"))
        .into_iter()
        .map(|e| e.advisory)
        .collect();
    let tracker = br#"{"nginx": {"CVE-2014-3616": {"description": "SSL session reuse",
        "releases": {"wheezy": {"status": "resolved", "fixed_version": "1.2.1-2.2+wheezy3",
        "urgency": "medium"}}}, "CVE-2099-1": {"releases": {"wheezy": {"status": "open",
        "urgency": "low", "nodsa_reason": "postponed"}}}}}"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("debian.json"), tracker).unwrap();
    all.extend(entries(dir.path()).into_iter().map(|e| e.advisory));
    let inv = Inventory {
        coverage: berth_scan::Coverage::Complete,
        os: Some(OsRelease {
            id: "debian".into(),
            version_id: Some("7".into()),
            version_codename: Some("wheezy".into()),
            pretty_name: None,
        }),
        packages: Vec::new(),
        skipped: Vec::new(),
        errors: Vec::new(),
    };
    let p = package(Ecosystem::Deb, "nginx", "1.2.1-2.2+wheezy2");
    let found = findings_for(&inv, &p, &all);
    assert_eq!(found.len(), 2, "{found:#?}");
    let f = only(&found, "CVE-2014-3616");
    assert_eq!(f.ids, ["CVE-2014-3616", "DSA-3029-1"]);
    assert_eq!(f.records.len(), 2);
    assert_eq!(f.fixed_version.as_deref(), Some("1.2.1-2.2+wheezy3"));
    assert_eq!(f.severity, Severity::Medium);
    let deferred = only(&found, "CVE-2099-1");
    assert_eq!(deferred.status, Status::FixDeferred);
    assert_eq!(deferred.fixed_version, None);
}

#[test]
fn sources_are_told_apart_and_counted() {
    let mut all = Vec::new();
    for dir in ["osv", "alpine-secdb", "debian-security-tracker"] {
        all.extend(entries(&testdata().join("vulndb").join(dir)));
    }
    // The whole directory: expected-matches.json is no record, and is counted as rejected.
    let report = source::read_path(&testdata().join("vulndb"), Limits::default(), &mut |_| {
        Ok(())
    })
    .unwrap();
    assert_eq!(report.entries as usize, all.len());
    assert_eq!(report.rejected, 1, "{:?}", report.rejections);
    assert!(report.rejections[0].contains("expected-matches.json"));
    let mut feeds: HashMap<&str, usize> = HashMap::new();
    for e in &all {
        *feeds.entry(e.feed.as_str()).or_default() += 1;
    }
    for feed in [
        "osv:Go",
        "osv:PyPI",
        "osv:npm",
        "osv:Maven",
        "osv:crates.io",
        "osv:Ubuntu",
        "osv:Debian",
        "debian-tracker",
        "alpine-secdb:v3.4/main",
        "alpine-secdb:edge/main",
    ] {
        assert!(feeds.contains_key(feed), "{feed} in {feeds:?}");
    }
    // Keys are unique per feed.
    let mut keys = std::collections::HashSet::new();
    for e in &all {
        assert!(keys.insert((&e.feed, &e.key)), "{} {}", e.feed, e.key);
    }
}
