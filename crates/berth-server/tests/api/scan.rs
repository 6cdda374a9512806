//! The inventory and SBOM of an artifact through the admin API, on images whose layers are
//! real gzip tars built here: what is installed, per platform of an index, "not scannable"
//! for an artifact, "incomplete" when a layer is gone, and the refusals.

use std::io::Write;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

fn targz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

const STATUS: &[u8] = b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\n\
Architecture: amd64\n\nPackage: bsdutils\nStatus: install ok installed\nVersion: 1:2.38.1-5+b1\n\
Architecture: amd64\nSource: util-linux (2.38.1-5)\n\n";
const OS_RELEASE: &[u8] = b"ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n";

/// An image of the given gzip layers (bottom first).
fn image_of(layers: Vec<Vec<u8>>, seed: &str) -> Image {
    let descriptors: Vec<Value> = layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect();
    let mut image = Image::oci_with(seed, |m| m["layers"] = json!(descriptors));
    image.layers = layers;
    image
}

fn debian(seed: &str) -> Image {
    image_of(
        vec![
            targz(&[
                ("etc/os-release", OS_RELEASE),
                ("var/lib/dpkg/status", STATUS),
            ]),
            targz(&[(
                "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
                b"Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n",
            )]),
        ],
        seed,
    )
}

fn packages(inventory: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = inventory["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_owned();
            (s("ecosystem"), s("name"), s("version"))
        })
        .collect();
    v.sort();
    v
}

fn triple(e: &str, n: &str, v: &str) -> (String, String, String) {
    (e.into(), n.into(), v.into())
}

#[tokio::test]
async fn an_image_lists_its_distribution_and_packages_with_their_layers() {
    let app = App::new().await;
    let image = debian("inventory");
    let digest = app.push_image("team/app", "v1", &image).await;
    let r = app
        .get(&format!(
            "/api/v1/repositories/team/app/artifacts/{digest}/inventory"
        ))
        .await;
    r.assert_status(StatusCode::OK);
    let inv = r.json();
    assert_eq!(inv["kind"], "image");
    assert_eq!(inv["digest"], digest.as_str());
    assert_eq!(inv["coverage"]["status"], "complete");
    assert_eq!(inv["os"]["id"], "debian");
    assert_eq!(inv["os"]["version_codename"], "bookworm");
    assert_eq!(
        packages(&inv),
        [
            triple("deb", "bsdutils", "1:2.38.1-5+b1"),
            triple("deb", "libc6", "2.36-9+deb12u4"),
            triple("pypi", "six", "1.16.0"),
        ]
    );
    let bsdutils = inv["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bsdutils")
        .unwrap();
    assert_eq!(
        bsdutils["source"],
        json!({"name": "util-linux", "version": "2.38.1-5"})
    );
    assert_eq!(bsdutils["layer"], 0);
    assert_eq!(bsdutils["path"], "var/lib/dpkg/status");
    assert_eq!(
        bsdutils["purl"],
        "pkg:deb/debian/bsdutils@1:2.38.1-5%2Bb1?arch=amd64&distro=bookworm&upstream=util-linux%402.38.1-5"
    );

    // The SBOMs list the same packages (and the image and its distribution).
    let r = app
        .get(&format!(
            "/api/v1/repositories/team/app/artifacts/{digest}/sbom?format=spdx"
        ))
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/spdx+json"));
    let spdx = r.json();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    let purls: Vec<String> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["referenceType"] == "purl")
        .map(|r| r["referenceLocator"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        purls
            .iter()
            .any(|p| p.starts_with("pkg:deb/debian/bsdutils@1:2.38.1-5%2Bb1")),
        "{purls:?}"
    );
    assert!(
        purls.iter().any(|p| p == "pkg:pypi/six@1.16.0"),
        "{purls:?}"
    );
    let r = app
        .get(&format!(
            "/api/v1/repositories/team/app/artifacts/{digest}/sbom?format=cyclonedx"
        ))
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.cyclonedx+json")
    );
    let cdx = r.json();
    assert_eq!(cdx["bomFormat"], "CycloneDX");
    let names: Vec<&str> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in ["libc6", "bsdutils", "six"] {
        assert!(names.contains(&name), "{names:?}");
    }

    let r = app
        .get(&format!(
            "/api/v1/repositories/team/app/artifacts/{digest}/sbom?format=swid"
        ))
        .await;
    r.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["errors"][0]["code"], "INVALID");
    let missing = sha256(b"not pushed");
    let r = app
        .get(&format!(
            "/api/v1/repositories/team/app/artifacts/{missing}/inventory"
        ))
        .await;
    r.assert_status(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_index_is_listed_per_platform_and_an_artifact_is_not_scannable() {
    let app = App::new().await;
    let amd = debian("amd64");
    let arm = image_of(
        vec![targz(&[(
            "lib/apk/db/installed",
            b"P:musl\nV:1.2.4-r2\nA:aarch64\no:musl\n\n",
        )])],
        "arm64",
    );
    app.push_image("team/multi", "amd", &amd).await;
    app.push_image("team/multi", "arm", &arm).await;
    let idx = index(
        OCI_INDEX,
        &[
            amd.descriptor(Some(("linux", "amd64"))),
            arm.descriptor(Some(("linux", "arm64"))),
        ],
    );
    let digest = app
        .push_manifest("team/multi", "latest", OCI_INDEX, &idx)
        .await;
    let r = app
        .get(&format!(
            "/api/v1/repositories/team/multi/artifacts/{digest}/inventory"
        ))
        .await;
    r.assert_status(StatusCode::OK);
    let inv = r.json();
    assert_eq!(inv["kind"], "index");
    let platforms = inv["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    assert_eq!(platforms[0]["platform"], "linux/amd64");
    assert_eq!(platforms[0]["digest"], amd.digest().as_str());
    assert_eq!(packages(&platforms[0]).len(), 3);
    assert_eq!(platforms[1]["platform"], "linux/arm64");
    assert_eq!(packages(&platforms[1]), [triple("apk", "musl", "1.2.4-r2")]);
    // An SBOM describes one image: the index's refusal names its children.
    let r = app
        .get(&format!(
            "/api/v1/repositories/team/multi/artifacts/{digest}/sbom"
        ))
        .await;
    r.assert_status(StatusCode::BAD_REQUEST);
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&amd.digest())
    );

    // An SBOM pushed as a referrer is an artifact, not an image.
    app.push_blob("team/multi", EMPTY_BLOB).await;
    let sbom = artifact(&amd.descriptor(None), "application/spdx+json", json!({}));
    let sbom_digest = app
        .push_manifest("team/multi", &sha256(&sbom), OCI_MANIFEST, &sbom)
        .await;
    let r = app
        .get(&format!(
            "/api/v1/repositories/team/multi/artifacts/{sbom_digest}/inventory"
        ))
        .await;
    r.assert_status(StatusCode::OK);
    let inv = r.json();
    assert_eq!(inv["coverage"]["status"], "not_scannable");
    assert!(
        inv["coverage"]["reason"].as_str().unwrap().contains("spdx"),
        "{inv}"
    );
    assert_eq!(packages(&inv), []);
}

#[tokio::test]
async fn a_layer_the_repository_no_longer_holds_makes_the_inventory_incomplete() {
    let app = App::new().await;
    let image = debian("sparse");
    let digest = app.push_image("team/sparse", "v1", &image).await;
    let gone = sha256(&image.layers[1]);
    app.delete(&format!("/v2/team/sparse/blobs/{gone}"))
        .await
        .assert_status(StatusCode::ACCEPTED);
    let inv = app
        .get(&format!(
            "/api/v1/repositories/team/sparse/artifacts/{digest}/inventory"
        ))
        .await
        .json();
    assert_eq!(
        inv["coverage"],
        json!({"status": "incomplete", "missing_layers": [gone]})
    );
    // What the layers it holds record is still listed.
    assert_eq!(
        packages(&inv),
        [
            triple("deb", "bsdutils", "1:2.38.1-5+b1"),
            triple("deb", "libc6", "2.36-9+deb12u4")
        ]
    );
}

#[tokio::test]
async fn a_scan_past_its_limits_is_refused_or_reports_what_it_skipped() {
    let app = App::with_config(|c| {
        c.scan.max_file_size = bytesize::ByteSize::b(64);
    })
    .await;
    let image = debian("limits");
    let digest = app.push_image("team/limits", "v1", &image).await;
    let inv = app
        .get(&format!(
            "/api/v1/repositories/team/limits/artifacts/{digest}/inventory"
        ))
        .await
        .json();
    assert_eq!(packages(&inv), [triple("pypi", "six", "1.16.0")]);
    assert_eq!(inv["skipped"][0]["what"], "var/lib/dpkg/status");
    assert!(
        inv["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("scan.max_file_size"),
        "{inv}"
    );

    let app = App::with_config(|c| c.scan.max_paths = 1).await;
    let digest = app.push_image("team/limits", "v1", &debian("paths")).await;
    let r = app
        .get(&format!(
            "/api/v1/repositories/team/limits/artifacts/{digest}/inventory"
        ))
        .await;
    r.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("scan.max_paths"), "{message}");
}

#[tokio::test]
async fn an_sbom_pushed_beside_the_image_is_listed_by_the_referrers_api() {
    let app = App::new().await;
    let image = debian("referrer");
    let digest = app.push_image("team/app", "v1", &image).await;
    let r = app
        .call(
            req(
                Method::POST,
                &format!("/api/v1/repositories/team/app/artifacts/{digest}/sbom?format=cyclonedx"),
            ),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    let pushed = r.json();
    assert_eq!(pushed["artifact_type"], "application/vnd.cyclonedx+json");
    let referrer = pushed["digest"].as_str().unwrap().to_owned();

    let listed = app
        .get(&format!("/v2/team/app/referrers/{digest}"))
        .await
        .json();
    let manifests = listed["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{listed}");
    assert_eq!(manifests[0]["digest"], referrer.as_str());
    assert_eq!(
        manifests[0]["artifactType"],
        "application/vnd.cyclonedx+json"
    );

    // The referrer's one layer is the document, which names the image.
    let manifest = app
        .get(&format!("/v2/team/app/manifests/{referrer}"))
        .await
        .json();
    assert_eq!(manifest["subject"]["digest"], digest.as_str());
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let document = app.get(&format!("/v2/team/app/blobs/{layer}")).await.json();
    assert_eq!(document["bomFormat"], "CycloneDX");
    assert!(
        document["metadata"]["component"]["name"]
            .as_str()
            .unwrap()
            .contains("team/app"),
        "{document}"
    );
    // An SBOM has no inventory of its own.
    let inv = app
        .get(&format!(
            "/api/v1/repositories/team/app/artifacts/{referrer}/inventory"
        ))
        .await
        .json();
    assert_eq!(inv["coverage"]["status"], "not_scannable");
}

/// Records of the tracker's and OSV's formats, written for this test: util-linux (the source
/// of bsdutils) open on bookworm and not to be fixed; six in two OSV records that share an
/// alias, with different fixes.
fn write_records(dir: &std::path::Path) {
    std::fs::write(
        dir.join("debian.json"),
        br#"{"util-linux": {"CVE-2099-1": {"description": "util-linux is open on bookworm",
            "releases": {"bookworm": {"status": "open",
            "urgency": "low", "nodsa_reason": "ignored"}}}}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("GHSA-six.json"),
        br#"{"id": "GHSA-aaaa-bbbb-cccc", "aliases": ["CVE-2099-5"], "affected": [
            {"package": {"ecosystem": "PyPI", "name": "Six"}, "ranges": [{"type": "ECOSYSTEM",
             "events": [{"introduced": "0"}, {"fixed": "1.16.1"}]}]}],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"}],
            "database_specific": {"severity": "HIGH"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("PYSEC-six.json"),
        br#"{"id": "PYSEC-2099-7", "aliases": ["GHSA-aaaa-bbbb-cccc"], "affected": [
            {"package": {"ecosystem": "PyPI", "name": "six"}, "ranges": [{"type": "ECOSYSTEM",
             "events": [{"introduced": "1.0"}, {"fixed": "1.17.0"}]}]}]}"#,
    )
    .unwrap();
}

#[tokio::test]
async fn vulnerabilities_are_matched_against_the_imported_database() {
    let app = App::new().await;
    let digest = app.push_image("team/app", "v1", &debian("vulns")).await;
    let url = format!("/api/v1/repositories/team/app/artifacts/{digest}/vulnerabilities");

    // Nothing imported: nothing is reported free of vulnerabilities.
    let r = app.get(&url).await;
    r.assert_status(StatusCode::OK);
    let before = r.json();
    assert_eq!(before["database"], Value::Null);
    assert_eq!(before["complete"], false);
    assert_eq!(before["findings"], json!([]));
    let uncovered: Vec<&str> = before["not_covered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["what"].as_str().unwrap())
        .collect();
    assert_eq!(uncovered, ["Debian:12", "PyPI"]);

    let records = tempfile::tempdir().unwrap();
    write_records(records.path());
    let store = app.registry.vuln_store().await.unwrap();
    let opts = berth_jobs::vulndb::ImportOptions::from_config(&Default::default(), "test");
    let report = berth_jobs::vulndb::import(store, &[records.path().display().to_string()], &opts)
        .await
        .unwrap();
    assert_eq!((report.version, report.added), (1, 3));

    let r = app.get(&url).await;
    r.assert_status(StatusCode::OK);
    let got = r.json();
    assert_eq!(got["database"]["version"], 1);
    assert_eq!(got["complete"], true, "{got:#}");
    assert_eq!(got["not_covered"], json!([]));
    let findings = got["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{got:#}");
    // Sorted by severity: six first.
    let six = &findings[0];
    assert_eq!(six["id"], "CVE-2099-5");
    assert_eq!(
        six["ids"],
        json!(["CVE-2099-5", "GHSA-aaaa-bbbb-cccc", "PYSEC-2099-7"])
    );
    assert_eq!(six["package"], "six");
    assert_eq!(
        six["fixed_version"], "1.17.0",
        "the fix of every merged record"
    );
    assert_eq!(six["status"], "fixed");
    assert_eq!(six["severity"], "high");
    assert_eq!(six["severity_source"], "ghsa");
    assert_eq!(six["cvss"]["score"], 5.3);
    assert_eq!(six["layer"], 1);
    let bsd = &findings[1];
    assert_eq!(bsd["id"], "CVE-2099-1");
    assert_eq!(bsd["package"], "bsdutils");
    assert_eq!(
        bsd["matched"],
        json!({"ecosystem": "Debian:12", "name": "util-linux", "version": "2.38.1-5"})
    );
    assert_eq!(bsd["status"], "will_not_fix");
    assert_eq!(bsd.get("fixed_version"), None);
    assert_eq!(bsd["severity"], "low");
    assert_eq!(bsd["severity_source"], "debian");
    // Descriptions and links are kept apart from what matching reads, and joined back.
    assert_eq!(
        bsd["links"],
        json!(["https://security-tracker.debian.org/tracker/CVE-2099-1"])
    );
    assert_eq!(bsd["description"], "util-linux is open on bookworm");
    assert_eq!(
        got["summary"],
        json!({"total": 2, "fixable": 1, "by_severity": {"low": 1, "high": 1}})
    );

    // A release the database has nothing for is not covered, whatever else matched.
    let bullseye = image_of(
        vec![targz(&[
            ("etc/os-release", b"ID=debian\nVERSION_ID=\"11\"\n"),
            ("var/lib/dpkg/status", STATUS),
        ])],
        "bullseye",
    );
    let digest11 = app.push_image("team/old", "v1", &bullseye).await;
    let r = app
        .get(&format!(
            "/api/v1/repositories/team/old/artifacts/{digest11}/vulnerabilities"
        ))
        .await;
    r.assert_status(StatusCode::OK);
    let old = r.json();
    assert_eq!(old["complete"], false);
    assert_eq!(old["not_covered"][0]["what"], "Debian:11");
    assert_eq!(old["not_covered"][0]["packages"], 2);
    assert_eq!(old["findings"], json!([]));

    let r = app.get("/api/v1/vulndb").await;
    r.assert_status(StatusCode::OK);
    let status = r.json();
    assert_eq!(status["version"], 1);
    assert_eq!(status["ecosystems"], json!(["Debian:12", "PyPI"]));
    assert_eq!(
        status["feeds"],
        json!([{"feed": "debian-tracker", "records": 1}, {"feed": "osv:PyPI", "records": 2}])
    );
    app.delete(&url)
        .await
        .assert_status(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_sync_without_sources_is_refused_and_with_them_queued() {
    let app = App::new().await;
    let r = app
        .send(
            axum::http::Request::post("/api/v1/vulndb/sync")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.assert_status(StatusCode::CONFLICT);
    let body = r.json();
    assert_eq!(body["errors"][0]["code"], "CONFLICT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("vulndb.sources"),
        "{body}"
    );
    let records = tempfile::tempdir().unwrap();
    write_records(records.path());
    let dir = records.path().display().to_string();
    let app = App::with_config(|c| c.vulndb.sources = vec![dir]).await;
    let r = app
        .send(
            axum::http::Request::post("/api/v1/vulndb/sync")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    assert!(r.json()["job"].as_i64().is_some());
}
