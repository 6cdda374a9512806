//! RPM versions, `[epoch:]version[-release]`, ordered as rpm 4.18's `rpmverCmp` orders them:
//! split as `parseEVR` splits (the epoch is the leading digits before a `:`, the release what
//! follows the last `-`), then each part compared with `rpmvercmp`. A missing epoch is "0"; a
//! missing release sorts before any release, even an empty one.
//!
//! `rpmvercmp` walks alphanumeric segments, skipping other characters: numbers compare
//! numerically and beat letters, `~` sorts before everything (the end included) and `^` after
//! the base version but before anything else that continues it. rpm compares any non-empty
//! text, and so does this.

use std::cmp::Ordering;

#[derive(Clone, Debug)]
pub(super) struct RpmVersion {
    epoch: Option<String>,
    version: String,
    release: Option<String>,
}

impl RpmVersion {
    pub(super) fn compare(&self, other: &Self) -> Ordering {
        let epoch = |v: &Self| v.epoch.clone().unwrap_or_else(|| "0".to_owned());
        rpmvercmp(epoch(self).as_bytes(), epoch(other).as_bytes())
            .then_with(|| rpmvercmp(self.version.as_bytes(), other.version.as_bytes()))
            .then_with(|| match (&self.release, &other.release) {
                (None, None) => Ordering::Equal,
                (Some(_), None) => Ordering::Greater,
                (None, Some(_)) => Ordering::Less,
                (Some(a), Some(b)) => rpmvercmp(a.as_bytes(), b.as_bytes()),
            })
    }
}

pub(super) fn parse(text: &str) -> Result<RpmVersion, String> {
    if text.contains('\0') {
        return Err("a version cannot contain a NUL character".to_owned());
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (epoch, rest) = match text[digits..].strip_prefix(':') {
        Some(rest) => (Some(&text[..digits]), rest),
        None => (None, text),
    };
    // parseEVR looks for the release hyphen only after the epoch digits.
    let hyphen = text[digits..].rfind('-').map(|at| digits + at);
    let version_start = text.len() - rest.len();
    let (version, release) = match hyphen {
        Some(hyphen) => (&text[version_start..hyphen], Some(&text[hyphen + 1..])),
        None => (rest, None),
    };
    Ok(RpmVersion {
        epoch: epoch.map(|e| if e.is_empty() { "0" } else { e }.to_owned()),
        version: version.to_owned(),
        release: release.map(str::to_owned),
    })
}

/// `rpmvercmp` from rpmio/rpmvercmp.c.
fn rpmvercmp(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let separator = |c: u8| c != 0 && !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    let (mut one, mut two) = (0, 0);
    while one < a.len() || two < b.len() {
        while separator(at(a, one)) {
            one += 1;
        }
        while separator(at(b, two)) {
            two += 1;
        }
        let (c1, c2) = (at(a, one), at(b, two));

        // The tilde sorts before everything else, the end of the string included.
        if c1 == b'~' || c2 == b'~' {
            if c1 != b'~' {
                return Ordering::Greater;
            }
            if c2 != b'~' {
                return Ordering::Less;
            }
            one += 1;
            two += 1;
            continue;
        }
        // The caret sorts after the end of the string but before anything else.
        if c1 == b'^' || c2 == b'^' {
            if c1 == 0 {
                return Ordering::Less;
            }
            if c2 == 0 {
                return Ordering::Greater;
            }
            if c1 != b'^' {
                return Ordering::Greater;
            }
            if c2 != b'^' {
                return Ordering::Less;
            }
            one += 1;
            two += 1;
            continue;
        }
        if c1 == 0 || c2 == 0 {
            break;
        }

        let numeric = c1.is_ascii_digit();
        let in_segment = |c: u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let end1 = one + a[one..].iter().take_while(|&&c| in_segment(c)).count();
        let end2 = two + b[two..].iter().take_while(|&&c| in_segment(c)).count();
        // Segments of different kinds: the numeric one is newer.
        if end2 == two {
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if numeric {
            super::cmp_digits(&a[one..end1], &b[two..end2])
        } else {
            a[one..end1].cmp(&b[two..end2])
        };
        if order != Ordering::Equal {
            return order;
        }
        one = end1;
        two = end2;
    }
    // Equal segments but different separators: whichever still has characters wins.
    match (one >= a.len(), two >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, _) => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        parse(a).unwrap().compare(&parse(b).unwrap())
    }

    #[test]
    fn rpmvercmp_known_pairs() {
        // From rpm's tests/rpmvercmp.at.
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0.1", Equal),
            ("2.0", "2.0.1", Less),
            ("2.0.1a", "2.0.1", Greater),
            ("5.5p1", "5.5p2", Less),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "8", Less),
            ("5.5p1", "5.6p1", Less),
            ("6.0.rc1", "6.0", Greater),
            ("10b2", "10a1", Greater),
            ("1.0aa", "1.0a", Greater),
            ("10.0001", "10.1", Equal),
            ("10.0001", "10.0039", Less),
            ("4.999.9", "5.0", Less),
            ("20101121", "20101122", Less),
            ("2_0", "2_0", Equal),
            ("2.0", "2_0", Equal),
            ("a", "a", Equal),
            ("a+", "a_", Equal),
            ("+a", "_a", Equal),
            ("+", "_", Equal), // nothing but separators on both sides
            ("1.0~rc1", "1.0~rc1", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0^git1", "1.01", Less),
            ("1.0^20160101", "1.0.1", Less),
            ("1.0^20160101^git1", "1.0^20160101", Greater),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
            ("1.0^git1~pre", "1.0^git1", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(rpmvercmp(a.as_bytes(), b.as_bytes()), want, "{a} vs {b}");
            assert_eq!(
                rpmvercmp(b.as_bytes(), a.as_bytes()),
                want.reverse(),
                "{b} vs {a}"
            );
        }
    }

    #[test]
    fn epoch_and_release() {
        assert_eq!(cmp("1:1.0", "2.0"), Greater);
        assert_eq!(cmp("0:1.0", "1.0"), Equal);
        assert_eq!(cmp(":1.0", "1.0"), Equal); // an empty epoch is 0
        assert_eq!(cmp("1.0", "1.0-1"), Less); // no release sorts first
        assert_eq!(cmp("1.0-", "1.0"), Greater); // even before an empty one
        assert_eq!(cmp("1.0-1.el8", "1.0-1.el9"), Less);
        assert_eq!(cmp("1.0-2-3", "1.0-2-4"), Less); // the last hyphen starts the release
        assert_eq!(cmp("a:1", "1"), Less); // not an epoch: the version is "a:1"
        assert_eq!(cmp("1:", "0:9"), Greater);
        let v = parse("12-3:4-5").unwrap();
        assert_eq!((v.epoch, v.version.as_str()), (None, "12-3:4"));
        let v = parse("7:-5").unwrap();
        assert_eq!((v.version.as_str(), v.release.as_deref()), ("", Some("5")));
    }
}
