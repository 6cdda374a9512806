//! Debian versions, `[epoch:]upstream[-revision]`, ordered as dpkg orders them: the epoch as a
//! number, then upstream and revision with `verrevcmp` (lib/dpkg/version.c), where `~` sorts
//! before everything, even the end of the string, and letters sort before other characters.
//!
//! Parsing follows dpkg's `parseversion`: what it calls an error (empty, embedded blanks, a
//! bad epoch, an empty upstream or revision) is refused; what it only warns about (a version
//! not starting with a digit, characters outside Debian policy) is accepted, as
//! `dpkg --compare-versions` accepts it.

use std::cmp::Ordering;

#[derive(Clone, Debug)]
pub(super) struct DpkgVersion {
    epoch: u32,
    upstream: String,
    revision: String,
}

impl DpkgVersion {
    pub(super) fn compare(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream.as_bytes(), other.upstream.as_bytes()))
            .then_with(|| verrevcmp(self.revision.as_bytes(), other.revision.as_bytes()))
    }
}

/// dpkg trims and splits on blanks only (space and tab), not on other whitespace.
fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

pub(super) fn parse(text: &str) -> Result<DpkgVersion, String> {
    if text.contains('\0') {
        return Err("a version cannot contain a NUL character".to_owned());
    }
    let trimmed = text.trim_start_matches([' ', '\t']);
    if trimmed.is_empty() {
        return Err("version string is empty".to_owned());
    }
    let end = trimmed.bytes().position(is_blank).unwrap_or(trimmed.len());
    if !trimmed.as_bytes()[end..].iter().all(|&c| is_blank(c)) {
        return Err("version string has embedded spaces".to_owned());
    }
    let word = &trimmed[..end];

    let (epoch, rest) = match word.find(':') {
        Some(colon) => (parse_epoch(word, colon)?, &word[colon + 1..]),
        None => (0, word),
    };
    if word.contains(':') && rest.is_empty() {
        return Err("nothing after colon in version number".to_owned());
    }
    let (upstream, revision) = match rest.rfind('-') {
        Some(hyphen) => {
            let revision = &rest[hyphen + 1..];
            if revision.is_empty() {
                return Err("revision number is empty".to_owned());
            }
            (&rest[..hyphen], revision)
        }
        None => (rest, ""),
    };
    if upstream.is_empty() {
        return Err("version number is empty".to_owned());
    }
    Ok(DpkgVersion {
        epoch,
        upstream: upstream.to_owned(),
        revision: revision.to_owned(),
    })
}

/// The epoch before the first colon, read as `strtol` reads it (leading whitespace and a sign
/// are allowed) and checked as dpkg checks it.
fn parse_epoch(word: &str, colon: usize) -> Result<u32, String> {
    let bytes = word.as_bytes();
    let mut i = 0;
    while i < colon && matches!(bytes[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let negative = bytes.get(i) == Some(&b'-');
    if matches!(bytes.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let digits_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i == digits_start {
        return Err("epoch in version is empty".to_owned());
    }
    if i != colon {
        return Err("epoch in version is not number".to_owned());
    }
    let digits = word[digits_start..i].trim_start_matches('0');
    if negative && !digits.is_empty() {
        return Err("epoch in version is negative".to_owned());
    }
    match digits {
        "" => Ok(0),
        d => d
            .parse::<u32>()
            .ok()
            .filter(|&e| e <= i32::MAX as u32)
            .ok_or_else(|| "epoch in version is too big".to_owned()),
    }
}

/// dpkg's `order`: digits (and the end) are 0, `~` is -1, letters their code, anything else
/// after all letters. dpkg reads `char`, which is signed on the platforms Debian ships, so a
/// byte of a multi-byte UTF-8 character lands at its unsigned value, between the letters and
/// the ASCII punctuation.
fn order(c: Option<&u8>) -> i32 {
    match c {
        None => 0,
        Some(&c) if c.is_ascii_digit() => 0,
        Some(&c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(&c) if c >= 0x80 => i32::from(c),
        Some(&c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let digit = |s: &[u8], i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (order(a.get(i)), order(b.get(j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        let (a, b) = (parse(a).unwrap(), parse(b).unwrap());
        a.compare(&b)
    }

    #[test]
    fn known_pairs() {
        // From Debian policy 5.6.12, dpkg's t/version.t and the dpkg-dev manual.
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal), // an absent revision is the empty string, as "0"
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~~a", Less),
            ("1.0~~a", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0+", Less), // letters before non-letters
            ("1.0+", "1.0.", Less), // then ASCII order: '+' < '.'
            ("1.0", "1.0.0", Less),
            ("1.2.3", "1.2.10", Less),
            ("1.002", "1.2", Equal), // leading zeros ignored
            ("1:0.1", "2.0", Greater),
            ("0:1.0", "1.0", Equal),
            ("2.0-1", "2.0-1ubuntu1", Less),
            ("2.0-1ubuntu1", "2.0-1.1", Less),
            ("7.6p2-4", "7.6-0", Greater),
            ("1.0.3-3", "1.0-1", Greater),
            ("1.3", "1.2.2-2", Greater),
            ("1:1.18.36:5.4", "1:1.18.37:4.3", Less), // colons in the upstream after an epoch
            ("2.7.2-linux-1", "2.7.2-linux-2", Less), // the last hyphen starts the revision
            ("1.0-1-1", "1.0-1.1", Greater),          // upstream "1.0-1" against "1.0"
            ("a", "b", Less),                         // dpkg only warns about these
            ("1.0\u{e9}", "1.0z", Greater),           // a UTF-8 byte sorts after every letter
            ("1.0\u{e9}", "1.0+", Less),              // and before ASCII punctuation
            ("  1.0  ", "1.0", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn dpkg_errors_are_refused_and_warnings_accepted() {
        for (text, reason) in [
            ("   ", "version string is empty"),
            ("1 0", "version string has embedded spaces"),
            (":1.0", "epoch in version is empty"),
            ("a:1.0", "epoch in version is empty"),
            ("1.18.36:5.4", "epoch in version is not number"), // a colon needs an epoch
            ("1a:1.0", "epoch in version is not number"),
            ("-1:1.0", "epoch in version is negative"),
            ("9999999999:1.0", "epoch in version is too big"),
            ("2147483648:1.0", "epoch in version is too big"),
            ("2:", "nothing after colon in version number"),
            ("1.0-", "revision number is empty"),
            ("-1", "version number is empty"),
            ("2:-1", "version number is empty"),
        ] {
            assert_eq!(parse(text).unwrap_err(), reason, "{text:?}");
        }
        for text in [
            "a1.0",
            "1_0",
            "1.0-a_b",
            "+1:2",
            "-0:1",
            "2147483647:1",
            "1.0\n",
        ] {
            assert!(parse(text).is_ok(), "{text:?}");
        }
        assert_eq!(parse("+1:2").unwrap().epoch, 1);
    }
}
