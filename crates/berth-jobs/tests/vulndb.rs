//! Vulnerability database imports on the real records of berth-scan's `testdata/vulndb`, on
//! the metadata store `TEST_METASTORE` selects (scripts/test.sh runs this file on SQLite and
//! on PostgreSQL): versions and what each changed, unchanged re-imports, withdrawals, merges,
//! reads of an older version while a newer one is written, broken sources and downloads that
//! publish nothing, and an import that died being cleaned up by the next.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_jobs::vulndb::{ImportError, ImportOptions, import};
use berth_meta::{MetaStore, VulnRecordWrite, VulnStore};

fn records() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../berth-scan/testdata/vulndb")
}

fn opts(holder: &str) -> ImportOptions {
    ImportOptions {
        merge: false,
        max_record_bytes: 32 << 20,
        max_download_bytes: 64 << 20,
        download_timeout: Duration::from_secs(30),
        ca_file: None,
        holder: holder.into(),
    }
}

async fn store(dir: &Path) -> (MetaStore, VulnStore) {
    let meta = MetaStore::open_for_tests(dir).await.unwrap();
    let vulns = meta.vuln_store(&dir.join("vulndb.db")).await.unwrap();
    (meta, vulns)
}

fn path(p: &Path) -> Vec<String> {
    vec![p.display().to_string()]
}

/// The ids of the advisories `store` finds for a package at version `v`.
async fn ids(store: &VulnStore, v: i64, ecosystem: &str, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .lookup(v, ecosystem, &[name.to_owned()])
        .await
        .unwrap()
        .into_iter()
        .map(|(_, record)| {
            let a: berth_scan::vulndb::Advisory = serde_json::from_str(&record.body).unwrap();
            a.id
        })
        .collect();
    ids.sort();
    ids
}

/// A copy of the fixture records in a directory of its own, to change.
fn copy_records(to: &Path) {
    for entry in walk(&records()) {
        let rel = entry.strip_prefix(records()).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dest).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn versions_report_what_changed_and_old_versions_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (_meta, store) = store(dir.path()).await;
    assert_eq!(store.published_version().await.unwrap(), 0);

    let first = import(&store, &path(&records()), &opts("t")).await.unwrap();
    assert!(first.published);
    assert_eq!(first.version, 1);
    assert!(first.added > 30, "{first:?}");
    assert_eq!((first.changed, first.withdrawn), (0, 0));
    // expected-matches.json lies among the records: not a record, counted and named.
    assert_eq!(first.rejected, 1);
    assert!(first.rejections[0].contains("expected-matches.json"));
    assert!(first.feeds.contains(&"debian-tracker".to_owned()));
    assert!(first.ecosystems.contains(&"Ubuntu:18.04".to_owned()));
    assert!(first.ecosystems.contains(&"Alpine:v3.4".to_owned()));
    assert_eq!(ids(&store, 1, "Ubuntu:18.04", "apt").await, ["USN-3863-1"]);
    assert!(store.covers(1, "Debian:7").await.unwrap());
    assert!(!store.covers(1, "Debian:12:not-a-release").await.unwrap());

    // The same data again: nothing changes, no version is published.
    let again = import(&store, &path(&records()), &opts("t")).await.unwrap();
    assert!(!again.published);
    assert_eq!(again.version, 1);
    assert_eq!(again.unchanged, first.added);
    assert_eq!(again.added + again.changed + again.withdrawn, 0);

    // One record changed (aiohttp's now names a second package), one removed, one added.
    let edited = tempfile::tempdir().unwrap();
    copy_records(edited.path());
    let aio = edited.path().join("osv/pypi/PYSEC-2023-120.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&aio).unwrap()).unwrap();
    let mut extra = record["affected"][0].clone();
    extra["package"]["name"] = "Aio_HTTP-Extra".into();
    record["affected"].as_array_mut().unwrap().push(extra);
    std::fs::write(&aio, serde_json::to_vec(&record).unwrap()).unwrap();
    std::fs::remove_file(edited.path().join("osv/pypi/PYSEC-2005-1.json")).unwrap();
    std::fs::write(
        edited.path().join("osv/pypi/PYSEC-2099-1.json"),
        br#"{"id":"PYSEC-2099-1","modified":"2099-01-01T00:00:00Z","affected":[
            {"package":{"ecosystem":"PyPI","name":"newpkg"},
             "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2.0"}]}]}]}"#,
    )
    .unwrap();
    let second = import(&store, &path(edited.path()), &opts("t"))
        .await
        .unwrap();
    assert!(second.published);
    assert_eq!(second.version, 2);
    assert_eq!(
        (second.added, second.changed, second.withdrawn),
        (1, 1, 1),
        "{second:?}"
    );
    let mut changes = store.changes(2).await.unwrap();
    changes.sort();
    let pypi = |n: &str| ("PyPI".to_owned(), n.to_owned());
    assert_eq!(
        changes,
        [
            pypi("aio-http-extra"),
            pypi("aiohttp"),
            pypi("newpkg"),
            pypi("trac")
        ]
    );
    assert_eq!(second.packages_changed, 4);
    assert_eq!(second.ecosystems, ["PyPI"]);
    // Version 2 sees the change; version 1 is still whole for a match that read it before.
    assert_eq!(ids(&store, 2, "PyPI", "trac").await, Vec::<String>::new());
    assert_eq!(ids(&store, 1, "PyPI", "trac").await, ["PYSEC-2005-1"]);
    assert_eq!(ids(&store, 2, "PyPI", "newpkg").await, ["PYSEC-2099-1"]);
    assert_eq!(ids(&store, 1, "PyPI", "newpkg").await, Vec::<String>::new());
    assert_eq!(
        ids(&store, 2, "PyPI", "aio-http-extra").await,
        ["PYSEC-2023-120"]
    );
    assert_eq!(ids(&store, 2, "PyPI", "aiohttp").await, ["PYSEC-2023-120"]);
    // Other feeds were left alone.
    assert_eq!(ids(&store, 2, "Ubuntu:18.04", "apt").await, ["USN-3863-1"]);
    let status = store.versions(10).await.unwrap();
    assert_eq!(status.len(), 2);
    assert_eq!(status[0].records, status[1].records);

    // --merge: a single record adds to its feed and withdraws nothing.
    let one = tempfile::tempdir().unwrap();
    std::fs::write(
        one.path().join("x.json"),
        br#"{"id":"PYSEC-2099-2","affected":[{"package":{"ecosystem":"PyPI","name":"other"},
            "versions":["1.0"]}]}"#,
    )
    .unwrap();
    let mut merge = opts("t");
    merge.merge = true;
    let third = import(&store, &path(one.path()), &merge).await.unwrap();
    assert_eq!((third.version, third.added, third.withdrawn), (3, 1, 0));
    assert_eq!(ids(&store, 3, "PyPI", "newpkg").await, ["PYSEC-2099-1"]);
    // Without --merge the same file replaces the whole PyPI feed.
    let fourth = import(&store, &path(one.path()), &opts("t")).await.unwrap();
    assert_eq!(fourth.version, 4);
    assert_eq!(fourth.added, 0);
    assert!(fourth.withdrawn >= 5, "{fourth:?}");
    assert_eq!(ids(&store, 4, "PyPI", "newpkg").await, Vec::<String>::new());
    assert_eq!(ids(&store, 4, "Ubuntu:18.04", "apt").await, ["USN-3863-1"]);
}

#[tokio::test]
async fn a_broken_source_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_meta, store) = store(dir.path()).await;
    import(&store, &path(&records()), &opts("t")).await.unwrap();

    // A zip cut short (a download that stopped): its central directory is missing.
    let zip_path = dir.path().join("PyPI-all.zip");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        for f in walk(&records().join("osv/pypi")) {
            if f.extension().is_some_and(|x| x == "json") {
                zip.start_file(
                    f.file_name().unwrap().to_string_lossy(),
                    zip::write::SimpleFileOptions::default(),
                )
                .unwrap();
                std::io::Write::write_all(&mut zip, &std::fs::read(&f).unwrap()).unwrap();
            }
        }
        zip.finish().unwrap();
    }
    let whole = std::fs::read(&zip_path).unwrap();
    let cut = dir.path().join("cut.zip");
    std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).unwrap();
    let e = import(&store, &path(&cut), &opts("t")).await.unwrap_err();
    assert!(e.to_string().contains("not a complete zip archive"), "{e}");
    // The whole zip is the PyPI feed as it was: nothing to change.
    let same = import(&store, &path(&zip_path), &opts("t")).await.unwrap();
    assert!(!same.published, "{same:?}");

    // Broken JSON in the tracker's file: the import stops, version 1 stays.
    let tracker =
        std::fs::read_to_string(records().join("debian-security-tracker/debian.json")).unwrap();
    let broken = dir.path().join("tracker.json");
    std::fs::write(&broken, &tracker[..tracker.len() / 2]).unwrap();
    assert!(import(&store, &path(&broken), &opts("t")).await.is_err());
    assert_eq!(store.published_version().await.unwrap(), 1);
    assert_eq!(ids(&store, 1, "Debian:9", "prototypejs").await.len(), 1);

    // Something that is none of the formats.
    let other = dir.path().join("other.json");
    std::fs::write(&other, br#"[{"not": "a record"}]"#).unwrap();
    let e = import(&store, &path(&other), &opts("t")).await.unwrap_err();
    assert!(e.to_string().contains("neither an OSV record"), "{e}");
    let missing = import(&store, &["/no/such/file.zip".into()], &opts("t"))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("no such file"), "{missing}");
    assert_eq!(store.published_version().await.unwrap(), 1);
}

#[tokio::test]
async fn one_import_at_a_time_and_a_dead_one_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let (_meta, store) = store(dir.path()).await;
    // An import that holds the lease: another one is refused.
    let held = store
        .begin_import("other-node", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let e = import(&store, &path(&records()), &opts("t"))
        .await
        .unwrap_err();
    assert!(matches!(e, ImportError::Busy), "{e}");
    store.abandon(held).await.unwrap();

    // An import that wrote rows and died (its lease runs out): they are never seen, and the
    // next import removes them before it writes.
    let dead = store
        .begin_import("dead-node", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.version, 1);
    store
        .write_records(
            &dead,
            &[VulnRecordWrite {
                feed: "osv:PyPI".into(),
                key: "GHOST-1".into(),
                hash: "00".into(),
                body: r#"{"id":"GHOST-1","source":"osv","affected":[]}"#.into(),
                info: "{}".into(),
                packages: vec![("PyPI".into(), "ghost".into())],
                replaces: false,
            }],
        )
        .await
        .unwrap();
    assert_eq!(ids(&store, 0, "PyPI", "ghost").await, Vec::<String>::new());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = import(&store, &path(&records()), &opts("t")).await.unwrap();
    assert_eq!(report.version, 1);
    assert_eq!(ids(&store, 1, "PyPI", "ghost").await, Vec::<String>::new());
    // The dead import's lease is gone: it cannot publish over the new version.
    assert!(store.publish(dead, &Default::default()).await.is_err());
    assert_eq!(store.published_version().await.unwrap(), 1);
}

/// A server of one file, for downloads: `/ok` serves it, `/short` announces more bytes than it
/// sends, `/missing` answers 404.
async fn file_server(body: Vec<u8>) -> String {
    use axum::body::Body;
    use axum::http::{Response, header};
    use axum::routing::get;
    let full = body.clone();
    let app = axum::Router::new()
        .route("/ok", get(move || async move { full.clone() }))
        .route(
            "/short",
            get(move || {
                let body = body.clone();
                async move {
                    // The length of the whole file, then half of it and the end of the stream.
                    let half = body[..body.len() / 2].to_vec();
                    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(half)]);
                    Response::builder()
                        .header(header::CONTENT_LENGTH, body.len())
                        .body(Body::from_stream(stream))
                        .unwrap()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn downloads_are_imported_only_when_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_meta, store) = store(dir.path()).await;
    let tracker = std::fs::read(records().join("debian-security-tracker/debian.json")).unwrap();
    let base = file_server(tracker).await;
    for (url, expect) in [
        // The connection ends before the announced length: hyper reports the early end.
        (format!("{base}/short"), "downloading"),
        (format!("{base}/missing"), "404"),
    ] {
        let e = import(&store, std::slice::from_ref(&url), &opts("t"))
            .await
            .unwrap_err();
        assert!(matches!(e, ImportError::Download { .. }), "{url}: {e}");
        assert!(e.to_string().contains(expect), "{url}: {e}");
    }
    let mut small = opts("t");
    small.max_download_bytes = 100;
    let e = import(&store, &[format!("{base}/ok")], &small)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("max_download_size"), "{e}");
    assert_eq!(store.published_version().await.unwrap(), 0);
    let ok = import(&store, &[format!("{base}/ok")], &opts("t"))
        .await
        .unwrap();
    assert_eq!(ok.version, 1);
    assert_eq!(ok.feeds, ["debian-tracker"]);
    assert_eq!(ids(&store, 1, "Debian:9", "prototypejs").await.len(), 1);
}

#[tokio::test]
async fn the_sync_job_imports_the_configured_sources() {
    use berth_jobs::{JobReport, JobRequest, VulndbSyncOptions, execute_job};
    let dir = tempfile::tempdir().unwrap();
    let meta = MetaStore::open_for_tests(dir.path()).await.unwrap();
    let blobs = berth_storage::FsBlobStore::open(dir.path()).unwrap();
    let mut config = berth_core::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let request = JobRequest::VulndbSync(VulndbSyncOptions::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    // No sources: the job fails, saying so.
    let e = execute_job(&meta, &blobs, &config, &request, &cancel)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("vulndb.sources"), "{e}");
    config.vulndb.sources = vec![records().join("osv").display().to_string()];
    config.vulndb.schedule = "0 3 * * *".into();
    config.validate().unwrap();
    berth_jobs::validate_schedules(&config).unwrap();
    let JobReport::VulndbSync(report) = execute_job(&meta, &blobs, &config, &request, &cancel)
        .await
        .unwrap()
    else {
        panic!("a vulndb-sync report")
    };
    assert_eq!(report.version, 1);
    assert!(report.feeds.contains(&"osv:Go".to_owned()), "{report:?}");
    // The store the job wrote is the one the registry reads.
    let store = meta
        .vuln_store(&dir.path().join("vulndb.db"))
        .await
        .unwrap();
    assert_eq!(store.published_version().await.unwrap(), 1);
    // A stored report reads back as the same kind.
    let stored = serde_json::to_value(&report).unwrap();
    assert_eq!(
        JobReport::from_stored("vulndb-sync", Some(&stored)),
        Some(JobReport::VulndbSync(report))
    );
}

/// The inventory of an image of one layer holding `fixture` (a directory as the root, or a
/// file under /app/) and an os-release.
fn fixture_inventory(fixture: &Path, os_release: Option<&str>) -> berth_scan::Inventory {
    let mut b = tar::Builder::new(Vec::new());
    if fixture.is_dir() {
        b.append_dir_all(".", fixture).unwrap();
    } else {
        let name = Path::new("app").join(fixture.file_name().unwrap());
        b.append_path_with_name(fixture, name).unwrap();
    }
    if let Some(text) = os_release {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/os-release", text.as_bytes())
            .unwrap();
    }
    let limits = berth_scan::walk::Limits::default();
    berth_scan::walk::inventory_of_tar(b.into_inner().unwrap(), &limits).unwrap()
}

/// Every entry of the fixtures' expected-matches.json, through the store: the records
/// imported as `berth vulndb import` imports them, each inventory matched as the API matches
/// it (one version of the database, the records found by (ecosystem, name)).
#[tokio::test]
async fn every_expected_match_through_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (_meta, store) = store(dir.path()).await;
    let sources: Vec<String> = ["osv", "alpine-secdb", "debian-security-tracker"]
        .iter()
        .map(|d| records().join(d).display().to_string())
        .collect();
    let report = import(&store, &sources, &opts("t")).await.unwrap();
    assert_eq!(report.rejected, 0, "{:?}", report.rejections);
    let testdata = records().join("..");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(records().join("expected-matches.json")).unwrap())
            .unwrap();
    let mut failures = Vec::new();
    let cases = expected["matches"].as_array().unwrap();
    assert!(cases.len() >= 22);
    for case in cases {
        let s = |k: &str| case[k].as_str();
        let inv_path = s("inventory").unwrap();
        let os = if inv_path.contains("ubuntu-18.04") {
            Some("ID=ubuntu\nVERSION_ID=\"18.04\"\n")
        } else if inv_path.contains("alpine-3.4") {
            Some("ID=alpine\nVERSION_ID=3.4.6\n")
        } else {
            None
        };
        let inv = fixture_inventory(&testdata.join(inv_path), os);
        let found = berth_service::vulndb::match_inventory(&store, &inv)
            .await
            .unwrap();
        // The ids the case's record file(s) stand for.
        let record = s("record").unwrap();
        let ids: Vec<String> = match (s("cve"), record.strip_suffix("/*")) {
            (Some(cve), _) => vec![cve.to_owned()],
            (None, Some(dir)) => walk(&testdata.join(dir))
                .iter()
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .map(|p| record_id(p))
                .collect(),
            (None, None) => vec![record_id(&testdata.join(record))],
        };
        let package = s("package").unwrap();
        let hits: Vec<&berth_scan::vulndb::matching::Finding> = found
            .findings
            .iter()
            .filter(|f| {
                (package == "(all)"
                    || (f.package == package && Some(f.installed_version.as_str()) == s("version")))
                    && f.ids.iter().any(|i| ids.contains(i))
            })
            .collect();
        let want = case["affected"].as_bool().unwrap();
        if hits.is_empty() == want {
            failures.push(format!(
                "{package} {} x {record} {}: want affected={want}, got {:?}",
                s("version").unwrap_or(""),
                s("cve").unwrap_or(""),
                hits.iter().map(|f| &f.id).collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn record_id(path: &Path) -> String {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["id"].as_str().unwrap().to_owned()
}
