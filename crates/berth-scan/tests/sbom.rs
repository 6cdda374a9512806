//! SBOMs and purls for every inventory fixture: each fixture directory is catalogued with the
//! parsers (every file a cataloguer wants), given the distribution its `expected.json` names,
//! and turned into an SPDX and a CycloneDX document, whose structure is checked here.
//!
//! Set `BERTH_SBOM_OUT` to a directory to have the documents written there
//! (`<fixture>.spdx.json`, `<fixture>.cdx.json`), for the schema and semantic validators of
//! `tests/e2e/scan/sbom_validation.py` (spdx-tools, cyclonedx-python-lib), which this crate's
//! tests cannot run themselves.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use berth_scan::catalog::{apk, dpkg, java, node, python, rpm, rust};
use berth_scan::sbom::{self, Subject};
use berth_scan::{Coverage, Ecosystem, Inventory, OsRelease, Package, ParseError, purl};
use serde_json::Value;

type Wants = fn(&str) -> bool;
type Parse = fn(&str, &[u8]) -> Result<Vec<Package>, ParseError>;
/// A distribution as (`ID`, `VERSION_ID`, `VERSION_CODENAME`).
type Distro = (&'static str, &'static str, Option<&'static str>);

/// The cataloguers with fixtures, by the paths they want.
const CATALOGUERS: &[(Wants, Parse)] = &[
    (dpkg::wants, dpkg::parse),
    (apk::wants, apk::parse),
    (rpm::wants, rpm::parse),
    (python::wants, python::parse),
    (node::wants, node::parse),
    (rust::wants, rust::parse),
    (java::wants, java::parse),
];

/// Every fixture directory (under `testdata/inventory`) and the distribution to scan it as:
/// the one its `expected.json` names, else the one its notes describe, else none (language
/// fixtures, and `bdb-dive`, whose expected purl syft wrote without a distribution).
const FIXTURES: &[(&str, Option<Distro>)] = &[
    ("dpkg/debian-12-excerpt", None),
    ("dpkg/ubuntu-18.04", None),
    ("dpkg/distroless", Some(("debian", "11", Some("bullseye")))),
    ("apk/alpine-3.18", None),
    ("apk/alpine-3.4", Some(("alpine", "3.4.6", None))),
    ("rpm/cbl-mariner-2.0", None),
    ("rpm/rhel-8-libuuid-bdb", None),
    ("rpm/bdb-epoch", None),
    ("rpm/sle-15.3-bci-minimal-ndb", None),
    ("rpm/bdb-dive", None),
    ("python", None),
    ("node", None),
    ("java", None),
    ("rust/cargo_v3", None),
    ("rust/cargo_normal", None),
    ("rust/trivy-ci-test", None),
];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/inventory")
        .join(name)
}

/// Every regular file under `dir`, as a path relative to it with `/` separators.
fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    fn visit(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
        for entry in std::fs::read_dir(dir).expect("read fixture dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                visit(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push((rel.join("/"), path));
            }
        }
    }
    let mut out = Vec::new();
    visit(dir, dir, &mut out);
    out.sort();
    out
}

fn os_of(name: &str, given: Option<Distro>) -> Option<OsRelease> {
    if let Some((id, version_id, codename)) = given {
        return Some(OsRelease {
            id: id.into(),
            version_id: Some(version_id.into()),
            version_codename: codename.map(Into::into),
            pretty_name: None,
        });
    }
    let text = std::fs::read_to_string(fixture_dir(name).join("expected.json")).ok()?;
    let expected: Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let os = expected.get("os")?;
    let field = |key: &str| os.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(OsRelease {
        id: field("id")?,
        version_id: field("version_id"),
        version_codename: field("version_codename"),
        pretty_name: field("pretty_name"),
    })
}

/// The inventory of a fixture directory, as if it were the image's only layer.
fn inventory(name: &str, os: Option<OsRelease>) -> Inventory {
    let mut packages = Vec::new();
    let mut errors = Vec::new();
    for (path, full) in files(&fixture_dir(name)) {
        for (wants, parse) in CATALOGUERS {
            if !wants(&path) {
                continue;
            }
            let data = std::fs::read(&full).expect("read fixture");
            match parse(&path, &data) {
                Ok(found) => packages.extend(found),
                Err(e) => errors.push(e),
            }
        }
    }
    for p in &mut packages {
        p.layer = Some(0);
    }
    Inventory {
        coverage: Coverage::Complete,
        os,
        packages,
        skipped: vec![],
        errors,
    }
}

fn subject(name: &str) -> Subject {
    Subject {
        repository: format!("registry.example.com/fixtures/{name}"),
        digest: "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b".into(),
        tags: vec!["latest".into()],
        created: "2024-05-01T12:00:00.5+00:00".into(),
        uuid: "3f2504e0-4f89-41d3-9a0c-0305e82c3301".into(),
        tool_version: "0.1.0".into(),
    }
}

fn all_inventories() -> Vec<(&'static str, Inventory)> {
    FIXTURES
        .iter()
        .map(|(name, os)| (*name, inventory(name, os_of(name, *os))))
        .collect()
}

fn valid_spdx_id(id: &str) -> bool {
    id.strip_prefix("SPDXRef-").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    })
}

#[test]
fn every_fixture_has_packages() {
    for (name, inv) in all_inventories() {
        assert!(!inv.packages.is_empty(), "{name}: no packages");
        assert!(inv.errors.is_empty(), "{name}: {:?}", inv.errors);
    }
}

#[test]
fn spdx_documents_of_fixtures() {
    for (name, inv) in all_inventories() {
        let doc = sbom::spdx(&inv, &subject(name));
        for key in [
            "spdxVersion",
            "dataLicense",
            "SPDXID",
            "name",
            "documentNamespace",
        ] {
            assert!(doc[key].is_string(), "{name}: {key}");
        }
        assert_eq!(doc["creationInfo"]["created"], "2024-05-01T12:00:00Z");
        let packages = doc["packages"].as_array().expect("packages");
        let with_os = usize::from(inv.os.is_some());
        assert_eq!(packages.len(), 1 + with_os + inv.packages.len(), "{name}");

        let mut ids = HashSet::new();
        for p in packages {
            let id = p["SPDXID"].as_str().expect("SPDXID");
            assert!(valid_spdx_id(id), "{name}: {id}");
            assert!(ids.insert(id), "{name}: duplicate {id}");
            assert_eq!(p["downloadLocation"], "NOASSERTION");
        }
        // Every inventory package has a purl that an independent parser reads back.
        for (p, entry) in inv.packages.iter().zip(&packages[1 + with_os..]) {
            assert_eq!(entry["name"], p.name.as_str());
            assert_eq!(entry["versionInfo"], p.version.as_str());
            let locator = entry["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {} has no purl", p.name));
            let parsed = packageurl::PackageUrl::from_str(locator)
                .unwrap_or_else(|e| panic!("{name}: {locator}: {e}"));
            assert_eq!(entry["externalRefs"][0]["referenceType"], "purl");
            if p.ecosystem != Ecosystem::Rpm {
                assert_eq!(parsed.version(), Some(p.version.as_str()), "{locator}");
            }
            let source = entry["sourceInfo"].as_str().expect("sourceInfo");
            assert!(source.ends_with(&format!("/{} (layer 0 of the manifest)", p.path)));
        }
        // DOCUMENT DESCRIBES the image, which CONTAINS everything else.
        let relationships = doc["relationships"].as_array().expect("relationships");
        assert_eq!(relationships.len(), packages.len());
        assert_eq!(relationships[0]["spdxElementId"], "SPDXRef-DOCUMENT");
        assert_eq!(relationships[0]["relationshipType"], "DESCRIBES");
        for r in relationships {
            for end in ["spdxElementId", "relatedSpdxElement"] {
                let id = r[end].as_str().expect("element id");
                assert!(id == "SPDXRef-DOCUMENT" || ids.contains(id), "{name}: {id}");
            }
        }
        let contained: HashSet<&str> = relationships[1..]
            .iter()
            .map(|r| r["relatedSpdxElement"].as_str().expect("id"))
            .collect();
        assert_eq!(contained.len(), packages.len() - 1, "{name}");
        write_out(&format!("{}.spdx.json", name.replace('/', "-")), &doc);
    }
}

#[test]
fn cyclonedx_documents_of_fixtures() {
    for (name, inv) in all_inventories() {
        let doc = sbom::cyclonedx(&inv, &subject(name));
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.6");
        assert_eq!(doc["version"], 1);
        assert_eq!(
            doc["serialNumber"],
            "urn:uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301"
        );
        assert_eq!(doc["metadata"]["component"]["type"], "container");
        let components = doc["components"].as_array().expect("components");
        let with_os = usize::from(inv.os.is_some());
        assert_eq!(components.len(), with_os + inv.packages.len(), "{name}");
        if inv.os.is_some() {
            assert_eq!(components[0]["type"], "operating-system");
        }
        let mut refs = HashSet::new();
        for c in components {
            assert!(
                refs.insert(c["bom-ref"].as_str().expect("bom-ref")),
                "{name}"
            );
        }
        for (p, c) in inv.packages.iter().zip(&components[with_os..]) {
            assert_eq!(c["type"], "library");
            assert_eq!(c["version"], p.version.as_str());
            assert!(c["purl"].is_string(), "{name}: {} has no purl", p.name);
            let properties: BTreeMap<&str, &str> = c["properties"]
                .as_array()
                .expect("properties")
                .iter()
                .map(|p| (p["name"].as_str().unwrap(), p["value"].as_str().unwrap()))
                .collect();
            assert_eq!(properties["berth:package:path"], format!("/{}", p.path));
            assert_eq!(properties["berth:package:layer"], "0");
        }
        write_out(&format!("{}.cdx.json", name.replace('/', "-")), &doc);
    }
}

/// Purls of fixture packages, against what the tools the fixtures come from write (the
/// `upstream` and `distro` conventions are in `berth_scan::purl`'s module comment).
#[test]
fn fixture_purls() {
    let inventories: BTreeMap<&str, Inventory> = all_inventories().into_iter().collect();
    let purl_of = |fixture: &str, package: &str| {
        let inv = &inventories[fixture];
        let p = inv
            .packages
            .iter()
            .find(|p| p.name == package)
            .unwrap_or_else(|| panic!("{fixture}: no {package}"));
        purl::purl(p, inv.os.as_ref())
    };
    let cases = [
        // scalibr's expected.json note gives this purl without syft's upstream qualifier.
        (
            "dpkg/debian-12-excerpt",
            "util-linux-extra",
            "pkg:deb/debian/util-linux-extra@2.38.1-5%2Bb1?arch=amd64&distro=bookworm\
             &upstream=util-linux%402.38.1-5",
        ),
        (
            "dpkg/debian-12-excerpt",
            "libacl1",
            "pkg:deb/debian/libacl1@2.3.1-3?arch=amd64&distro=bookworm&upstream=acl",
        ),
        (
            "dpkg/debian-12-excerpt",
            "attr",
            "pkg:deb/debian/attr@1:2.5.1-4?arch=amd64&distro=bookworm",
        ),
        (
            "dpkg/distroless",
            "libsqlite3-0",
            "pkg:deb/debian/libsqlite3-0@3.34.1-3?arch=arm64&distro=bullseye&upstream=sqlite3",
        ),
        (
            "apk/alpine-3.18",
            "libcrypto3",
            "pkg:apk/alpine/libcrypto3@3.1.0-r4?arch=x86_64&distro=alpine-3.18.0&upstream=openssl",
        ),
        (
            "apk/alpine-3.18",
            "musl",
            "pkg:apk/alpine/musl@1.2.4-r0?arch=x86_64&distro=alpine-3.18.0",
        ),
        // syft's own expectation for this database (no distribution given).
        (
            "rpm/bdb-dive",
            "dive",
            "pkg:rpm/dive@0.9.2-1?arch=x86_64&upstream=dive-0.9.2-1.src.rpm",
        ),
        (
            "rpm/rhel-8-libuuid-bdb",
            "libuuid",
            "pkg:rpm/redhat/libuuid@2.32.1-42.el8_8?arch=x86_64&distro=rhel-8\
             &upstream=util-linux-2.32.1-42.el8_8.src.rpm",
        ),
        (
            "rpm/cbl-mariner-2.0",
            "curl",
            "pkg:rpm/mariner/curl@7.76.0-6.cm2?arch=x86_64&distro=mariner-2.0\
             &upstream=curl-7.76.0-6.cm2.src.rpm",
        ),
        ("python", "Unidecode", "pkg:pypi/unidecode@0.4.1"),
        (
            "java",
            "com.google.guava:guava",
            "pkg:maven/com.google.guava/guava@29.0-jre",
        ),
        ("node", "accepts", "pkg:npm/accepts@1.3.8"),
        (
            "rust/cargo_v3",
            "aho-corasick",
            "pkg:cargo/aho-corasick@0.7.20",
        ),
    ];
    for (fixture, package, want) in cases {
        assert_eq!(purl_of(fixture, package), want, "{fixture}: {package}");
    }
    // An epoch is a qualifier, never part of the rpm purl's version.
    let inv = &inventories["rpm/bdb-epoch"];
    let p = &inv.packages[0];
    let epoch = p
        .rpm
        .as_ref()
        .and_then(|r| r.epoch)
        .expect("the fixture has an epoch");
    let written = purl::purl(p, inv.os.as_ref());
    assert!(written.contains(&format!("epoch={epoch}")), "{written}");
    assert!(!written.contains(&format!("@{epoch}:")), "{written}");
}

/// Writes a document to `BERTH_SBOM_OUT`, when it names a directory.
fn write_out(file: &str, doc: &Value) {
    let Some(dir) = std::env::var_os("BERTH_SBOM_OUT") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create BERTH_SBOM_OUT");
    let text = serde_json::to_string_pretty(doc).expect("serialize");
    std::fs::write(dir.join(file), text).expect("write document");
}
