//! The Java archive parser against the jars in `testdata/inventory/java` and what trivy's jar
//! parser finds in them (offline), as `expected.json` records it.

use std::path::{Path, PathBuf};

use berth_scan::catalog::java;
use berth_scan::{Ecosystem, Package};
use serde_json::Value;

/// Where the fixture jars are put in the (imaginary) image.
const IMAGE_DIR: &str = "usr/share/java";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/inventory/java")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

/// Trivy joins nested archives with `/` (`nested.jar/META-INF/jars/nested2.jar`); a package
/// path here joins them with `!`.
fn image_path(trivy_file: &str) -> String {
    let mut path = format!("{IMAGE_DIR}/");
    let mut after_archive = false;
    for (i, segment) in trivy_file.split('/').enumerate() {
        if i > 0 {
            path.push(if after_archive { '!' } else { '/' });
        }
        path.push_str(segment);
        after_archive = java::wants(segment);
    }
    path
}

type Row = (String, String, String, Vec<String>);

fn row(package: &Package) -> Row {
    (
        package.name.clone(),
        package.version.clone(),
        package.path.clone(),
        package.licenses.clone(),
    )
}

fn expected_rows(key: &str) -> Vec<Row> {
    let expected = expected();
    let entries = expected["jars"][key].as_array().expect("a list per jar");
    let mut rows: Vec<Row> = entries
        .iter()
        .map(|entry| {
            let text = |field: &str| entry[field].as_str().expect(field).to_owned();
            let licenses = entry["licenses"]
                .as_array()
                .map(|names| {
                    names
                        .iter()
                        .map(|n| n.as_str().expect("licence name").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (
                text("name"),
                text("version"),
                image_path(&text("file")),
                licenses,
            )
        })
        .collect();
    rows.sort();
    rows
}

fn parsed_rows(file: &str) -> Vec<Row> {
    let data = std::fs::read(fixture_dir().join(file)).expect("fixture jar");
    let path = format!("{IMAGE_DIR}/{file}");
    assert!(java::wants(&path));
    let contents =
        java::parse_contents(&path, &data, &java::JavaLimits::default()).expect("a valid jar");
    assert!(contents.skipped.is_empty(), "{:?}", contents.skipped);
    assert!(contents.errors.is_empty(), "{:?}", contents.errors);
    assert!(
        contents
            .packages
            .iter()
            .all(|p| p.ecosystem == Ecosystem::Maven && p.layer.is_none())
    );
    let mut rows: Vec<Row> = contents.packages.iter().map(row).collect();
    rows.sort();
    rows
}

#[test]
fn fat_jar_lists_every_embedded_pom_properties() {
    let file = "hadoop-shaded-guava-1.1.0-SNAPSHOT.jar";
    assert_eq!(parsed_rows(file), expected_rows(file));
}

#[test]
fn nested_jars_are_read_recursively() {
    let file = "nested.jar";
    assert_eq!(parsed_rows(file), expected_rows(file));
}

#[test]
fn jar_without_pom_properties_falls_back_to_the_manifest() {
    assert_eq!(parsed_rows("test.jar"), expected_rows("test.jar (offline)"));
}

#[test]
fn every_fixture_jar_is_covered() {
    let expected = expected();
    let keys: Vec<&str> = expected["jars"]
        .as_object()
        .expect("jars object")
        .keys()
        .map(|k| k.split(' ').next().unwrap_or(k))
        .collect();
    let mut jars: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| java::wants(name))
        .collect();
    jars.sort();
    let mut keys: Vec<String> = keys.into_iter().map(str::to_owned).collect();
    keys.sort();
    assert_eq!(jars, keys);
}

#[test]
fn depth_zero_reads_only_the_outer_jar() {
    let data = std::fs::read(fixture_dir().join("nested.jar")).expect("fixture jar");
    let limits = java::JavaLimits {
        max_depth: 0,
        ..java::JavaLimits::default()
    };
    let contents = java::parse_contents("nested.jar", &data, &limits).expect("a valid jar");
    let names: Vec<&str> = contents.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["test:nested"]);
    assert_eq!(contents.skipped.len(), 1);
    assert_eq!(
        contents.skipped[0].what,
        "nested.jar!META-INF/jars/nested2.jar"
    );
}
