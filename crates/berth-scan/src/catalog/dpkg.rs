//! Debian and Ubuntu packages from dpkg's database: `var/lib/dpkg/status` (one stanza per
//! package) and the distroless layout `var/lib/dpkg/status.d/<package>` (one file per package,
//! usually without a `Status:` field; the `*.md5sums` files beside them are file lists, not
//! packages).
//!
//! A stanza is a package when it has `Package:` and `Version:` and, if it has `Status:`, its
//! state (the third word) means the package's files are on disk: `installed`, `unpacked`,
//! `half-configured`, `triggers-awaited`, `triggers-pending`. `deinstall ok config-files` (only
//! the configuration files are left) and `not-installed` are not packages.
//!
//! Advisories are keyed by source package, so `Source:` is kept: `Source: name` (same version
//! as the binary) or `Source: name (version)` (a binNMU or a renamed binary); without it the
//! source is the binary package itself.

use crate::{Ecosystem, Package, ParseError, SourcePackage};

const STATUS: &str = "var/lib/dpkg/status";
const STATUS_D: &str = "var/lib/dpkg/status.d/";

/// Whether dpkg's database lives at `path`.
pub fn wants(path: &str) -> bool {
    path == STATUS
        || path
            .strip_prefix(STATUS_D)
            .is_some_and(|f| !f.is_empty() && !f.contains('/') && !f.contains('.'))
}

/// The packages `data` (a status file or one `status.d` file) records.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    for stanza in stanzas(&text) {
        if let Some(p) = package(path, &stanza) {
            out.push(p);
        }
    }
    Ok(out)
}

/// RFC 822 style stanzas split by blank lines: (field, value) pairs, continuation lines (which
/// start with a space or tab) joined to the field before them.
pub(crate) fn stanzas(text: &str) -> Vec<Vec<(&str, String)>> {
    let mut all = Vec::new();
    let mut current: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                all.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if let Some((field, value)) = line.split_once(':') {
            current.push((field.trim(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

fn field<'a>(stanza: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    stanza
        .iter()
        .find(|(f, _)| f.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn installed(status: &str) -> bool {
    matches!(
        status.split_whitespace().nth(2),
        Some(
            "installed" | "unpacked" | "half-configured" | "triggers-awaited" | "triggers-pending"
        )
    )
}

fn package(path: &str, stanza: &[(&str, String)]) -> Option<Package> {
    let name = field(stanza, "Package")?;
    let version = field(stanza, "Version")?;
    if let Some(status) = field(stanza, "Status")
        && !installed(status)
    {
        return None;
    }
    let source = match field(stanza, "Source") {
        Some(s) => {
            let (source_name, rest) = s.split_once(' ').unwrap_or((s, ""));
            let source_version = rest
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .unwrap_or(version);
            SourcePackage {
                name: source_name.to_owned(),
                version: source_version.to_owned(),
            }
        }
        None => SourcePackage {
            name: name.to_owned(),
            version: version.to_owned(),
        },
    };
    let mut p = Package::new(Ecosystem::Deb, name, version, path);
    p.source = Some(source);
    p.arch = field(stanza, "Architecture").map(str::to_owned);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_installed_stanzas_with_their_source() {
        let status = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\
            Architecture: amd64\nDescription: GNU C\n library\n\n\
            Package: old\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
            Package: util-linux-extra\nStatus: install ok installed\nVersion: 2.38.1-5+b1\n\
            Source: util-linux (2.38.1-5)\nArchitecture: amd64\n\n\
            Package: bsdutils\nStatus: hold ok installed\nVersion: 1:2.38.1-5+b1\n\
            Source: util-linux\n";
        let got = parse(STATUS, status.as_bytes()).unwrap();
        let summary: Vec<_> = got
            .iter()
            .map(|p| {
                let s = p.source.as_ref().unwrap();
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    s.name.as_str(),
                    s.version.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("libc6", "2.36-9", "libc6", "2.36-9"),
                ("util-linux-extra", "2.38.1-5+b1", "util-linux", "2.38.1-5"),
                ("bsdutils", "1:2.38.1-5+b1", "util-linux", "1:2.38.1-5+b1"),
            ]
        );
        assert_eq!(got[0].arch.as_deref(), Some("amd64"));
    }

    #[test]
    fn reads_status_d_files_but_not_their_file_lists() {
        assert!(wants("var/lib/dpkg/status"));
        assert!(wants("var/lib/dpkg/status.d/libssl3"));
        assert!(!wants("var/lib/dpkg/status.d/libssl3.md5sums"));
        assert!(!wants("var/lib/dpkg/status-old"));
        assert!(!wants("var/lib/dpkg/status.d/"));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(STATUS, &data);
        }
    }
}
