//! RPM package databases, read without librpm, from `var/lib/rpm/`, `usr/lib/sysimage/rpm/`
//! (`Packages`, `Packages.db`, `rpmdb.sqlite`) and `usr/share/rpm/rpmdb.sqlite`.
//!
//! The format is told by the file's magic, not its name, as distributions moved and linked
//! these files around:
//! - SQLite (`rpmdb.sqlite`; rpm 4.16+: RHEL/UBI 9, Fedora 33+, CBL-Mariner 2), see `sqlite.rs`;
//! - Berkeley DB hash (`Packages`; RHEL/CentOS 7 and 8, Amazon Linux 2), see `bdb.rs`;
//! - rpm's ndb (`Packages.db`; SUSE), see `ndb.rs`.
//!
//! Each database record is an RPM header blob (see `header.rs`); every header in the database is
//! an installed package, except the `gpg-pubkey` pseudo-packages rpm uses to store imported
//! signing keys, which are left out. A record that is not a readable header, or lacks a name,
//! version or release, is left out; a file none of whose records can be read is an error.

mod bdb;
mod header;
mod ndb;
mod sqlite;

pub use header::RpmHeader;

use crate::{Ecosystem, Package, ParseError, RpmVersion, SourcePackage};
use std::borrow::Cow;

/// The image paths rpm keeps its package database at, across distributions and rpm versions.
const DATABASE_PATHS: &[&str] = &[
    "var/lib/rpm/Packages",
    "var/lib/rpm/Packages.db",
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/Packages",
    "usr/lib/sysimage/rpm/Packages.db",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "usr/share/rpm/rpmdb.sqlite",
];

/// The name rpm gives the pseudo-packages that hold imported signing keys.
const GPG_PUBKEY: &str = "gpg-pubkey";

/// Whether `path` (relative to the image root) is an rpm package database.
pub fn wants(path: &str) -> bool {
    DATABASE_PATHS.contains(&path)
}

/// The packages an rpm database records, in the order they were installed: by header instance
/// number (Berkeley DB, SQLite) or package index (ndb). For SQLite and ndb that is also the
/// order `rpm -qa` lists them in; for Berkeley DB `rpm -qa` follows the hash order.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    Ok(read_headers(path, data)?
        .iter()
        .filter_map(|header| package(path, header))
        .collect())
}

/// Every header in an rpm database, `gpg-pubkey` ones included, with the tags the inventory
/// uses and a few more (vendor, summary, size, digest) that [`Package`] has no field for.
pub fn read_headers(path: &str, data: &[u8]) -> Result<Vec<RpmHeader>, ParseError> {
    let error = |reason: String| ParseError::new(path, reason);
    let blobs: Vec<Cow<[u8]>> = if sqlite::is_sqlite(data) {
        // rpm's schema: Packages(hnum INTEGER PRIMARY KEY, blob BLOB); hnum is the rowid.
        sqlite::table_blobs(data, "Packages", 1)
            .map_err(error)?
            .into_iter()
            .map(|(_, blob)| Cow::Owned(blob))
            .collect()
    } else if ndb::is_ndb(data) {
        ndb::blobs(data)
            .map_err(error)?
            .into_iter()
            .map(|(_, blob)| Cow::Borrowed(blob))
            .collect()
    } else if bdb::is_bdb(data) {
        let mut records = bdb::records(data).map_err(error)?;
        // Key 0 holds rpm's next instance number, not a header.
        records.retain(|record| record.key_number != Some(0));
        records.sort_by_key(|record| record.key_number);
        records
            .into_iter()
            .map(|record| Cow::Owned(record.value))
            .collect()
    } else {
        return Err(error(
            "not an rpm database (neither SQLite, ndb nor Berkeley DB)".into(),
        ));
    };

    let mut headers = Vec::with_capacity(blobs.len());
    let mut first_error = None;
    for blob in &blobs {
        match header::parse_header(blob) {
            Ok(header) => headers.push(header),
            Err(reason) => {
                first_error.get_or_insert(reason);
            }
        }
    }
    match first_error {
        Some(reason) if headers.is_empty() => Err(error(format!("no readable header: {reason}"))),
        _ => Ok(headers),
    }
}

/// The package a header describes, or `None` for a key or a header missing its name/EVR.
fn package(path: &str, header: &RpmHeader) -> Option<Package> {
    let name = header.name.as_deref()?;
    if name == GPG_PUBKEY {
        return None;
    }
    let version = header.version.as_deref()?;
    let release = header.release.as_deref()?;
    let epoch_prefix = header.epoch.map(|e| format!("{e}:")).unwrap_or_default();
    let evr = format!("{epoch_prefix}{version}-{release}");
    let source = match header.source_rpm.as_deref().and_then(split_source_rpm) {
        // A source RPM carries no epoch of its own; its binaries share theirs with it.
        Some((name, version, release)) => SourcePackage {
            name: name.to_owned(),
            version: format!("{epoch_prefix}{version}-{release}"),
        },
        None => SourcePackage {
            name: name.to_owned(),
            version: evr.clone(),
        },
    };
    let mut package = Package::new(Ecosystem::Rpm, name, &evr, path);
    package.source = Some(source);
    package.arch = header.arch.clone();
    package.licenses = header
        .license
        .iter()
        .filter(|l| !l.is_empty())
        .cloned()
        .collect();
    package.rpm = Some(RpmVersion {
        epoch: header.epoch,
        version: version.to_owned(),
        release: release.to_owned(),
        source_rpm: header.source_rpm.clone(),
    });
    Some(package)
}

/// Name, version and release of a source RPM file name, `name-version-release.src.rpm` (or
/// `.nosrc.rpm`). Names may hold `-`; version and release may not, so they are the last two.
fn split_source_rpm(file: &str) -> Option<(&str, &str, &str)> {
    let stem = file
        .strip_suffix(".src.rpm")
        .or_else(|| file.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = stem.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    [name, version, release]
        .iter()
        .all(|part| !part.is_empty())
        .then_some((name, version, release))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(name: &str, epoch: Option<u32>, source_rpm: Option<&str>) -> RpmHeader {
        RpmHeader {
            name: Some(name.into()),
            epoch,
            version: Some("2.32.1".into()),
            release: Some("42.el8_8".into()),
            arch: Some("x86_64".into()),
            source_rpm: source_rpm.map(Into::into),
            license: Some("BSD".into()),
            ..RpmHeader::default()
        }
    }

    #[test]
    fn wants_the_database_paths_only() {
        for path in DATABASE_PATHS {
            assert!(wants(path), "{path}");
        }
        for path in [
            "var/lib/rpm/Name",
            "var/lib/rpm/Packages.bak",
            "/var/lib/rpm/Packages",
            "var/lib/rpm/rpmdb.sqlite-wal",
            "usr/share/rpm/Packages.db",
        ] {
            assert!(!wants(path), "{path}");
        }
    }

    #[test]
    fn source_rpm_names_split_on_the_last_two_dashes() {
        let cases = [
            (
                "util-linux-2.32.1-42.el8_8.src.rpm",
                Some(("util-linux", "2.32.1", "42.el8_8")),
            ),
            (
                "gcc11-11.2.1+git610-1.3.9.src.rpm",
                Some(("gcc11", "11.2.1+git610", "1.3.9")),
            ),
            ("hello-0.0.1-rls.nosrc.rpm", Some(("hello", "0.0.1", "rls"))),
            ("hello-0.0.1.src.rpm", None),
            ("hello-0.0.1-rls.rpm", None),
            ("-1-2.src.rpm", None),
        ];
        for (file, expected) in cases {
            assert_eq!(split_source_rpm(file), expected, "{file}");
        }
    }

    #[test]
    fn package_fields_come_from_the_header() {
        let path = "var/lib/rpm/Packages";
        let pkg = package(
            path,
            &header("libuuid", None, Some("util-linux-2.32.1-42.el8_8.src.rpm")),
        )
        .unwrap();
        assert_eq!(pkg.name, "libuuid");
        assert_eq!(pkg.version, "2.32.1-42.el8_8");
        assert_eq!(
            pkg.source,
            Some(SourcePackage {
                name: "util-linux".into(),
                version: "2.32.1-42.el8_8".into()
            })
        );
        assert_eq!(pkg.arch.as_deref(), Some("x86_64"));
        assert_eq!(pkg.licenses, ["BSD"]);
        assert_eq!(pkg.path, path);
        assert_eq!(pkg.layer, None);
        let rpm = pkg.rpm.unwrap();
        assert_eq!((rpm.epoch, rpm.version.as_str()), (None, "2.32.1"));
    }

    #[test]
    fn the_epoch_goes_into_both_versions() {
        let pkg = package("p", &header("x", Some(2), Some("y-1.0-1.src.rpm"))).unwrap();
        assert_eq!(pkg.version, "2:2.32.1-42.el8_8");
        assert_eq!(pkg.source.unwrap().version, "2:1.0-1");
    }

    #[test]
    fn without_a_source_rpm_the_package_is_its_own_source() {
        let pkg = package("p", &header("x", Some(2), None)).unwrap();
        let source = pkg.source.unwrap();
        assert_eq!(
            (source.name.as_str(), source.version.as_str()),
            ("x", "2:2.32.1-42.el8_8")
        );
    }

    #[test]
    fn keys_and_incomplete_headers_are_not_packages() {
        assert_eq!(package("p", &header(GPG_PUBKEY, None, None)), None);
        let mut incomplete = header("x", None, None);
        incomplete.release = None;
        assert_eq!(package("p", &incomplete), None);
    }

    #[test]
    fn other_files_are_errors() {
        let err = parse("var/lib/rpm/Packages", b"hello").unwrap_err();
        assert_eq!(err.path, "var/lib/rpm/Packages");
        assert!(parse("var/lib/rpm/Packages", b"").is_err());
    }

    #[test]
    fn headers_from_an_ndb_file_become_packages() {
        let blob = header::tests::build(&[
            (1000, 6, 1, b"gpg-pubkey\0"),
            (1001, 6, 1, b"1\0"),
            (1002, 6, 1, b"2\0"),
        ]);
        let mut data = vec![0u8; 4096];
        data[..4].copy_from_slice(b"RpmP");
        data[12..16].copy_from_slice(&1u32.to_le_bytes());
        data[32..36].copy_from_slice(b"Slot");
        data[36..40].copy_from_slice(&1u32.to_le_bytes());
        data[40..44].copy_from_slice(&256u32.to_le_bytes());
        data.extend_from_slice(b"BlbS");
        data.extend_from_slice(&1u32.to_le_bytes());
        data.extend_from_slice(&1u32.to_le_bytes());
        data.extend_from_slice(&(blob.len() as u32).to_le_bytes());
        data.extend_from_slice(&blob);
        data.extend_from_slice(&[0; 12]);
        let blocks = (data.len() - 4096).div_ceil(16);
        data.resize(4096 + blocks * 16, 0);
        data[44..48].copy_from_slice(&(blocks as u32).to_le_bytes());

        let headers = read_headers("p", &data).unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].name.as_deref(), Some(GPG_PUBKEY));
        assert_eq!(parse("p", &data).unwrap(), []);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..4096),
            magic in 0usize..4,
        ) {
            let prefix: &[u8] = match magic {
                0 => b"SQLite format 3\0",
                1 => b"RpmP",
                2 => &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x61, 0x15, 0x06, 0],
                _ => b"",
            };
            if data.len() >= prefix.len() {
                data[..prefix.len()].copy_from_slice(prefix);
            }
            let _ = parse("var/lib/rpm/Packages", &data);
        }
    }
}
