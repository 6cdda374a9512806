//! PHP packages installed by Composer, from `<vendor dir>/composer/installed.json`, the record
//! Composer keeps of what it put in the vendor directory (`composer.lock` says what a project
//! asks for, not what an image holds, and is not read).
//!
//! Composer 1 writes the packages as a top-level array, Composer 2 as `{"packages": [...]}`.
//! Every entry with a non-empty `name` and `version` is a package, development ones too (if
//! they are in the image, they are installed); entries of another shape are passed over.
//! The version is kept as written, `v5.4.0` included, as syft and trivy do (and as purls and
//! SBOMs name it): Composer itself ignores a leading `v` when it compares versions, so
//! matching against advisories must do the same. `license` is an array of SPDX identifiers,
//! or a single string in old files.

use serde_json::Value;

use crate::{Ecosystem, Package, ParseError};

/// Whether `path` is Composer's `composer/installed.json` (in `vendor/` or another vendor
/// directory).
pub fn wants(path: &str) -> bool {
    path == "composer/installed.json" || path.ends_with("/composer/installed.json")
}

/// The packages recorded in an `installed.json`.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    let document: Value = serde_json::from_slice(data)
        .map_err(|e| ParseError::new(path, format!("not JSON: {e}")))?;
    let entries = match &document {
        Value::Array(entries) => entries,
        Value::Object(object) => match object.get("packages") {
            Some(Value::Array(entries)) => entries,
            _ => return Err(ParseError::new(path, "no \"packages\" array")),
        },
        _ => return Err(ParseError::new(path, "neither an array nor an object")),
    };
    Ok(entries
        .iter()
        .filter_map(|entry| package(entry, path))
        .collect())
}

fn package(entry: &Value, path: &str) -> Option<Package> {
    let name = entry.get("name")?.as_str()?.trim();
    let version = entry.get("version")?.as_str()?.trim();
    if name.is_empty() || version.is_empty() {
        return None;
    }
    let mut package = Package::new(Ecosystem::Composer, name, version, path);
    package.licenses = match entry.get("license") {
        Some(Value::String(license)) if !license.trim().is_empty() => {
            vec![license.trim().to_owned()]
        }
        Some(Value::Array(licenses)) => licenses
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|license| !license.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Some(package)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PATH: &str = "var/www/html/vendor/composer/installed.json";

    /// As Composer 2.6 writes it (two entries, shortened).
    const COMPOSER_2: &str = r#"{
    "packages": [
        {
            "name": "monolog/monolog",
            "version": "3.5.0",
            "version_normalized": "3.5.0.0",
            "source": {
                "type": "git",
                "url": "https://github.com/Seldaek/monolog.git",
                "reference": "c915e2634718dbc8a4a15c61b0e62e7a44e14448"
            },
            "require": {
                "php": ">=8.1",
                "psr/log": "^2.0 || ^3.0"
            },
            "time": "2023-10-27T15:32:31+00:00",
            "type": "library",
            "installation-source": "dist",
            "autoload": {
                "psr-4": {
                    "Monolog\\": "src/Monolog"
                }
            },
            "license": [
                "MIT"
            ],
            "description": "Sends your logs to files, sockets, inboxes, databases and various web services",
            "install-path": "../monolog/monolog"
        },
        {
            "name": "symfony/console",
            "version": "v6.4.1",
            "version_normalized": "6.4.1.0",
            "type": "library",
            "license": [
                "MIT"
            ],
            "install-path": "../symfony/console"
        },
        {
            "name": "phpunit/phpunit",
            "version": "10.5.3",
            "version_normalized": "10.5.3.0",
            "type": "library",
            "license": [
                "BSD-3-Clause"
            ],
            "install-path": "../phpunit/phpunit"
        }
    ],
    "dev": true,
    "dev-package-names": [
        "phpunit/phpunit"
    ]
}
"#;

    /// As Composer 1.10 wrote it.
    const COMPOSER_1: &str = r#"[
    {
        "name": "guzzlehttp/guzzle",
        "version": "6.5.5",
        "version_normalized": "6.5.5.0",
        "type": "library",
        "installation-source": "dist",
        "license": [
            "MIT"
        ]
    },
    {
        "name": "old/package",
        "version": "dev-master",
        "version_normalized": "9999999-dev",
        "license": "GPL-2.0-or-later"
    },
    {
        "name": "broken/no-version"
    },
    "not an object"
]
"#;

    fn summary(packages: &[Package]) -> Vec<(&str, &str, Vec<String>)> {
        packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.licenses.clone()))
            .collect()
    }

    #[test]
    fn composer_2() {
        let packages = parse(PATH, COMPOSER_2.as_bytes()).expect("valid installed.json");
        assert_eq!(
            summary(&packages),
            vec![
                ("monolog/monolog", "3.5.0", vec!["MIT".to_owned()]),
                ("symfony/console", "v6.4.1", vec!["MIT".to_owned()]),
                ("phpunit/phpunit", "10.5.3", vec!["BSD-3-Clause".to_owned()]),
            ]
        );
        assert!(
            packages
                .iter()
                .all(|p| p.path == PATH && p.ecosystem == Ecosystem::Composer && p.layer.is_none())
        );
    }

    #[test]
    fn composer_1() {
        let packages = parse(PATH, COMPOSER_1.as_bytes()).expect("valid installed.json");
        assert_eq!(
            summary(&packages),
            vec![
                ("guzzlehttp/guzzle", "6.5.5", vec!["MIT".to_owned()]),
                (
                    "old/package",
                    "dev-master",
                    vec!["GPL-2.0-or-later".to_owned()]
                ),
            ]
        );
    }

    #[test]
    fn not_installed_json() {
        assert!(parse(PATH, b"{\"packages\": {}}").is_err());
        assert!(parse(PATH, b"42").is_err());
        assert!(parse(PATH, b"[").is_err());
        assert_eq!(parse(PATH, b"[]").expect("empty"), Vec::new());
    }

    #[test]
    fn wanted_paths() {
        assert!(wants(PATH));
        assert!(wants("app/lib/composer/installed.json"));
        assert!(!wants("var/www/html/composer.lock"));
        assert!(!wants("var/www/html/vendor/composer/installed.php"));
        assert!(!wants("x/mycomposer/installed.json"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse(PATH, &data);
        }
    }
}
