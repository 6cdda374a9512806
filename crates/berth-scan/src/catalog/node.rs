//! Node packages installed in an image, from the `package.json` of each package directory in a
//! `node_modules` tree: `…/node_modules/<name>/package.json` or
//! `…/node_modules/@<scope>/<name>/package.json`, at any depth of nesting (npm, yarn and the
//! pnpm store's `node_modules/.pnpm/<id>/node_modules/<name>` all fit). Other `package.json`
//! files (a project's own, or one inside a package's `lib/` that only sets `"type"`) are not
//! installed packages and are not read.
//!
//! A package needs a non-empty `name` and `version`; a file without them yields nothing. The
//! licence is `license` (a string, or the old `{"type": …}` object) or else the old `licenses`
//! array (of strings or `{"type": …}` objects).

use serde_json::Value;

use crate::{Ecosystem, Package, ParseError};

/// Whether `path` is the `package.json` of a package directory under `node_modules`.
pub fn wants(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    if parts.next() != Some("package.json") {
        return false;
    }
    let Some(package_dir) = parts.next() else {
        return false;
    };
    // `.bin`, `.pnpm`, `.cache` and the like are npm's own directories, not packages.
    if package_dir.is_empty() || package_dir.starts_with('.') || package_dir == "node_modules" {
        return false;
    }
    match parts.next() {
        Some("node_modules") => !package_dir.starts_with('@'),
        Some(scope) if scope.len() > 1 && scope.starts_with('@') => {
            parts.next() == Some("node_modules")
        }
        _ => false,
    }
}

/// The package a `package.json` describes, or nothing if it has no name or version.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    // Some editors on Windows save package.json with a byte order mark, which JSON forbids.
    let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let manifest: Value = serde_json::from_slice(data)
        .map_err(|e| ParseError::new(path, format!("package.json: {e}")))?;
    let Value::Object(manifest) = manifest else {
        return Err(ParseError::new(path, "package.json is not a JSON object"));
    };
    // Fields of the wrong type are treated as absent: `package.json` is hand-written, and one
    // odd file should not hide the others.
    let text = |key: &str| manifest.get(key).and_then(Value::as_str).map(str::trim);
    let (Some(name), Some(version)) = (text("name"), text("version")) else {
        return Ok(Vec::new());
    };
    if name.is_empty() || version.is_empty() {
        return Ok(Vec::new());
    }
    let mut package = Package::new(Ecosystem::Npm, name, version, path);
    package.licenses = licenses(manifest.get("license"), manifest.get("licenses"));
    Ok(vec![package])
}

fn licenses(license: Option<&Value>, licenses: Option<&Value>) -> Vec<String> {
    if let Some(name) = license.and_then(license_name) {
        return vec![name];
    }
    match licenses {
        Some(Value::Array(items)) => items.iter().filter_map(license_name).collect(),
        Some(single) => license_name(single).into_iter().collect(),
        None => Vec::new(),
    }
}

fn license_name(value: &Value) -> Option<String> {
    let name = match value {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("type")?.as_str()?,
        _ => return None,
    };
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wants_package_directories_under_node_modules() {
        for path in [
            "node_modules/accepts/package.json",
            "usr/lib/node_modules/npm/package.json",
            "app/node_modules/accepts/node_modules/acorn/package.json",
            "app/node_modules/@types/node/package.json",
            "app/node_modules/.pnpm/acorn@8.0.0/node_modules/acorn/package.json",
        ] {
            assert!(wants(path), "{path}");
        }
        for path in [
            "package.json",
            "app/package.json",
            "node_modules/package.json",
            "app/node_modules/accepts/lib/package.json",
            "app/node_modules/@types/package.json",
            "app/node_modules/@/x/package.json",
            "app/node_modules/.bin/package.json",
            "app/node_modules/accepts/package.json.bak",
            "invalid/empty-name/package.json",
            "app/node_modules/@types/node/x/package.json",
        ] {
            assert!(!wants(path), "{path}");
        }
    }

    #[test]
    fn reads_licence_forms() {
        let cases: [(&str, &[&str]); 6] = [
            (r#"{"name":"a","version":"1","license":"MIT"}"#, &["MIT"]),
            (
                r#"{"name":"a","version":"1","license":{"type":"ISC","url":"x"}}"#,
                &["ISC"],
            ),
            (
                r#"{"name":"a","version":"1","licenses":[{"type":"MIT"},"Apache-2.0",3]}"#,
                &["MIT", "Apache-2.0"],
            ),
            (
                r#"{"name":"a","version":"1","license":"","licenses":"BSD"}"#,
                &["BSD"],
            ),
            (r#"{"name":"a","version":"1","license":42}"#, &[]),
            (r#"{"name":"a","version":"1"}"#, &[]),
        ];
        for (json, expected) in cases {
            let packages = parse("node_modules/a/package.json", json.as_bytes()).unwrap();
            assert_eq!(packages.len(), 1, "{json}");
            assert_eq!(packages[0].licenses, expected, "{json}");
            assert_eq!(packages[0].ecosystem, Ecosystem::Npm);
        }
    }

    #[test]
    fn no_package_without_name_or_version() {
        for json in [
            r#"{"name":"","version":"1.0.0"}"#,
            r#"{"name":"a"}"#,
            r#"{"version":"1.0.0"}"#,
            r#"{"name":"a","version":""}"#,
            r#"{"name":1,"version":"1.0.0"}"#,
            r#"{}"#,
        ] {
            assert_eq!(parse("p", json.as_bytes()).unwrap(), Vec::new(), "{json}");
        }
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(parse("p", b"{").is_err());
        assert!(parse("p", b"[]").is_err());
        assert!(parse("p", b"").is_err());
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let packages = parse("p", b"\xef\xbb\xbf{\"name\":\"a\",\"version\":\"1\"}").unwrap();
        assert_eq!(packages.len(), 1);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse("node_modules/x/package.json", &data);
        }

        #[test]
        fn arbitrary_paths_never_panic(path in ".{0,80}") {
            let _ = wants(&path);
        }
    }
}
