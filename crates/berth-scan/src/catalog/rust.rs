//! Rust crates, from two places:
//!
//! - `Cargo.lock` files anywhere in the image ([`parse`]), in every lock file version (1 to 4:
//!   they differ in how dependencies are spelled and where checksums sit, not in the
//!   `[[package]]` tables' `name` and `version`, which are all that is read). Every package is
//!   reported, the workspace's own (path) packages too: that is what the lock file lists, and
//!   what Trivy reports.
//! - Executables built with `cargo auditable` ([`from_binary`], called by
//!   [`super::binary::parse_binary`]): a section `.dep-v0` (in ELF, PE and Mach-O alike) holding
//!   the zlib-compressed JSON `{"packages": [{"name", "version", "source", "kind",
//!   "dependencies", "root"}]}`. Every package is reported: the root package (the binary's own
//!   crate, which may be a published one such as `ripgrep`) and `"kind": "build"` packages too,
//!   since build scripts and procedural macros generate code that is compiled into the binary.
//!
//! Crates without a name or version are skipped.

use std::io::Read;

use flate2::read::ZlibDecoder;
use object::read::{File, Object, ObjectSection};
use serde::Deserialize;

use crate::{Ecosystem, Package, ParseError};

/// The most a `.dep-v0` section may inflate to. The JSON takes about 50 bytes per crate, so this
/// leaves room for far more crates than any binary has, and stops a zlib bomb.
const MAX_AUDIT_DATA: u64 = 8 << 20;

/// Whether `path` is a `Cargo.lock`.
pub fn wants(path: &str) -> bool {
    path.rsplit('/').next() == Some("Cargo.lock")
}

/// The packages a `Cargo.lock` lists.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    let text = std::str::from_utf8(data)
        .map_err(|e| ParseError::new(path, format!("Cargo.lock is not UTF-8: {e}")))?;
    let lock: toml::Table =
        toml::from_str(text).map_err(|e| ParseError::new(path, format!("Cargo.lock: {e}")))?;
    let Some(entries) = lock.get("package") else {
        // A lock file of a workspace without packages is possible, if useless.
        return Ok(Vec::new());
    };
    let entries = entries
        .as_array()
        .ok_or_else(|| ParseError::new(path, "`package` is not an array of tables"))?;
    Ok(entries
        .iter()
        .filter_map(|entry| {
            let name = entry.get("name")?.as_str()?;
            let version = entry.get("version")?.as_str()?;
            (!name.is_empty() && !version.is_empty())
                .then(|| Package::new(Ecosystem::Cargo, name, version, path))
        })
        .collect())
}

#[derive(Deserialize)]
struct AuditData {
    packages: Vec<AuditPackage>,
}

/// One crate; the other fields (`source`, `kind`, `dependencies`, `root`) are not needed.
#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
}

/// The crates recorded in an executable's `.dep-v0` section; nothing if it has none.
pub fn from_binary(path: &str, file: &File) -> Result<Vec<Package>, ParseError> {
    let Some(section) = file.section_by_name(".dep-v0") else {
        return Ok(Vec::new());
    };
    let compressed = section
        .data()
        .map_err(|e| ParseError::new(path, format!(".dep-v0 section: {e}")))?;
    parse_audit_data(path, compressed)
}

/// The crates in the compressed contents of a `.dep-v0` section.
pub fn parse_audit_data(path: &str, compressed: &[u8]) -> Result<Vec<Package>, ParseError> {
    let mut json = Vec::new();
    ZlibDecoder::new(compressed)
        .take(MAX_AUDIT_DATA + 1)
        .read_to_end(&mut json)
        .map_err(|e| ParseError::new(path, format!(".dep-v0 section: zlib: {e}")))?;
    if json.len() as u64 > MAX_AUDIT_DATA {
        return Err(ParseError::new(
            path,
            format!(".dep-v0 section inflates to more than {MAX_AUDIT_DATA} bytes"),
        ));
    }
    let data: AuditData = serde_json::from_slice(&json)
        .map_err(|e| ParseError::new(path, format!(".dep-v0 section: {e}")))?;
    Ok(data
        .packages
        .iter()
        .filter(|p| !p.name.is_empty() && !p.version.is_empty())
        .map(|p| Package::new(Ecosystem::Cargo, &p.name, &p.version, path))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::binary::{
        parse_binary,
        test_elf::{self, Section},
    };
    use flate2::{Compression, write::ZlibEncoder};
    use proptest::prelude::*;
    use std::io::Write;

    fn names(packages: &[Package]) -> Vec<(&str, &str)> {
        packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const AUDIT_JSON: &str = r#"{"packages":[
        {"name":"app","version":"0.1.0","source":"local","dependencies":[1,2],"root":true},
        {"name":"serde","version":"1.0.200","source":"crates.io"},
        {"name":"cc","version":"1.0.90","source":"crates.io","kind":"build"},
        {"name":"","version":"1.0.0","source":"crates.io"}
    ],"format":1}"#;

    #[test]
    fn wants_cargo_lock_only() {
        assert!(wants("Cargo.lock"));
        assert!(wants("src/app/Cargo.lock"));
        assert!(!wants("src/app/Cargo.toml"));
        assert!(!wants("src/app/Cargo.lock.orig"));
        assert!(!wants("src/app/xCargo.lock"));
    }

    #[test]
    fn lock_v4_with_git_and_path_packages() {
        let lock = br#"version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["serde", "tokio"]

[[package]]
name = "serde"
version = "1.0.200"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "ddc6f9cc94d67c0e21aaf7eda3a010fd3af78ebf6e096aa6e2e13c79749cce4f"

[[package]]
name = "tokio"
version = "1.37.0"
source = "git+https://github.com/tokio-rs/tokio?branch=master#abcdef"

[[package]]
name = "no-version"
"#;
        let packages = parse("app/Cargo.lock", lock).unwrap();
        assert_eq!(
            names(&packages),
            [("app", "0.1.0"), ("serde", "1.0.200"), ("tokio", "1.37.0")]
        );
        assert!(packages.iter().all(|p| p.ecosystem == Ecosystem::Cargo));
        assert!(packages.iter().all(|p| p.path == "app/Cargo.lock"));
    }

    #[test]
    fn malformed_lock_files() {
        assert!(parse("Cargo.lock", b"[[package]\nname=").is_err());
        assert!(parse("Cargo.lock", b"package = 3").is_err());
        assert!(parse("Cargo.lock", b"\xff\xfe").is_err());
        assert_eq!(parse("Cargo.lock", b"version = 3\n").unwrap(), Vec::new());
        assert_eq!(parse("Cargo.lock", b"").unwrap(), Vec::new());
    }

    #[test]
    fn deeply_nested_toml_does_not_overflow_the_stack() {
        let mut lock = b"a = ".to_vec();
        lock.extend(std::iter::repeat_n(b'[', 100_000));
        let _ = parse("Cargo.lock", &lock);
        let mut lock = b"a = ".to_vec();
        lock.extend(std::iter::repeat_n(b"{b=".as_slice(), 50_000).flatten());
        let _ = parse("Cargo.lock", &lock);
    }

    #[test]
    fn auditable_section_in_an_elf() {
        let section = zlib(AUDIT_JSON.as_bytes());
        let elf = test_elf::build(&[Section {
            name: ".dep-v0",
            address: 0x2000,
            data: &section,
        }]);
        let packages = parse_binary("usr/bin/app", &elf).unwrap();
        assert_eq!(
            names(&packages),
            [("app", "0.1.0"), ("serde", "1.0.200"), ("cc", "1.0.90")]
        );
        assert!(packages.iter().all(|p| p.ecosystem == Ecosystem::Cargo));
        assert!(packages.iter().all(|p| p.path == "usr/bin/app"));
    }

    #[test]
    fn bad_audit_data_is_an_error() {
        let elf = |data: &[u8]| {
            test_elf::build(&[Section {
                name: ".dep-v0",
                address: 0x2000,
                data,
            }])
        };
        assert!(parse_binary("x", &elf(b"not zlib")).is_err());
        assert!(parse_binary("x", &elf(&zlib(b"{\"packages\": 1}"))).is_err());
        let bomb = zlib(&vec![b' '; MAX_AUDIT_DATA as usize + 10]);
        let err = parse_audit_data("x", &bomb).unwrap_err();
        assert!(err.reason.contains("more than"), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_lock_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse("Cargo.lock", &data);
        }

        #[test]
        fn arbitrary_lock_text_never_panics(text in "[\\[\\]{}=\"a-z0-9 .,\n]{0,300}") {
            let _ = parse("Cargo.lock", text.as_bytes());
        }

        #[test]
        fn arbitrary_audit_data_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse_audit_data("x", &data);
            let _ = parse_audit_data("x", &zlib(&data));
        }
    }
}
