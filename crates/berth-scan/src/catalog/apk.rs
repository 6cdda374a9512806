//! Alpine (and Wolfi, Chainguard) packages from apk's database `lib/apk/db/installed` (or
//! `usr/lib/apk/db/installed`): records split by blank lines, one letter per field: `P:` name,
//! `V:` version, `A:` arch, `L:` licence, `o:` origin (the source package, which advisories
//! are keyed by; the source version is the package's own).

use crate::{Ecosystem, Package, ParseError, SourcePackage};

/// Whether apk's database lives at `path`.
pub fn wants(path: &str) -> bool {
    path == "lib/apk/db/installed" || path == "usr/lib/apk/db/installed"
}

/// The packages the database `data` records.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    let mut record: Vec<(&str, &str)> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some(p) = package(path, &record) {
                out.push(p);
            }
            record.clear();
        } else if let Some((key, value)) = line.split_once(':') {
            record.push((key, value.trim()));
        }
    }
    Ok(out)
}

fn package(path: &str, record: &[(&str, &str)]) -> Option<Package> {
    let get = |key: &str| {
        record
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_empty())
    };
    let (name, version) = (get("P")?, get("V")?);
    let mut p = Package::new(Ecosystem::Apk, name, version, path);
    p.source = Some(SourcePackage {
        name: get("o").unwrap_or(name).to_owned(),
        version: version.to_owned(),
    });
    p.arch = get("A").map(str::to_owned);
    p.licenses = get("L").map(|l| vec![l.to_owned()]).unwrap_or_default();
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_records_with_their_origin() {
        let db = "C:Q1x=\nP:libcrypto3\nV:3.1.1-r1\nA:x86_64\nL:Apache-2.0\no:openssl\n\
            F:lib\nR:libcrypto.so.3\n\nP:musl\nV:1.2.4-r0\nA:x86_64\n\nP:no-version\n";
        let got = parse("lib/apk/db/installed", db.as_bytes()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "libcrypto3");
        assert_eq!(got[0].source.as_ref().unwrap().name, "openssl");
        assert_eq!(got[0].licenses, ["Apache-2.0"]);
        assert_eq!(got[1].source.as_ref().unwrap().name, "musl");
        assert_eq!(got[1].source.as_ref().unwrap().version, "1.2.4-r0");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse("lib/apk/db/installed", &data);
        }
    }
}
