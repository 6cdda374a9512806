//! Python distributions installed in an image, from their core metadata files: a wheel's
//! `*.dist-info/METADATA`, an egg's `*.egg-info/PKG-INFO` (or `*.egg/EGG-INFO/PKG-INFO`), and the
//! single-file `*.egg-info` that distutils and some distribution packages (Alpine's `py3-*`)
//! install. They are recognised wherever they are, not only under `site-packages` or
//! `dist-packages`, since virtual environments and `pip install --target` put them elsewhere.
//!
//! The file is an RFC 822 header block (the core metadata specification); what follows the first
//! empty line is the description and is not read. `Name` and `Version` are required.
//!
//! The licence is `License-Expression` (metadata 2.4), else the last part of each `License :: …`
//! classifier that says more than the bare `License :: OSI Approved`, else `License` when it is
//! a one-line name. Classifiers come before `License` because the core metadata specification
//! says so (`License` is then for exceptions and details; distlib 0.3.1's wheel says `Python
//! license` there and `Python Software Foundation License` in its classifier). `License-File`
//! only names a file, which is not read, so it is not a licence here.

use crate::{Ecosystem, Package, ParseError};

/// Whether `path` is a metadata file this module reads.
pub fn wants(path: &str) -> bool {
    let (dir, file) = match path.rsplit_once('/') {
        Some((dir, file)) => (dir, file),
        None => ("", path),
    };
    let parent = dir.rsplit('/').next().unwrap_or("");
    (file == "METADATA" && is_named_dir(parent, ".dist-info"))
        || (file == "PKG-INFO" && is_named_dir(parent, ".egg-info"))
        || (file == "PKG-INFO" && parent == "EGG-INFO" && is_named_dir(grandparent(dir), ".egg"))
        || is_named_dir(file, ".egg-info")
}

/// `name` ends with `suffix` and has something before it.
fn is_named_dir(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() && name.ends_with(suffix)
}

fn grandparent(dir: &str) -> &str {
    dir.rsplit_once('/')
        .map(|(up, _)| up.rsplit('/').next().unwrap_or(""))
        .unwrap_or("")
}

/// The PEP 503 normalised form of a project name: lowercase, with every run of `-`, `_` and `.`
/// made one `-`. Two names are the same project if their normalised forms are equal.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator_run {
                out.push('-');
            }
            in_separator_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_separator_run = false;
        }
    }
    out
}

/// The one distribution a metadata file describes.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    // Old PKG-INFO files are not always UTF-8 (the description in particular); the headers we
    // read are ASCII in practice, so a lossy decoding loses nothing that matters.
    let text = String::from_utf8_lossy(data);
    let headers = read_headers(&text);

    let field = |key: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let name = field("Name").ok_or_else(|| ParseError::new(path, "no Name header"))?;
    let version = field("Version").ok_or_else(|| ParseError::new(path, "no Version header"))?;

    let mut package = Package::new(Ecosystem::Pypi, name, version, path);
    package.licenses = licenses(&headers, field("License-Expression"), field("License"));
    Ok(vec![package])
}

fn licenses(
    headers: &[(&str, String)],
    expression: Option<&str>,
    license: Option<&str>,
) -> Vec<String> {
    if let Some(expression) = expression {
        return vec![expression.to_owned()];
    }
    let classified: Vec<String> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Classifier"))
        .filter_map(|(_, v)| {
            let parts: Vec<&str> = v.split("::").map(str::trim).collect();
            match parts.as_slice() {
                ["License", "OSI Approved"] | ["License"] => None,
                ["License", .., last] if !last.is_empty() => Some((*last).to_owned()),
                _ => None,
            }
        })
        .collect();
    if !classified.is_empty() {
        return classified;
    }
    // Some projects paste their whole licence text into `License`; that is not a name.
    license
        .filter(|l| !l.contains('\n'))
        .map(|l| vec![l.to_owned()])
        .unwrap_or_default()
}

/// The header block as (key, value) pairs in order, continuation lines joined with `\n`.
fn read_headers(text: &str) -> Vec<(&str, String)> {
    let mut headers: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            headers.push((key.trim(), value.trim().to_owned()));
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wants_metadata_files_only() {
        for path in [
            "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
            "usr/local/lib/python3.11/site-packages/foo-1.0-py3.11.egg-info/PKG-INFO",
            "usr/lib/python3.9/site-packages/distlib-0.3.1-py3.9.egg-info",
            "opt/venv/lib/python3.12/site-packages/bar-2.0-py3.12.egg/EGG-INFO/PKG-INFO",
            "app/x.dist-info/METADATA",
        ] {
            assert!(wants(path), "{path}");
        }
        for path in [
            "usr/lib/python3/dist-packages/six-1.16.0.dist-info/RECORD",
            "usr/lib/python3/dist-packages/.dist-info/METADATA",
            "usr/lib/python3/dist-packages/foo/METADATA",
            "usr/lib/python3/dist-packages/foo/PKG-INFO",
            "EGG-INFO/PKG-INFO",
            "METADATA",
            ".egg-info",
        ] {
            assert!(!wants(path), "{path}");
        }
    }

    #[test]
    fn normalize_follows_pep_503() {
        assert_eq!(normalize("Unidecode"), "unidecode");
        assert_eq!(normalize("zope.interface"), "zope-interface");
        assert_eq!(normalize("Foo__Bar-.-baz"), "foo-bar-baz");
        assert_eq!(normalize("ruamel.yaml.clib"), "ruamel-yaml-clib");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn reads_name_version_and_licence_precedence() {
        let data = b"Metadata-Version: 2.4\nName: Foo_Bar\nVersion: 1.0\nLicense: BSD\n\
License-Expression: MIT OR Apache-2.0\nClassifier: License :: OSI Approved :: MIT License\n\n\
Name: not-a-header\n";
        let packages = parse("a/Foo_Bar-1.0.dist-info/METADATA", data).unwrap();
        assert_eq!(packages.len(), 1);
        let p = &packages[0];
        assert_eq!((p.name.as_str(), p.version.as_str()), ("Foo_Bar", "1.0"));
        assert_eq!(p.ecosystem, Ecosystem::Pypi);
        assert_eq!(p.path, "a/Foo_Bar-1.0.dist-info/METADATA");
        assert_eq!(p.licenses, ["MIT OR Apache-2.0"]);
    }

    #[test]
    fn classifiers_come_before_license() {
        let data = b"Name: x\nVersion: 1\nLicense: Python license\nClassifier: License :: OSI Approved :: Python Software Foundation License\n";
        let p = &parse("x.dist-info/METADATA", data).unwrap()[0];
        assert_eq!(p.licenses, ["Python Software Foundation License"]);
        let data = b"Name: x\nVersion: 1\nLicense: EPL-2.0\nClassifier: License :: OSI Approved\n";
        let p = &parse("x.dist-info/METADATA", data).unwrap()[0];
        assert_eq!(p.licenses, ["EPL-2.0"]);
    }

    #[test]
    fn licence_text_in_license_is_not_a_name() {
        let data = b"Name: x\nVersion: 1\nLicense: Copyright (c) 2020 Someone\n        Permission is hereby granted\n";
        let p = &parse("x.dist-info/METADATA", data).unwrap()[0];
        assert_eq!(p.licenses, Vec::<String>::new());
    }

    #[test]
    fn licence_text_in_license_falls_back_to_classifiers() {
        let data = b"Name: x\nVersion: 1\nLicense: Copyright (c) 2020 Someone\n        Permission is hereby granted\nClassifier: License :: OSI Approved\nClassifier: License :: OSI Approved :: MIT License\nClassifier: Programming Language :: Python\n";
        let p = &parse("x.dist-info/METADATA", data).unwrap()[0];
        assert_eq!(p.licenses, ["MIT License"]);
    }

    #[test]
    fn missing_name_or_version_is_an_error() {
        assert!(parse("p", b"Name: x\n").is_err());
        assert!(parse("p", b"Version: 1\n").is_err());
        assert!(parse("p", b"Name: \nVersion: 1\n").is_err());
        assert!(parse("p", b"").is_err());
        // Headers after the blank line are the description, not metadata.
        assert!(parse("p", b"Name: x\n\nVersion: 1\n").is_err());
    }

    #[test]
    fn crlf_and_non_utf8_are_read() {
        let data = b"Name: x\r\nVersion: 2.0\r\nSummary: caf\xe9\r\n\r\n\xff\xfe";
        let p = &parse("p", data).unwrap()[0];
        assert_eq!((p.name.as_str(), p.version.as_str()), ("x", "2.0"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse("x.dist-info/METADATA", &data);
        }

        #[test]
        fn arbitrary_paths_never_panic(path in ".{0,80}") {
            let _ = wants(&path);
            let _ = normalize(&path);
        }
    }
}
