//! The distribution from `etc/os-release` or `usr/lib/os-release` (os-release(5): shell-style
//! `KEY=value` lines, values optionally quoted), with `etc/alpine-release` and
//! `etc/debian_version` as fallbacks for images that lack os-release.

use crate::OsRelease;

/// The files read, best first.
pub const PATHS: [&str; 4] = [
    "etc/os-release",
    "usr/lib/os-release",
    "etc/alpine-release",
    "etc/debian_version",
];

pub fn wants(path: &str) -> bool {
    PATHS.contains(&path)
}

/// The distribution `data` (the file at `path`, one of [`PATHS`]) names, if any.
pub fn parse(path: &str, data: &[u8]) -> Option<OsRelease> {
    let text = String::from_utf8_lossy(data);
    match path {
        "etc/alpine-release" => Some(OsRelease {
            id: "alpine".into(),
            version_id: Some(text.trim().to_owned()).filter(|v| !v.is_empty()),
            version_codename: None,
            pretty_name: None,
        }),
        "etc/debian_version" => Some(OsRelease {
            id: "debian".into(),
            version_id: Some(text.trim().to_owned()).filter(|v| !v.is_empty()),
            version_codename: None,
            pretty_name: None,
        }),
        _ => {
            let mut id = None;
            let mut release = OsRelease {
                id: String::new(),
                version_id: None,
                version_codename: None,
                pretty_name: None,
            };
            for line in text.lines() {
                let Some((key, value)) = line.trim().split_once('=') else {
                    continue;
                };
                let value = unquote(value.trim());
                if value.is_empty() {
                    continue;
                }
                match key.trim() {
                    "ID" => id = Some(value),
                    "VERSION_ID" => release.version_id = Some(value),
                    "VERSION_CODENAME" => release.version_codename = Some(value),
                    "PRETTY_NAME" => release.pretty_name = Some(value),
                    _ => {}
                }
            }
            release.id = id?;
            Some(release)
        }
    }
}

fn unquote(v: &str) -> String {
    let inner = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_id_version_and_codename() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
            VERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n# comment\n";
        let r = parse("etc/os-release", text.as_bytes()).unwrap();
        assert_eq!(r.id, "debian");
        assert_eq!(r.version_id.as_deref(), Some("12"));
        assert_eq!(r.version_codename.as_deref(), Some("bookworm"));
        assert_eq!(
            r.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(parse("etc/os-release", b"NAME=x\n"), None);
        let alpine = parse("etc/alpine-release", b"3.18.4\n").unwrap();
        assert_eq!(
            (alpine.id.as_str(), alpine.version_id.as_deref()),
            ("alpine", Some("3.18.4"))
        );
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse("etc/os-release", &data);
        }
    }
}
