//! Ruby gem versions, ordered as `Gem::Version#<=>` of the RubyGems 3 releases.
//!
//! A version is digits, then `.`-separated alphanumeric parts, then optionally a SemVer-like
//! `-` part, whose hyphens become `.pre.`. It splits into segments at dots and at changes
//! between digits and letters; a segment with letters makes a pre-release, which sorts before
//! the release. Trailing zero segments are ignored, separately before and after the first
//! letter segment (`1.0.a.0 == 1.a`). Segments compare as numbers, as byte strings, and a
//! string segment is less than a number (a missing segment counts as 0).
//!
//! RubyGems reads an empty or blank string as "0"; here it is refused like in every scheme.
//! RubyGems master (4.x) has started to read `1.0.0-beta.1` as `1.0.0.beta.1`; this follows
//! the 3.x releases, where it is `1.0.0.pre.beta.1`.

use std::cmp::Ordering;

use super::Decimal;

#[derive(Clone, Debug)]
pub(super) struct GemVersion {
    /// The stripped text with `-` replaced by `.pre.`, which `<=>` checks for equality first.
    normalized: String,
    canonical: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Number(Decimal),
    Text(String),
}

impl GemVersion {
    pub(super) fn compare(&self, other: &Self) -> Ordering {
        if self.normalized == other.normalized || self.canonical == other.canonical {
            return Ordering::Equal;
        }
        let zero = Segment::Number(Decimal::zero());
        for i in 0..self.canonical.len().max(other.canonical.len()) {
            let lhs = self.canonical.get(i).unwrap_or(&zero);
            let rhs = other.canonical.get(i).unwrap_or(&zero);
            let order = match (lhs, rhs) {
                (Segment::Text(_), Segment::Number(_)) => Ordering::Less,
                (Segment::Number(_), Segment::Text(_)) => Ordering::Greater,
                (Segment::Number(a), Segment::Number(b)) => a.cmp(b),
                (Segment::Text(a), Segment::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            };
            if order != Ordering::Equal {
                return order;
            }
        }
        Ordering::Equal
    }
}

/// Ruby's `\s` and what `String#strip` removes around a version.
fn is_ruby_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
}

/// `\A\s*([0-9]+(?>\.[0-9a-zA-Z]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?)?\s*\z`, without the
/// optional: the text between the blanks.
fn is_version_pattern(s: &str) -> bool {
    let (main, pre) = match s.split_once('-') {
        Some((main, pre)) => (main, Some(pre)),
        None => (s, None),
    };
    let mut parts = main.split('.');
    let first = parts.next().unwrap_or("");
    let main_ok = !first.is_empty()
        && first.bytes().all(|c| c.is_ascii_digit())
        && parts.all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric()));
    // The part after the first hyphen may hold more hyphens, but no empty dot-part.
    let pre_ok = pre.is_none_or(|pre| {
        pre.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
    });
    main_ok && pre_ok
}

pub(super) fn parse(text: &str) -> Result<GemVersion, String> {
    let stripped = text.trim_matches(is_ruby_space);
    if stripped.is_empty() {
        return Err("a blank version (RubyGems reads it as 0)".to_owned());
    }
    if !is_version_pattern(stripped) {
        return Err("Malformed version number string".to_owned());
    }
    let normalized = stripped.replace('-', ".pre.");
    Ok(GemVersion {
        canonical: canonical_segments(&normalized),
        normalized,
    })
}

/// `canonical_segments`: the segments (`scan(/[0-9]+|[a-z]+/i)`), split before the first
/// text segment, trailing zeros dropped from each half.
fn canonical_segments(normalized: &str) -> Vec<Segment> {
    let bytes = normalized.as_bytes();
    let mut segments = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let digit = bytes[i].is_ascii_digit();
        let len = bytes[i..]
            .iter()
            .take_while(|c| {
                if digit {
                    c.is_ascii_digit()
                } else {
                    c.is_ascii_alphabetic()
                }
            })
            .count();
        if len == 0 {
            i += 1; // a dot
            continue;
        }
        let run = &normalized[i..i + len];
        segments.push(if digit {
            Segment::Number(Decimal::new(run))
        } else {
            Segment::Text(run.to_owned())
        });
        i += len;
    }
    let first_text = segments
        .iter()
        .position(|s| matches!(s, Segment::Text(_)))
        .unwrap_or(segments.len());
    let mut strings = segments.split_off(first_text);
    let drop_trailing_zeros = |v: &mut Vec<Segment>| {
        while matches!(v.last(), Some(Segment::Number(n)) if n.is_zero()) {
            v.pop();
        }
    };
    drop_trailing_zeros(&mut segments);
    drop_trailing_zeros(&mut strings);
    segments.append(&mut strings);
    segments
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        parse(a).unwrap().compare(&parse(b).unwrap())
    }

    #[test]
    fn rubygems_test_suite_pairs() {
        // From test_gem_version.rb (test_spaceship, test_semver, test_eql and friends).
        let cases = [
            ("1.0", "1.0.0", Equal),
            ("1.0", "1.0.a", Greater),
            ("1.8.2", "0.0.0", Greater),
            ("1.8.2", "1.8.2.a", Greater),
            ("1.8.2.b", "1.8.2.a", Greater),
            ("1.8.2.a", "1.8.2", Less),
            ("1.8.2.a10", "1.8.2.a9", Greater),
            ("0.beta.1", "0.0.beta.1", Equal),
            ("0.0.beta", "0.0.beta.1", Less),
            ("0.0.beta", "0.beta.1", Less),
            ("5.a", "5.0.0.rc2", Less),
            ("5.x", "5.0.0.rc2", Greater),
            ("1.9.3", "1.9.3", Equal),
            ("1.9.3", "1.9.2.99", Greater),
            ("1.9.3", "1.9.3.1", Less),
            ("1.2.b1", "1.2.b.1", Equal),
            ("1.0.0-alpha", "1.0.0-alpha.1", Less),
            ("1.0.0-alpha.1", "1.0.0-beta.2", Less),
            ("1.0.0-beta.2", "1.0.0-beta.11", Less),
            ("1.0.0-beta.11", "1.0.0-rc.1", Less),
            ("1.0.0-rc1", "1.0.0", Less),
            ("1.0.0-1", "1", Less),
            ("1.0", " 1.0 ", Equal),
            ("1.0", "\n1.0\n", Equal),
            ("1.2.pre.1", "1.2.0.pre.1.0", Equal),
            ("1.0.0.a.1.0", "1.a.1", Equal),
            ("9.8.7", "9.8.8", Less),
            ("0.7.0", "0.6.63000", Greater),
            ("1.0.0", "0.0.1.20220404083012", Greater),
            // 3.x spells the hyphen ".pre.", so a hyphenated label sorts after "pre".
            ("1.0.0-beta.1", "1.0.0.beta.1", Greater),
            ("1.A", "1.a", Less), // byte order: uppercase first
            ("1.a", "1.0", Less),
            ("2", "1.99999999999999999999999", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn what_rubygems_refuses() {
        for text in [
            "junk",
            "1.0\n2.0",
            "1..2",
            "1.2 3.4",
            "",
            "   ",
            "1.0-",
            "1.0.",
            ".1",
            "a1",
            "1.0-a..b",
            "1.0.-1",
            "1_0",
            "1.0+a",
            "v1.0",
            "1.0-é",
            "2.3422222.222.222222222.22222.ads0as.dasd0.ddd2222.2.qd3e.",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        for text in ["1.0-a-b", "1.0--1", "1-1", "1.0.a10", "0"] {
            assert!(parse(text).is_ok(), "{text:?}");
        }
    }
}
