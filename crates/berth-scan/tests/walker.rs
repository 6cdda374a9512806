//! The layer walker on layers built here: every inventory fixture as a layer, whiteouts,
//! links across layers, compression, the limits (each proven with a lowered limit), and the
//! property that a database split over layers reads as the flattened filesystem does.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use berth_scan::walk::{self, LayerRef, Layers, Limits, WalkError};
use berth_scan::{Coverage, Inventory};
use proptest::prelude::*;

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One entry of a layer under construction.
enum Entry {
    File(String, Vec<u8>, u32),
    Link(String, String),
    Dir(String),
}

fn file(path: &str, data: &[u8]) -> Entry {
    Entry::File(path.into(), data.to_vec(), 0o644)
}

fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        match e {
            Entry::File(path, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                b.append_data(&mut h, path, data.as_slice()).unwrap();
            }
            Entry::Link(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Layers held in memory, by digest; a digest not held is a missing layer.
#[derive(Default)]
struct Memory(HashMap<String, Vec<u8>>);

impl Layers for Memory {
    fn open(&mut self, layer: &LayerRef) -> io::Result<Option<Box<dyn Read + Send>>> {
        Ok(self
            .0
            .get(&layer.digest)
            .map(|b| Box::new(io::Cursor::new(b.clone())) as Box<dyn Read + Send>))
    }
}

/// An image of `layers` (stored bytes, media type), bottom first.
struct Image {
    refs: Vec<LayerRef>,
    store: Memory,
}

impl Image {
    fn new(layers: Vec<(Vec<u8>, &str)>) -> Image {
        let mut store = Memory::default();
        let mut refs = Vec::new();
        for (i, (bytes, media_type)) in layers.into_iter().enumerate() {
            let digest = format!("sha256:{i:064}");
            refs.push(LayerRef {
                digest: digest.clone(),
                media_type: media_type.into(),
                size: bytes.len() as u64,
            });
            store.0.insert(digest, bytes);
        }
        Image { refs, store }
    }

    fn gzipped(layers: &[&[Entry]]) -> Image {
        Image::new(layers.iter().map(|l| (gzip(&tar(l)), GZIP)).collect())
    }

    fn walk(&mut self, limits: &Limits) -> Result<Inventory, WalkError> {
        walk::inventory(&self.refs, &mut self.store, limits)
    }

    fn inventory(&mut self) -> Inventory {
        self.walk(&Limits::default()).unwrap()
    }
}

fn names(inv: &Inventory) -> Vec<(String, String)> {
    let mut v: Vec<_> = inv
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    v.sort();
    v
}

fn pair(name: &str, version: &str) -> (String, String) {
    (name.into(), version.into())
}

fn stanza(name: &str, version: &str) -> String {
    format!(
        "Package: {name}\nStatus: install ok installed\nVersion: {version}\nArchitecture: amd64\n\n"
    )
}

/// Every file under `dir` (but expected.json) as tar entries, paths relative to `dir`.
fn entries_of(dir: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.push(Entry::Dir(rel));
                stack.push(p);
            } else if rel != "expected.json" {
                out.push(file(&rel, &std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// (name, full version) of every package a fixture's expected.json lists.
fn expected_of(expected: &serde_json::Value) -> Vec<(String, String)> {
    let listed: Vec<&serde_json::Value> = match expected.get("jars") {
        Some(jars) => jars
            .as_object()
            .unwrap()
            .values()
            .flat_map(|v| v.as_array().unwrap())
            .collect(),
        None => expected["packages"].as_array().unwrap().iter().collect(),
    };
    let mut v: Vec<_> = listed
        .into_iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_owned();
            let version = match p.get("release") {
                Some(release) => {
                    let epoch = p["epoch"]
                        .as_u64()
                        .map(|e| format!("{e}:"))
                        .unwrap_or_default();
                    format!("{epoch}{}-{}", s("version"), release.as_str().unwrap())
                }
                None => s("version"),
            };
            (s("name"), version)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_inventory_fixture_read_as_a_layer_gives_exactly_its_packages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/inventory");
    let mut fixtures = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() == "expected.json" {
                fixtures.push(d.clone());
            }
        }
    }
    fixtures.sort();
    assert!(fixtures.len() >= 16, "fixtures found: {fixtures:?}");
    let mut failures = Vec::new();
    for dir in &fixtures {
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let entries = entries_of(dir);
        let inv = Image::gzipped(&[&entries]).inventory();
        let got = names(&inv);
        let want = expected_of(&expected);
        if got != want || !inv.errors.is_empty() {
            failures.push(format!(
                "{}:\n  got  {got:?}\n  want {want:?}\n  errors {:?}",
                dir.strip_prefix(&root).unwrap().display(),
                inv.errors
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_later_layer_deletes_replaces_and_hides_directories() {
    let python = |name: &str, version: &str| {
        file(
            &format!("usr/lib/python3/site-packages/{name}-{version}.dist-info/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").as_bytes(),
        )
    };
    let mut image = Image::gzipped(&[
        &[
            file("var/lib/dpkg/status", stanza("libc6", "2.36-9").as_bytes()),
            python("six", "1.16.0"),
            python("idna", "3.4"),
        ],
        // The database is deleted, then written anew in the layer after.
        &[
            file("var/lib/dpkg/.wh.status", b""),
            file("usr/lib/python3/site-packages/.wh..wh..opq", b""),
            python("urllib3", "2.0.7"),
        ],
        &[file(
            "var/lib/dpkg/status",
            (stanza("libc6", "2.36-9+deb12u3") + &stanza("zlib1g", "1:1.2.13")).as_bytes(),
        )],
    ]);
    let inv = image.inventory();
    assert_eq!(
        names(&inv),
        [
            pair("libc6", "2.36-9+deb12u3"),
            pair("urllib3", "2.0.7"),
            pair("zlib1g", "1:1.2.13"),
        ]
    );
    let libc = inv.packages.iter().find(|p| p.name == "libc6").unwrap();
    assert_eq!(libc.layer, Some(2));
    assert_eq!(libc.path, "var/lib/dpkg/status");
    assert_eq!(inv.coverage, Coverage::Complete);
}

#[test]
fn a_whiteout_hides_only_what_is_below_it() {
    // The same layer's file stays, whatever the order of the entries.
    let mut image = Image::gzipped(&[
        &[file("var/lib/dpkg/status", stanza("old", "1").as_bytes())],
        &[
            file("var/lib/dpkg/status", stanza("new", "2").as_bytes()),
            file("var/lib/dpkg/.wh.status", b""),
        ],
    ]);
    assert_eq!(names(&image.inventory()), [pair("new", "2")]);
}

#[test]
fn links_across_layers_lead_to_os_release_and_package_databases() {
    let mut image = Image::gzipped(&[
        &[
            file(
                "usr/lib/os-release",
                b"ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
            ),
            // A database kept somewhere no cataloguer looks, reached through a directory link.
            file(
                "opt/dpkg-db/status",
                stanza("bash", "5.2.15-2+b2").as_bytes(),
            ),
        ],
        &[
            Entry::Link("etc/os-release".into(), "../usr/lib/os-release".into()),
            Entry::Dir("var/lib".into()),
            Entry::Link("var/lib/dpkg".into(), "/opt/dpkg-db".into()),
        ],
    ]);
    let inv = image.inventory();
    let os = inv.os.clone().unwrap();
    assert_eq!(
        (os.id.as_str(), os.version_id.as_deref()),
        ("debian", Some("12"))
    );
    assert_eq!(names(&inv), [pair("bash", "5.2.15-2+b2")]);
    assert_eq!(inv.packages[0].path, "opt/dpkg-db/status");
    assert_eq!(inv.packages[0].layer, Some(0));
}

#[test]
fn a_link_replaced_by_a_file_no_longer_leads_anywhere() {
    let mut image = Image::gzipped(&[
        &[
            file("usr/lib/os-release", b"ID=debian\n"),
            Entry::Link("etc/os-release".into(), "../usr/lib/os-release".into()),
        ],
        &[file("etc/os-release", b"ID=alpine\nVERSION_ID=3.19.1\n")],
    ]);
    assert_eq!(image.inventory().os.unwrap().id, "alpine");
}

#[test]
fn gzip_zstd_and_plain_layers_are_read_and_a_false_media_type_is_reported() {
    let layer = |name: &str| {
        tar(&[file(
            "lib/apk/db/installed",
            format!("P:{name}\nV:1.0-r0\n\n").as_bytes(),
        )])
    };
    let zstd = zstd::stream::encode_all(layer("z").as_slice(), 3).unwrap();
    let mut image = Image::new(vec![
        (gzip(&layer("g")), GZIP),
        (zstd, "application/vnd.oci.image.layer.v1.tar+zstd"),
        (layer("t"), "application/vnd.oci.image.layer.v1.tar"),
    ]);
    // The last layer replaces the database each time: only its packages are left.
    assert_eq!(names(&image.inventory()), [pair("t", "1.0-r0")]);
    let zstd_only = zstd::stream::encode_all(layer("z").as_slice(), 3).unwrap();
    let mut image = Image::new(vec![(
        zstd_only,
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    )]);
    let inv = image.inventory();
    assert!(inv.packages.is_empty());
    assert_eq!(inv.skipped.len(), 1);
    assert!(inv.skipped[0].reason.contains("Zstd"), "{:?}", inv.skipped);
}

#[test]
fn a_missing_layer_makes_the_inventory_incomplete_and_names_it() {
    let mut image = Image::gzipped(&[
        &[file(
            "var/lib/dpkg/status",
            stanza("libc6", "2.36-9").as_bytes(),
        )],
        &[file("usr/bin/tool", b"#!/bin/sh\n")],
    ]);
    let gone = image.refs[1].digest.clone();
    image.store.0.remove(&gone);
    let inv = image.inventory();
    assert_eq!(
        inv.coverage,
        Coverage::Incomplete {
            missing_layers: vec![gone]
        }
    );
    assert_eq!(names(&inv), [pair("libc6", "2.36-9")]);
}

#[test]
fn each_limit_holds_when_lowered() {
    let big = stanza("libc6", "2.36-9").repeat(50);
    let layers: &[&[Entry]] = &[
        &[file("var/lib/dpkg/status", big.as_bytes())],
        &[file("lib/apk/db/installed", b"P:musl\nV:1.2.4-r2\n\n")],
    ];

    // A file above scan.max_file_size is skipped and reported; the rest is read.
    let limits = Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    };
    let inv = Image::gzipped(layers).walk(&limits).unwrap();
    assert_eq!(names(&inv), [pair("musl", "1.2.4-r2")]);
    assert_eq!(inv.skipped.len(), 1);
    assert_eq!(inv.skipped[0].what, "var/lib/dpkg/status");
    assert!(inv.skipped[0].reason.contains("scan.max_file_size"));

    // A layer above scan.max_layer_size is not read, and reported.
    let mut image = Image::gzipped(layers);
    let limits = Limits {
        max_layer_bytes: image.refs[0].size - 1,
        ..Limits::default()
    };
    let inv = image.walk(&limits).unwrap();
    assert_eq!(names(&inv), [pair("musl", "1.2.4-r2")]);
    assert_eq!(inv.skipped[0].what, image.refs[0].digest);
    assert!(inv.skipped[0].reason.contains("scan.max_layer_size"));

    // scan.timeout stops the walk with an error, not a partial inventory.
    let limits = Limits {
        max_duration: Duration::ZERO,
        ..Limits::default()
    };
    assert!(matches!(
        Image::gzipped(layers).walk(&limits),
        Err(WalkError::TimedOut(_))
    ));

    // scan.max_paths bounds what is remembered across layers.
    let links: Vec<Entry> = (0..20)
        .map(|i| Entry::Link(format!("usr/bin/l{i}"), "x".into()))
        .collect();
    let limits = Limits {
        max_paths: 10,
        ..Limits::default()
    };
    assert!(matches!(
        Image::gzipped(&[&links]).walk(&limits),
        Err(WalkError::TooManyPaths(10))
    ));
}

/// What a generated layer does to a path.
#[derive(Debug, Clone)]
enum Op {
    /// Writes a database file recording one package `p<n>` at version `v`.
    Write(usize, u8),
    /// A whiteout of the file.
    Delete(usize),
    /// Makes the file's directory opaque.
    Opaque(usize),
}

/// The paths the property test plays with: dpkg status.d files (two directories), an apk
/// database and Python metadata.
fn path_of(slot: usize) -> (&'static str, &'static str) {
    [
        ("var/lib/dpkg/status.d", "a"),
        ("var/lib/dpkg/status.d", "b"),
        ("var/lib/dpkg/status.d", "c"),
        ("lib/apk/db", "installed"),
        ("usr/lib/python3/site-packages/p4-1.0.dist-info", "METADATA"),
    ][slot % 5]
}

fn content(slot: usize, version: u8) -> Vec<u8> {
    let name = format!("p{slot}");
    match slot % 5 {
        0..=2 => format!("Package: {name}\nVersion: {version}.0\nArchitecture: all\n").into_bytes(),
        3 => format!("P:{name}\nV:{version}.0-r0\n\n").into_bytes(),
        _ => format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}.0\n").into_bytes(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Package databases written, deleted and hidden over several layers read as the one
    /// flattened filesystem they make.
    #[test]
    fn layers_read_as_their_flattened_filesystem(
        layers in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    (0..5usize, any::<u8>()).prop_map(|(s, v)| Op::Write(s, v)),
                    (0..5usize).prop_map(Op::Delete),
                    (0..5usize).prop_map(Op::Opaque),
                ],
                0..6,
            ),
            1..5,
        )
    ) {
        // The flattened filesystem: path → content, layer by layer. Within a layer, whiteouts
        // apply to the layers below only, so they are applied before the layer's writes.
        let mut flat: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut built = Vec::new();
        for ops in &layers {
            let mut entries = Vec::new();
            let mut writes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Write(s, v) => {
                        let (dir, name) = path_of(*s);
                        writes.insert(format!("{dir}/{name}"), content(*s, *v));
                    }
                    Op::Delete(s) => {
                        let (dir, name) = path_of(*s);
                        let path = format!("{dir}/{name}");
                        flat.remove(&path);
                        entries.push(file(&format!("{dir}/.wh.{name}"), b""));
                    }
                    Op::Opaque(s) => {
                        let (dir, _) = path_of(*s);
                        flat.retain(|p, _| !p.starts_with(&format!("{dir}/")));
                        entries.push(file(&format!("{dir}/.wh..wh..opq"), b""));
                    }
                }
            }
            for (path, data) in writes {
                flat.insert(path.clone(), data.clone());
                entries.push(file(&path, &data));
            }
            built.push(entries);
        }
        let layered: Vec<&[Entry]> = built.iter().map(|l| l.as_slice()).collect();
        let flattened: Vec<Entry> = flat.iter().map(|(p, d)| file(p, d)).collect();
        let strip = |inv: Inventory| {
            let mut v: Vec<_> = inv.packages.into_iter().map(|p| (p.path, p.name, p.version)).collect();
            v.sort();
            v
        };
        let got = strip(Image::gzipped(&layered).inventory());
        let want = strip(Image::gzipped(&[&flattened]).inventory());
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_layer_that_is_not_a_readable_tar_is_reported_and_the_others_are_read() {
    let good = gzip(&tar(&[file(
        "lib/apk/db/installed",
        b"P:musl\nV:1.2.4-r2\n\n",
    )]));
    // A gzip stream whose deflate data is damaged: the magic is right, the rest is not.
    let mut damaged = gzip(&tar(&[file(
        "var/lib/dpkg/status",
        stanza("libc6", "2.36-9").repeat(40).as_bytes(),
    )]));
    let end = damaged.len() - 8;
    for b in &mut damaged[12..end] {
        *b ^= 0x5a;
    }
    let text = b"not a tar at all\n".repeat(60);
    let mut image = Image::new(vec![
        (good, GZIP),
        (text, "application/vnd.oci.image.layer.v1.tar"),
        (damaged, GZIP),
    ]);
    let inv = image.inventory();
    assert_eq!(names(&inv), [pair("musl", "1.2.4-r2")]);
    let skipped: Vec<&str> = inv.skipped.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(skipped, [&image.refs[1].digest, &image.refs[2].digest]);
    for s in &inv.skipped {
        assert!(s.reason.contains("not a readable tar stream"), "{s:?}");
    }
    assert_eq!(inv.coverage, Coverage::Complete);
}

/// A store that fails mid-layer is a storage failure: the walk stops with it.
#[test]
fn a_store_that_fails_stops_the_walk() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk gone"))
        }
    }
    struct Store;
    impl Layers for Store {
        fn open(&mut self, _: &LayerRef) -> io::Result<Option<Box<dyn Read + Send>>> {
            Ok(Some(Box::new(Failing)))
        }
    }
    let layer = LayerRef {
        digest: "sha256:1".into(),
        media_type: GZIP.into(),
        size: 10,
    };
    let err = walk::inventory(&[layer], &mut Store, &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, WalkError::Read { digest, source } if digest == "sha256:1" && source.to_string().contains("disk gone")),
        "{err:?}"
    );
}

/// A GNU long name (read whole into memory by the tar reader) larger than the walker allows
/// between two entries: the layer is reported, not held.
#[test]
fn a_tar_header_larger_than_the_bound_is_refused_not_held() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    let name = vec![b'a'; (walk::HEADERS_MAX + 1) as usize];
    h.set_size(name.len() as u64);
    h.set_cksum();
    b.append(&h, name.as_slice()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    b.append_data(&mut h, "etc/hostname", io::empty()).unwrap();
    let huge = gzip(&b.into_inner().unwrap());
    let ok = gzip(&tar(&[file(
        "lib/apk/db/installed",
        b"P:musl\nV:1.2.4-r2\n\n",
    )]));
    let mut image = Image::new(vec![(ok, GZIP), (huge, GZIP)]);
    let inv = image.inventory();
    assert_eq!(names(&inv), [pair("musl", "1.2.4-r2")]);
    assert_eq!(inv.skipped.len(), 1, "{:?}", inv.skipped);
    assert_eq!(inv.skipped[0].what, image.refs[1].digest);
    assert!(
        inv.skipped[0].reason.contains("headers"),
        "{:?}",
        inv.skipped
    );
}
