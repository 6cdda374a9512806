//! Go versions: module versions as `golang.org/x/mod/semver` parses and orders them
//! (`v1.2.3`, the shorthands `v1` and `v1.2`, pseudo-versions such as
//! `v0.0.0-20191109021931-daa7c04131f5`, `+incompatible` as ignored build metadata), with or
//! without the `v` as OSV records write them, and Go toolchain versions mapped to SemVer as
//! golang/vulndb's `GoTagToSemver` maps them: `go1.21.5` → `v1.21.5`, `go1.21` and `1.21` →
//! `v1.21.0`, `go1.21rc2` and `1.21rc2` → `v1.21.0-rc.2`, `go1.8-pre3` → `v1.8.0-pre.3`,
//! `go1` → `v1.0.0`. Like vulndb, `go1.0` is refused (Go 1 was tagged `go1`), and a `go` tag
//! is read up to its first whitespace (`go1.21.5 linux/amd64`).
//!
//! Numbers have no size limit, as in `x/mod/semver`.

use super::semver::{self, SemVer};

pub(super) fn parse(text: &str) -> Result<SemVer, String> {
    if text.starts_with("go") {
        return parse_tag(text);
    }
    let module = text.strip_prefix('v').unwrap_or(text);
    match parse_module(module) {
        Ok(version) => Ok(version),
        // "1.21rc2" is a toolchain version written without its "go".
        Err(err) if !text.starts_with('v') && !text.contains(char::is_whitespace) => {
            parse_tag(&format!("go{text}")).map_err(|_| err)
        }
        Err(err) => Err(err),
    }
}

/// `x/mod/semver`'s `parse`, on the text after the `v`.
fn parse_module(v: &str) -> Result<SemVer, String> {
    let end_of_core = v.find(['-', '+']).unwrap_or(v.len());
    let (core, rest) = v.split_at(end_of_core);
    let numbers: Vec<&str> = core.split('.').collect();
    if numbers.len() > 3 || numbers.iter().any(|n| !semver::is_number(n)) {
        return Err("not vMAJOR[.MINOR[.PATCH]] with numbers without leading zeros".to_owned());
    }
    // The shorthands v1 and v1.2 take no pre-release or build.
    if numbers.len() < 3 && !rest.is_empty() {
        return Err("a pre-release or build needs all of MAJOR.MINOR.PATCH".to_owned());
    }
    let number = |i: usize| numbers.get(i).copied().unwrap_or("0");
    let (pre, build) = semver::split_pre_build(rest)?;
    semver::from_parts(number(0), number(1), number(2), pre, build)
}

/// vulndb's `GoTagToSemver`: `^go(\d+\.\d+)(\.\d+|)((beta|rc|-pre)(\d+))?$` on the first
/// whitespace-separated field.
fn parse_tag(text: &str) -> Result<SemVer, String> {
    let tag = text.split_whitespace().next().unwrap_or("");
    if tag == "go1" {
        return parse_module("1.0.0");
    }
    if tag == "go1.0" {
        return Err("go1.0 is not a Go release tag (Go 1 is go1)".to_owned());
    }
    let not_a_tag = || format!("{tag:?} is not a Go release tag like go1.21.5 or go1.21rc2");
    let body = tag.strip_prefix("go").ok_or_else(not_a_tag)?;
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();

    let major_len = digits(body);
    let after_major = &body[major_len..];
    let minor_part = after_major.strip_prefix('.').ok_or_else(not_a_tag)?;
    let minor_len = digits(minor_part);
    if major_len == 0 || minor_len == 0 {
        return Err(not_a_tag());
    }
    let major_minor = &body[..major_len + 1 + minor_len];
    let mut rest = &minor_part[minor_len..];
    let mut patch = ".0";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let patch_len = digits(after_dot);
        if patch_len == 0 {
            return Err(not_a_tag());
        }
        patch = &rest[..1 + patch_len];
        rest = &after_dot[patch_len..];
    }
    let mut semver_text = format!("{major_minor}{patch}");
    if !rest.is_empty() {
        let (kind, number) = ["beta", "rc", "-pre"]
            .iter()
            .find_map(|kind| rest.strip_prefix(kind).map(|n| (*kind, n)))
            .ok_or_else(not_a_tag)?;
        if number.is_empty() || digits(number) != number.len() {
            return Err(not_a_tag());
        }
        let hyphen = if kind.starts_with('-') { "" } else { "-" };
        semver_text.push_str(&format!("{hyphen}{kind}.{number}"));
    }
    parse_module(&semver_text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::{self, Equal, Greater, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        parse(a).unwrap().compare(&parse(b).unwrap())
    }

    #[test]
    fn module_versions() {
        // Cases from x/mod/semver's semver_test.go, written as pairs.
        let cases = [
            ("v1.0.0", "v1.0.0", Equal),
            ("v1", "v1.0.0", Equal), // shorthands
            ("v1.2", "v1.2.0", Equal),
            ("v1.2.3", "1.2.3", Equal), // OSV writes Go versions without the v
            ("v1.0.0-alpha", "v1.0.0-alpha.1", Less),
            ("v1.0.0-alpha.1", "v1.0.0-alpha.beta", Less),
            ("v1.0.0-beta.2", "v1.0.0-beta.11", Less),
            ("v1.0.0-rc.1", "v1.0.0", Less),
            ("v2.0.0+incompatible", "v2.0.0", Equal), // build metadata is ignored
            ("v2.0.0+incompatible", "v2.0.1", Less),
            ("v1.2.3+meta", "v1.2.3+other", Equal),
            // Pseudo-versions sort as the pre-releases they are.
            (
                "v0.0.0-20191109021931-daa7c04131f5",
                "v0.0.0-20191109021932-aaaaaaaaaaaa",
                Less,
            ),
            ("v1.2.3", "v1.2.4-0.20191109021931-daa7c04131f5", Less),
            ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4", Less),
            (
                "v1.2.4-pre.0.20191109021931-daa7c04131f5",
                "v1.2.4-pre",
                Greater,
            ),
            (
                "v12345678901234567890.0.0",
                "v12345678901234567889.9.9",
                Greater,
            ),
            ("0", "v0.0.0", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn toolchain_versions_map_as_vulndb_maps_them() {
        let cases = [
            ("go1.21.5", "v1.21.5", Equal),
            ("go1.21", "v1.21.0", Equal),
            ("1.21", "v1.21.0", Equal),
            ("go1.21rc2", "v1.21.0-rc.2", Equal),
            ("1.21rc2", "1.21.0-rc.2", Equal),
            ("go1.20beta1", "v1.20.0-beta.1", Equal),
            ("go1.9.2rc2", "v1.9.2-rc.2", Equal),
            ("go1.8-pre3", "v1.8.0-pre.3", Equal),
            ("go1", "v1.0.0", Equal),
            ("go1.21.5 linux/amd64", "go1.21.5", Equal),
            ("go1.21rc2", "go1.21.0", Less),
            ("go1.21beta1", "go1.21rc1", Less),
            ("go1.20.12", "go1.21rc1", Less),
            ("1.21.0", "go1.21", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn what_go_refuses() {
        for text in [
            "go1.0",
            "go",
            "go1.",
            "go1.21.",
            "go1.21rc",
            "go1.21alpha1",
            "go1.21.5rc",
            "gox",
            "go 1.21",
            "go1.21-rc1",
            "v1.2.3.4",
            "v01.2.3",
            "v1.2-pre",
            "v1.2.3-01",
            "v1.2.3-",
            "v1.2.3+",
            "vv1.2.3",
            "V1.2.3",
            "1.21rc2x",
            "1.21 linux",
            "go1.21rc02",
            "v1.2.3-a..b",
            "v",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
