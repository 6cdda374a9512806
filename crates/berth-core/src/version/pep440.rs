//! Python versions as `packaging.version.Version` (packaging 26) parses, normalises and
//! orders them: `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]` with every spelling its
//! regular expression allows (a leading `v`, `alpha`/`beta`/`c`/`pre`/`preview` for the
//! pre-release letters, `rev`/`r`/`-N` for post-releases, `.`, `-` or `_` between the parts,
//! any letter case, surrounding whitespace). The regular expression uses possessive
//! quantifiers, so this parser never backtracks either.
//!
//! Ordering, as packaging's `_cmpkey`: epoch; release with trailing zeros dropped; then a
//! developmental release without pre- or post-release before every pre-release, pre-releases
//! (a < b < rc) before the release, post-releases after it, a `.devN` before what it is
//! attached to; a local version after the same public version, its segments compared as
//! numbers when all digits and as lowercase strings otherwise, strings first.
//!
//! Python refuses to convert runs of more than 4300 digits to an integer, so such versions
//! are refused here too.

use std::cmp::Ordering;

use super::Decimal;

/// CPython's default `sys.get_int_max_str_digits()`.
const MAX_DIGITS: usize = 4300;

#[derive(Clone, Debug)]
pub(super) struct Pep440Version {
    epoch: Decimal,
    /// Trailing zeros dropped: 1.0.0 == 1.
    release: Vec<Decimal>,
    /// 0 for a, 1 for b, 2 for rc.
    pre: Option<(u8, Decimal)>,
    post: Option<Decimal>,
    dev: Option<Decimal>,
    local: Option<Vec<LocalSegment>>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LocalSegment {
    /// Declared first: strings sort before numbers.
    Text(String),
    Number(Decimal),
}

impl Pep440Version {
    /// `(pre_rank, pre_n, post_rank, post_n, dev_rank, dev_n)` of `_cmpkey`.
    fn suffix_key(&self) -> (i8, Decimal, u8, Decimal, u8, Decimal) {
        let zero = Decimal::zero;
        let (pre_rank, pre_n) = match (&self.pre, &self.post, &self.dev) {
            (None, None, Some(_)) => (-1, zero()),
            (None, _, _) => (3, zero()),
            (Some((rank, n)), _, _) => (*rank as i8, n.clone()),
        };
        let (post_rank, post_n) = match &self.post {
            None => (0, zero()),
            Some(n) => (1, n.clone()),
        };
        let (dev_rank, dev_n) = match &self.dev {
            None => (1, zero()),
            Some(n) => (0, n.clone()),
        };
        (pre_rank, pre_n, post_rank, post_n, dev_rank, dev_n)
    }

    pub(super) fn compare(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| self.release.cmp(&other.release))
            .then_with(|| self.suffix_key().cmp(&other.suffix_key()))
            .then_with(|| self.local.cmp(&other.local))
    }
}

/// Python's `str.isspace`, which `\s` matches in a `str` pattern.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A cursor over the ASCII core of the version.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek_at(&self, at: usize) -> Option<u8> {
        self.s.get(at).copied()
    }

    fn is_separator(&self, at: usize) -> bool {
        matches!(self.peek_at(at), Some(b'.' | b'_' | b'-'))
    }

    /// Position after an optional separator at `at`.
    fn skip_separator(&self, at: usize) -> usize {
        if self.is_separator(at) { at + 1 } else { at }
    }

    fn digits_at(&self, at: usize) -> usize {
        self.s
            .get(at..)
            .map_or(0, |s| s.iter().take_while(|c| c.is_ascii_digit()).count())
    }

    fn alphanumerics_at(&self, at: usize) -> usize {
        self.s.get(at..).map_or(0, |s| {
            s.iter().take_while(|c| c.is_ascii_alphanumeric()).count()
        })
    }

    /// The first of `words` found at `at`, ignoring ASCII case, as a regex alternation picks.
    fn word_at(&self, at: usize, words: &[&'static str]) -> Option<&'static str> {
        words.iter().copied().find(|w| {
            self.s
                .get(at..at + w.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(w.as_bytes()))
        })
    }

    /// Reads a number of `len` digits at `at`, as Python's `int()` reads it.
    fn number(&self, at: usize, len: usize) -> Result<Decimal, String> {
        if len > MAX_DIGITS {
            return Err(format!("a number of more than {MAX_DIGITS} digits"));
        }
        let digits = std::str::from_utf8(&self.s[at..at + len]).expect("ASCII digits");
        Ok(Decimal::new(digits))
    }

    /// `[._-]? letters [._-]? digits?` for one of the `words`; the letters and the number.
    fn lettered(
        &self,
        words: &[&'static str],
    ) -> Result<Option<(&'static str, Decimal, usize)>, String> {
        let at = self.skip_separator(self.pos);
        let Some(word) = self.word_at(at, words) else {
            return Ok(None);
        };
        let at = self.skip_separator(at + word.len());
        let len = self.digits_at(at);
        Ok(Some((word, self.number(at, len)?, at + len)))
    }
}

pub(super) fn parse(text: &str) -> Result<Pep440Version, String> {
    let core = text.trim_matches(is_python_space);
    if !core.is_ascii() {
        return Err("not a PEP 440 version (non-ASCII characters)".to_owned());
    }
    let not_pep440 = |at: usize| {
        Err(format!(
            "not a PEP 440 version (stopped at byte {at} of {core:?})"
        ))
    };
    let mut c = Cursor {
        s: core.as_bytes(),
        pos: 0,
    };
    if matches!(c.peek_at(0), Some(b'v' | b'V')) {
        c.pos = 1;
    }

    let mut epoch = Decimal::zero();
    let len = c.digits_at(c.pos);
    if len > 0 && c.peek_at(c.pos + len) == Some(b'!') {
        epoch = c.number(c.pos, len)?;
        c.pos += len + 1;
    }

    let mut release = Vec::new();
    let len = c.digits_at(c.pos);
    if len == 0 {
        return not_pep440(c.pos);
    }
    release.push(c.number(c.pos, len)?);
    c.pos += len;
    while c.peek_at(c.pos) == Some(b'.') && c.digits_at(c.pos + 1) > 0 {
        let len = c.digits_at(c.pos + 1);
        release.push(c.number(c.pos + 1, len)?);
        c.pos += 1 + len;
    }
    while release.last().is_some_and(Decimal::is_zero) {
        release.pop();
    }

    let mut pre = None;
    let pre_words = ["alpha", "a", "beta", "b", "preview", "pre", "c", "rc"];
    if let Some((word, n, end)) = c.lettered(&pre_words)? {
        let rank = match word {
            "alpha" | "a" => 0,
            "beta" | "b" => 1,
            _ => 2,
        };
        pre = Some((rank, n));
        c.pos = end;
    }

    let mut post = None;
    let len = c.digits_at(c.pos + 1);
    if c.peek_at(c.pos) == Some(b'-') && len > 0 {
        post = Some(c.number(c.pos + 1, len)?);
        c.pos += 1 + len;
    } else if let Some((_, n, end)) = c.lettered(&["post", "rev", "r"])? {
        post = Some(n);
        c.pos = end;
    }

    let mut dev = None;
    if let Some((_, n, end)) = c.lettered(&["dev"])? {
        dev = Some(n);
        c.pos = end;
    }

    let mut local = None;
    if c.peek_at(c.pos) == Some(b'+') && c.alphanumerics_at(c.pos + 1) > 0 {
        let mut at = c.pos + 1;
        let mut segments = Vec::new();
        loop {
            let len = c.alphanumerics_at(at);
            let part = std::str::from_utf8(&c.s[at..at + len]).expect("ASCII alphanumerics");
            segments.push(if part.bytes().all(|b| b.is_ascii_digit()) {
                LocalSegment::Number(c.number(at, len)?)
            } else {
                LocalSegment::Text(part.to_ascii_lowercase())
            });
            at += len;
            if c.is_separator(at) && c.alphanumerics_at(at + 1) > 0 {
                at += 1;
            } else {
                break;
            }
        }
        local = Some(segments);
        c.pos = at;
    }

    if c.pos != core.len() {
        return not_pep440(c.pos);
    }
    Ok(Pep440Version {
        epoch,
        release,
        pre,
        post,
        dev,
        local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        parse(a).unwrap().compare(&parse(b).unwrap())
    }

    #[test]
    fn pep440_ordering_examples() {
        // The order of PEP 440's "Summary of permitted suffixes and relative ordering" and
        // packaging's test_version.py, lowest first.
        let chain = [
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0b2-346",
            "1.0c1.dev456",
            "1.0c1",
            "1.0rc2",
            "1.0c3",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.1.dev1",
            "1.1",
            "1!0.1",
        ];
        for w in chain.windows(2) {
            assert_eq!(cmp(w[0], w[1]), Less, "{} < {}", w[0], w[1]);
            assert_eq!(cmp(w[1], w[0]), Less.reverse());
        }
    }

    #[test]
    fn normalisation() {
        let equal = [
            ("1.0", "1.0.0.0"),
            ("1.0", "v1.0"),
            ("1.0", "  1.0\n"),
            ("1.0", "0!1.0"),
            ("1.0a1", "1.0alpha1"),
            ("1.0a1", "1.0-A-1"),
            ("1.0a", "1.0a0"),
            ("1.0b1", "1.0.beta.1"),
            ("1.0rc1", "1.0c1"),
            ("1.0rc1", "1.0pre1"),
            ("1.0rc1", "1.0preview_1"),
            ("1.0.post1", "1.0-1"),
            ("1.0.post1", "1.0rev1"),
            ("1.0.post1", "1.0.r1"),
            ("1.0.post0", "1.0-post"),
            ("1.0.dev0", "1.0-dev"),
            ("1.0+abc", "1.0+ABC"),
            ("1.0+1", "1.0+01"),
            ("1.0+a.1", "1.0+a-1"),
            ("1.01", "1.1"),
            ("1.0a.dev", "1.0a0.dev0"),
        ];
        for (a, b) in equal {
            assert_eq!(cmp(a, b), Equal, "{a} == {b}");
        }
    }

    #[test]
    fn what_packaging_refuses() {
        for text in [
            "1.",
            ".1",
            "1..2",
            "1.0+",
            "1.0+a..b",
            "1.0+a_",
            "1.0a1a",
            "1.0-",
            "1.0.",
            "v",
            "1.0 a",
            "1!",
            "!1",
            "1.0 +a",
            "1.0+é",
            "1,0",
            "1.0.x",
            "vv1",
            "1.0alpha.beta",
            "1.0-r-1-",
            "1.0dev1dev2",
            "1_0",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        for text in [
            "1.0-dev-",
            "1.0.post.dev.",
            "1.0-1",
            "1.0a-1",
            "1.0a.-1",
            "1.0.post.dev",
            "V1.0",
            "1.0\u{2003}",
            "1.0\u{1f}",
        ] {
            assert!(parse(text).is_ok(), "{text:?}");
        }
        let long = "1".repeat(MAX_DIGITS + 1);
        assert!(parse(&long).is_err());
        assert!(parse(&"1".repeat(MAX_DIGITS)).is_ok());
    }
}
