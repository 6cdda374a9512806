//! Alpine versions, ordered as apk-tools' current `src/version.c` orders them (the tokenizer
//! with `~hash` support): `digits{.digits}[letter]{_suffix[number]}[~hash][-rN]`. Older
//! apk-tools releases tokenised leading zeros and invalid tails differently.
//!
//! Tokens are compared pairwise while both versions have a token of the same kind: the first
//! number and suffix, revision numbers numerically; later dot-separated numbers numerically
//! unless either has a leading zero, in which case as strings (so `1.01 < 1.1` and
//! `1.0 < 1.00`); letters and hashes as text; suffixes in the order
//! `_alpha < _beta < _pre < _rc < (none) < _cvs < _svn < _git < _hg < _p`. When one version
//! runs out of matching tokens the one that goes on is greater, unless what follows is a
//! pre-release suffix, and otherwise the kind of the next token decides.
//!
//! apk-tools reads numbers into a 64-bit integer that wraps past 20 digits; numbers here
//! compare exactly whatever their length.

use std::cmp::Ordering;

/// Token kinds in the order apk-tools gives them: after two versions stop sharing a kind,
/// the version whose next token has the lower kind is the greater one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InitialDigit,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    CommitHash,
    RevisionNo,
    End,
}

/// The suffixes in their order; `None` (no suffix) is the pivot between pre- and
/// post-release ones.
const SUFFIXES: [&str; 10] = [
    "alpha", "beta", "pre", "rc", "", "cvs", "svn", "git", "hg", "p",
];
const SUFFIX_NONE: usize = 4;

#[derive(Clone, Debug)]
struct Token {
    kind: Kind,
    /// The token's text: digits, the letter, the suffix name or the hash.
    text: String,
    /// Index into [`SUFFIXES`] for a suffix token.
    suffix: usize,
}

#[derive(Clone, Debug)]
pub(super) struct ApkVersion {
    tokens: Vec<Token>,
}

pub(super) fn parse(text: &str) -> Result<ApkVersion, String> {
    let bytes = text.as_bytes();
    let digits_at = |from: usize| {
        from + bytes[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut pos = digits_at(0);
    if pos == 0 {
        return Err("an apk version starts with a number".to_owned());
    }
    let mut tokens = vec![Token {
        kind: Kind::InitialDigit,
        text: text[..pos].to_owned(),
        suffix: 0,
    }];
    while pos < bytes.len() {
        let last = tokens.last().expect("the first token is pushed above").kind;
        let start = pos;
        let invalid = |what: &str| Err(format!("{what} at byte {start}"));
        let token = match bytes[pos] {
            b'a'..=b'z' if last <= Kind::Digit => {
                pos += 1;
                (Kind::Letter, start)
            }
            b'.' | b'0'..=b'9' => {
                if bytes[pos] == b'.' {
                    if last > Kind::Digit {
                        return invalid("a dot after a letter or suffix");
                    }
                    pos += 1;
                }
                let kind = match last {
                    Kind::InitialDigit | Kind::Digit => Kind::Digit,
                    Kind::Suffix => Kind::SuffixNo,
                    _ => return invalid("a number where none may follow"),
                };
                let from = pos;
                pos = digits_at(pos);
                if pos == from {
                    return invalid("a dot not followed by a number");
                }
                (kind, from)
            }
            b'_' if last <= Kind::SuffixNo => {
                pos += 1;
                let from = pos;
                pos += bytes[pos..]
                    .iter()
                    .take_while(|c| c.is_ascii_lowercase())
                    .count();
                if !SUFFIXES.contains(&&text[from..pos]) || from == pos {
                    return invalid("an unknown suffix");
                }
                (Kind::Suffix, from)
            }
            b'~' if last < Kind::CommitHash => {
                pos += 1;
                let from = pos;
                pos += bytes[pos..]
                    .iter()
                    .take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                    .count();
                if pos == from {
                    return invalid("a `~` not followed by a lowercase hex hash");
                }
                (Kind::CommitHash, from)
            }
            b'-' if last < Kind::RevisionNo && bytes.get(pos + 1) == Some(&b'r') => {
                pos += 2;
                let from = pos;
                pos = digits_at(pos);
                if pos == from {
                    return invalid("a `-r` not followed by a number");
                }
                (Kind::RevisionNo, from)
            }
            _ => return invalid("an unexpected character"),
        };
        let (kind, from) = token;
        let text = text[from..pos].to_owned();
        let suffix = match kind {
            Kind::Suffix => SUFFIXES
                .iter()
                .position(|&s| s == text)
                .expect("checked against SUFFIXES above"),
            _ => 0,
        };
        tokens.push(Token { kind, text, suffix });
    }
    Ok(ApkVersion { tokens })
}

fn token_cmp(a: &Token, b: &Token) -> Ordering {
    match a.kind {
        Kind::Digit if a.text.starts_with('0') || b.text.starts_with('0') => a.text.cmp(&b.text),
        Kind::InitialDigit | Kind::Digit | Kind::SuffixNo | Kind::RevisionNo => {
            super::cmp_digits(a.text.as_bytes(), b.text.as_bytes())
        }
        Kind::Suffix => a.suffix.cmp(&b.suffix),
        Kind::Letter | Kind::CommitHash | Kind::End => a.text.cmp(&b.text),
    }
}

impl ApkVersion {
    pub(super) fn compare(&self, other: &Self) -> Ordering {
        let end = Token {
            kind: Kind::End,
            text: String::new(),
            suffix: 0,
        };
        let mut i = 0;
        let (ta, tb) = loop {
            let ta = self.tokens.get(i).unwrap_or(&end);
            let tb = other.tokens.get(i).unwrap_or(&end);
            if ta.kind != tb.kind || ta.kind == Kind::End {
                break (ta, tb);
            }
            match token_cmp(ta, tb) {
                Ordering::Equal => i += 1,
                order => return order,
            }
        };
        if ta.kind == tb.kind {
            return Ordering::Equal;
        }
        // The version that goes on is greater, unless it goes on with a pre-release suffix.
        let pre_release = |t: &Token| t.kind == Kind::Suffix && t.suffix < SUFFIX_NONE;
        if pre_release(ta) {
            return Ordering::Less;
        }
        if pre_release(tb) {
            return Ordering::Greater;
        }
        tb.kind.cmp(&ta.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    /// A golden table written from apk-tools' rules; comments give the reason of the tricky
    /// rows. Each row is checked in both directions.
    const GOLDEN: &[(&str, &str, Ordering)] = &[
        // Plain numbers, compared numerically.
        ("1.0", "1.0", Equal),
        ("1.0", "1.1", Less),
        ("1.2", "1.10", Less),
        ("1.2.1", "1.2", Greater), // more components: the continuing version is greater
        ("2.2.39-r1", "1.0.4-r3", Greater),
        ("0.6.0", "0.6.1", Less),
        ("3.0.20060720", "20060720", Less),
        ("7.0.17", "7.0.174", Less),
        ("20050718-r1", "20050718-r2", Less),
        ("1.2.12.1", "1.2.13", Less),
        // The first number ignores leading zeros; later ones with a leading zero compare as
        // strings.
        ("006", "1.0.0", Greater),
        ("013", "014-r1", Less),
        ("01.0", "1.0", Equal),
        ("1.06-r6", "006", Less),
        ("1.01", "1.1", Less),      // "01" < "1" as strings
        ("1.09", "1.10", Less),     // "09" < "10" as strings
        ("1.9", "1.09", Greater),   // "9" > "09" as strings
        ("1.0", "1.00", Less),      // "0" is a prefix of "00"
        ("1.010", "1.01", Greater), // "01" is a prefix of "010"
        ("4.01", "4.20", Less),
        ("2.10.1", "02.08.01b", Greater),
        ("1.02.07", "1.02.10-r1", Less),
        ("1.2.07.8", "1.2.12.04", Less),
        ("0.20070118", "0.20070207_rc1", Less),
        // One letter after the numbers.
        ("1.0a", "1.0b", Less),
        ("1.0", "1.0a", Less),
        ("1.0a", "1.0.1", Less), // a letter (kind 2) continues less than a number (kind 1)
        ("2.3.0b-r1", "2.3.0b-r2", Less),
        ("0.9.8c-r1", "0.9.8d", Less),
        ("2.12r-r4", "2.12r-r5", Less),
        ("1.6d", "1.2.07.8", Greater),
        // Suffixes.
        ("1.0_alpha", "1.0_beta", Less),
        ("1.0_beta", "1.0_pre", Less),
        ("1.0_pre", "1.0_rc", Less),
        ("1.0_rc", "1.0", Less), // pre-release suffixes sort before the release
        ("1.0", "1.0_cvs", Less),
        ("1.0_cvs", "1.0_svn", Less),
        ("1.0_svn", "1.0_git", Less),
        ("1.0_git", "1.0_hg", Less),
        ("1.0_hg", "1.0_p", Less),
        ("0.1.0_alpha", "0.1.0_alpha2", Less),
        ("1.0_alpha1", "1.0_alpha01", Equal), // suffix numbers are numeric
        ("1.0_p", "1.0_p0", Less),            // a suffix number continues the version
        ("3.1_p16", "3.1_p17", Less),
        ("1.0_p10-r0", "1.0_p9-r0", Greater),
        ("0.1.0_alpha_pre2", "0.1.0_alpha", Less), // a second pre-release suffix: older
        ("1.0_alpha1_p", "1.0_alpha1", Greater),   // a second post-release suffix: newer
        ("1.3_pre1-r1", "1.3.2", Less),
        ("1.0_p1", "1.0.1", Less), // a suffix (kind 3) continues less than a number (kind 1)
        ("1.0_p1", "1.0a", Less),  // and less than a letter (kind 2)
        ("1.0_rc1", "1.0a", Less),
        ("2.9.11_pre20051101-r2", "2.9.11_pre20051101-r3", Less),
        (
            "1.0.0_pre20191002222144-r0",
            "1.0.0_pre20210530193627-r0",
            Less,
        ),
        ("3.9_pre20060124", "0.01", Greater),
        // Revisions.
        ("1.0-r1", "1.0-r2", Less),
        ("1.0-r9", "1.0-r10", Less),
        ("1.0-r1", "1.0-r01", Equal),
        ("1.0", "1.0-r0", Less), // "-r0" still continues the version
        ("1.3-r0", "1.3.1-r0", Less),
        ("1.0-r1", "1.0_p1", Less), // the revision (kind 6) continues less than a suffix (3)
        ("1.07-r1", "1.07.5", Less),
        ("4.5_p1-r1", "4.5_p1", Greater),
        // Commit hashes: compared as text, and continuing the version.
        ("1.0~abc", "1.0", Greater),
        ("1.0~abc", "1.0~abd", Less),
        ("1.0~abc-r1", "1.0~abd", Less),
        ("1.0~0", "1.0~00", Less),
        ("1.0~abc", "1.0-r1", Greater), // the lower kind continues greater: hash 5, revision 6
        ("1.0_rc1~abc", "1.0_rc1", Greater),
        ("1.0~abc", "1.0.1", Less),
    ];

    #[test]
    fn golden_table() {
        assert!(GOLDEN.len() >= 60);
        for &(a, b, want) in GOLDEN {
            let (va, vb) = (parse(a).unwrap(), parse(b).unwrap());
            assert_eq!(va.compare(&vb), want, "{a} vs {b}");
            assert_eq!(vb.compare(&va), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn what_apk_refuses() {
        for text in [
            "a",
            "1.",
            "1..2",
            ".1",
            "1a1",
            "1ab",
            "1A",
            "1_foo",
            "1_alphabeta",
            "1_pr",
            "1_",
            "1-r",
            "1-r1a",
            "1-1",
            "1_alpha.1",
            "1.0-r1-r2",
            "1~",
            "1~g",
            "1~ABC",
            "1.0 ",
            "1.0a.1",
            "1.0_p1.2",
            "1.0-r1_p1",
            "1.0~abc_p1",
            "1.0~abc~def",
            "v1.0",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        for text in ["0", "1_alpha_beta_p", "1.2.3a_rc1_p2~cafe-r3", "1-r0"] {
            assert!(parse(text).is_ok(), "{text:?}");
        }
    }
}
