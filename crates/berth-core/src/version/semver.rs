//! SemVer 2.0 precedence, shared by the `SemVer` scheme (parsed as node-semver parses) and the
//! `Go` scheme (parsed as `golang.org/x/mod/semver` parses, see `go.rs`).
//!
//! Precedence: major, minor and patch numerically; a pre-release sorts before its release;
//! pre-release identifiers compare one by one, numeric ones numerically and before
//! alphanumeric ones, which compare in ASCII order; a longer list wins when all shared
//! identifiers are equal. Build metadata is ignored.
//!
//! node-semver refuses versions longer than 256 characters and major, minor or patch numbers
//! above 2^53 - 1, and so does this; it compares all-digit pre-release identifiers as
//! JavaScript numbers, which lose precision above 2^53, where this compares them exactly.

use std::cmp::Ordering;

use super::Decimal;

/// A parsed SemVer version without its build metadata.
#[derive(Clone, Debug)]
pub(super) struct SemVer {
    major: Decimal,
    minor: Decimal,
    patch: Decimal,
    pre: Vec<Identifier>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Identifier {
    /// Declared first: numeric identifiers sort before alphanumeric ones.
    Numeric(Decimal),
    Alphanumeric(String),
}

impl SemVer {
    pub(super) fn compare(&self, other: &Self) -> Ordering {
        self.major
            .cmp(&other.major)
            .then_with(|| self.minor.cmp(&other.minor))
            .then_with(|| self.patch.cmp(&other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

/// Builds a version from already split parts, checking the pre-release and build syntax
/// that node-semver and `x/mod/semver` share: identifiers of `[0-9A-Za-z-]`, not empty, and
/// no leading zero in a numeric pre-release identifier.
pub(super) fn from_parts(
    major: &str,
    minor: &str,
    patch: &str,
    pre: Option<&str>,
    build: Option<&str>,
) -> Result<SemVer, String> {
    let ident_chars =
        |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
    let mut identifiers = Vec::new();
    if let Some(pre) = pre {
        for id in pre.split('.') {
            if !ident_chars(id) {
                return Err(format!(
                    "pre-release identifier {id:?} is empty or not [0-9A-Za-z-]"
                ));
            }
            if id.bytes().all(|c| c.is_ascii_digit()) {
                if id.len() > 1 && id.starts_with('0') {
                    return Err(format!(
                        "numeric pre-release identifier {id:?} has a leading zero"
                    ));
                }
                identifiers.push(Identifier::Numeric(Decimal::new(id)));
            } else {
                identifiers.push(Identifier::Alphanumeric(id.to_owned()));
            }
        }
    }
    if let Some(build) = build
        && !build.split('.').all(ident_chars)
    {
        return Err(format!(
            "build metadata {build:?} is not dot-separated [0-9A-Za-z-]+"
        ));
    }
    Ok(SemVer {
        major: Decimal::new(major),
        minor: Decimal::new(minor),
        patch: Decimal::new(patch),
        pre: identifiers,
    })
}

/// Splits `rest` (what follows the patch number) into pre-release and build metadata.
pub(super) fn split_pre_build(rest: &str) -> Result<(Option<&str>, Option<&str>), String> {
    let (before_build, build) = match rest.split_once('+') {
        Some((before, build)) => (before, Some(build)),
        None => (rest, None),
    };
    let pre = match before_build {
        "" => None,
        other => Some(
            other
                .strip_prefix('-')
                .ok_or_else(|| format!("unexpected {other:?} after the patch number"))?,
        ),
    };
    Ok((pre, build))
}

/// A SemVer number as both parsers take it: ASCII digits, "0" or no leading zero.
pub(super) fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// node-semver's `MAX_LENGTH`, counted in UTF-16 units as JavaScript counts.
const NODE_MAX_LENGTH: usize = 256;
/// `Number.MAX_SAFE_INTEGER`, the largest major, minor or patch node-semver takes.
const NODE_MAX_SAFE_INTEGER: &str = "9007199254740991";

/// JavaScript's `String.prototype.trim` whitespace.
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// Parses as `new SemVer(text)` of node-semver 7 (not loose), also taking a leading `=` as
/// `semver.clean` and npm ranges do.
pub(super) fn parse_node(text: &str) -> Result<SemVer, String> {
    if text.encode_utf16().count() > NODE_MAX_LENGTH {
        return Err(format!("longer than {NODE_MAX_LENGTH} characters"));
    }
    let trimmed = text.trim_matches(is_js_whitespace);
    let unprefixed = trimmed.strip_prefix('=').unwrap_or(trimmed);
    let unprefixed = unprefixed.strip_prefix('v').unwrap_or(unprefixed);
    let end_of_core = unprefixed.find(['-', '+']).unwrap_or(unprefixed.len());
    let (core, rest) = unprefixed.split_at(end_of_core);
    let numbers: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = numbers[..] else {
        return Err("not MAJOR.MINOR.PATCH".to_owned());
    };
    for (name, n) in [("major", major), ("minor", minor), ("patch", patch)] {
        if !is_number(n) {
            return Err(format!(
                "the {name} version {n:?} is not a number without leading zeros"
            ));
        }
        if Decimal::new(n) > Decimal::new(NODE_MAX_SAFE_INTEGER) {
            return Err(format!("the {name} version is above 2^53 - 1"));
        }
    }
    let (pre, build) = split_pre_build(rest)?;
    from_parts(major, minor, patch, pre, build)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        parse_node(a).unwrap().compare(&parse_node(b).unwrap())
    }

    #[test]
    fn semver_spec_precedence() {
        // The chain from semver.org section 11, then node-semver's own test vectors.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
        ];
        for w in chain.windows(2) {
            assert_eq!(cmp(w[0], w[1]), Less, "{} < {}", w[0], w[1]);
            assert_eq!(cmp(w[1], w[0]), Greater);
        }
        let cases = [
            ("1.0.0+build.1", "1.0.0+build.2", Equal), // build metadata is ignored
            ("1.0.0-rc.1+build", "1.0.0-rc.1", Equal),
            ("v1.2.3", "1.2.3", Equal),
            ("=1.2.3", "v1.2.3", Equal),
            ("=v1.2.3", "1.2.3", Equal),
            ("  1.2.3\n", "1.2.3", Equal),
            ("1.2.3-a.10", "1.2.3-a.9", Greater),
            ("1.2.3-a.b", "1.2.3-a.1", Greater), // numeric before alphanumeric
            ("1.2.3-A", "1.2.3-a", Less),        // ASCII order, case-sensitive
            ("1.2.3--", "1.2.3-0", Greater),
            ("1.2.3-0a", "1.2.3-1", Greater), // "0a" is alphanumeric
            ("0.0.0", "0.0.0-foo", Greater),
            ("1.2.3-4", "1.2.3-4.0", Less),
            ("10.0.0", "9.99.99", Greater),
            ("9007199254740991.0.0", "1.0.0", Greater),
            (
                "1.0.0-99999999999999999999",
                "1.0.0-99999999999999999998",
                Greater,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn what_node_semver_refuses() {
        for text in [
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.02.3",
            "1.2.03",
            "1.2.3-01",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a..b",
            "1.2.3+a..b",
            "1.2.3-a_b",
            "V1.2.3",
            "vv1.2.3",
            "v=1.2.3",
            "a.b.c",
            "1.2.3 4",
            "-1.2.3",
            "1.2.-3",
            "9007199254740992.0.0",
            "1.2.3.",
            " ",
            "1.2.3-é",
        ] {
            assert!(parse_node(text).is_err(), "{text:?}");
        }
        assert!(parse_node(&format!("1.2.3-{}", "a".repeat(250))).is_ok());
        assert!(parse_node(&format!("1.2.3-{}", "a".repeat(251))).is_err());
    }
}
