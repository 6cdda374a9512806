//! The rpm fixtures (Berkeley DB, ndb and SQLite databases from real images) against their
//! `expected.json`: the same packages, each with every field the expectation lists.

use berth_scan::catalog::rpm;
use berth_scan::{Ecosystem, Package};
use serde_json::Value;
use std::path::PathBuf;

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/inventory/rpm")
        .join(name)
}

/// Parses a fixture's database and checks it against `expected.json`; `ordered` when the notes
/// say the order is `rpm -qa`'s.
fn check(name: &str, ordered: bool) {
    let dir = fixture_dir(name);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let path = expected["fixture"].as_str().unwrap();
    assert!(rpm::wants(path), "{path}");
    let data = std::fs::read(dir.join(path)).unwrap();
    let packages = rpm::parse(path, &data).unwrap();
    let headers = rpm::read_headers(path, &data).unwrap();
    let listed = expected["packages"].as_array().unwrap();
    assert_eq!(packages.len(), expected["count"].as_u64().unwrap() as usize);
    assert_eq!(packages.len(), listed.len());
    if ordered {
        let names: Vec<_> = packages.iter().map(|p| p.name.as_str()).collect();
        let expected_names: Vec<_> = listed.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, expected_names);
    }
    for want in listed {
        let name = want["name"].as_str().unwrap();
        let matching: Vec<&Package> = packages.iter().filter(|p| p.name == name).collect();
        assert_eq!(matching.len(), 1, "{name}");
        let header = headers
            .iter()
            .find(|h| h.name.as_deref() == Some(name))
            .unwrap();
        check_package(matching[0], header, want, path);
    }
}

fn check_package(got: &Package, header: &rpm::RpmHeader, want: &Value, path: &str) {
    let name = &got.name;
    let rpm = got
        .rpm
        .as_ref()
        .expect("rpm packages carry their EVR parts");
    let text = |key: &str| {
        want[key]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {key}"))
    };
    let epoch = want["epoch"].as_u64().map(|e| e as u32);
    let evr = match epoch {
        Some(e) => format!("{e}:{}-{}", text("version"), text("release")),
        None => format!("{}-{}", text("version"), text("release")),
    };
    assert_eq!(got.ecosystem, Ecosystem::Rpm);
    assert_eq!(got.path, path);
    assert_eq!(got.layer, None);
    assert_eq!(got.version, evr, "{name}");
    for (key, value) in want.as_object().unwrap() {
        match key.as_str() {
            "name" => assert_eq!(got.name, text("name")),
            "epoch" => assert_eq!(rpm.epoch, epoch, "{name}"),
            "version" => assert_eq!(rpm.version, text("version"), "{name}"),
            "release" => assert_eq!(rpm.release, text("release"), "{name}"),
            "arch" => assert_eq!(got.arch.as_deref(), Some(text("arch")), "{name}"),
            "source_rpm" => {
                assert_eq!(
                    rpm.source_rpm.as_deref(),
                    Some(text("source_rpm")),
                    "{name}"
                );
                // The source version is the source RPM's, with the binary's epoch.
                let stem = text("source_rpm").strip_suffix(".src.rpm").unwrap();
                let source_vr = &stem[text("source_name").len() + 1..];
                let source_version = match epoch {
                    Some(e) => format!("{e}:{source_vr}"),
                    None => source_vr.to_owned(),
                };
                let source = got.source.as_ref().unwrap();
                assert_eq!(source.version, source_version, "{name}");
            }
            "source_name" => {
                assert_eq!(
                    got.source.as_ref().unwrap().name,
                    text("source_name"),
                    "{name}"
                );
            }
            "license" => assert_eq!(got.licenses, [text("license")], "{name}"),
            // null: no VENDOR tag; "" (dive): an empty one.
            "vendor" => assert_eq!(header.vendor.as_deref(), value.as_str(), "{name}"),
            "summary" => assert_eq!(header.summary.as_deref(), Some(text("summary")), "{name}"),
            "size" => assert_eq!(header.size, value.as_u64(), "{name}"),
            "sigmd5" => assert_eq!(header.sigmd5.as_deref(), Some(text("sigmd5")), "{name}"),
            other => panic!("{name}: expected.json lists {other}, which this test does not check"),
        }
    }
}

#[test]
fn bdb_dive() {
    check("bdb-dive", false);
}

#[test]
fn bdb_epoch() {
    check("bdb-epoch", false);
}

#[test]
fn rhel_8_libuuid_bdb() {
    check("rhel-8-libuuid-bdb", false);
}

#[test]
fn sle_15_3_bci_minimal_ndb() {
    check("sle-15.3-bci-minimal-ndb", true);
}

/// Its list is `rpm -qa` output, which for SQLite is in `hnum` (rowid) order, as is ours.
#[test]
fn cbl_mariner_2_0_sqlite() {
    check("cbl-mariner-2.0", true);
}

/// The path given is the one reported, whichever of rpm's locations the file was found at.
#[test]
fn packages_carry_the_path_they_were_read_from() {
    let data =
        std::fs::read(fixture_dir("rhel-8-libuuid-bdb").join("var/lib/rpm/Packages")).unwrap();
    let path = "usr/lib/sysimage/rpm/Packages";
    assert!(rpm::wants(path));
    let packages = rpm::parse(path, &data).unwrap();
    assert_eq!(packages[0].path, path);
}

mod corrupted {
    //! Real databases with bytes changed at random: parsing must never panic.
    use super::*;
    use proptest::prelude::*;

    fn corrupt(name: &str, file: &str, flips: &[(usize, u8)]) {
        let mut data = std::fs::read(fixture_dir(name).join(file)).unwrap();
        let len = data.len();
        for &(at, byte) in flips {
            data[at % len] = byte;
        }
        let _ = rpm::parse(file, &data);
    }

    /// Byte changes, half of them in the first pages where the structure (metadata, slots,
    /// schema, b-tree roots) is, half anywhere (headers, overflow pages, blobs).
    fn flips() -> impl Strategy<Value = Vec<(usize, u8)>> {
        proptest::collection::vec(
            (prop_oneof![0usize..16 * 1024, any::<usize>()], any::<u8>()),
            1..64,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn bdb(flips in flips()) {
            corrupt("rhel-8-libuuid-bdb", "var/lib/rpm/Packages", &flips);
        }

        #[test]
        fn ndb(flips in flips()) {
            corrupt("sle-15.3-bci-minimal-ndb", "var/lib/rpm/Packages.db", &flips);
        }

        #[test]
        fn sqlite(flips in flips()) {
            corrupt("cbl-mariner-2.0", "var/lib/rpm/rpmdb.sqlite", &flips);
        }
    }
}
