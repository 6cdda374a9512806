//! NuGet versions, parsed as `NuGetVersion.TryParse` and ordered as `VersionComparer.Default`
//! of NuGet.Versioning: 2 to 4 numeric parts (missing ones are 0), each a non-negative
//! 32-bit integer as `System.Version` reads it (leading zeros and surrounding whitespace
//! allowed), then optional `-` release labels and `+` metadata, which is ignored.
//!
//! Release labels compare SemVer 2.0 style but case-insensitively: a version with labels
//! sorts before the same version without; labels that `int.TryParse` reads (an optional `-`
//! and digits within 32 bits, so `-1` too) compare as numbers before the others, which
//! compare ordinally ignoring case; more labels win when the shared ones are equal.

use std::cmp::Ordering;

#[derive(Clone, Debug)]
pub(super) struct NuGetVersion {
    numbers: [i32; 4],
    labels: Vec<String>,
}

impl NuGetVersion {
    pub(super) fn compare(&self, other: &Self) -> Ordering {
        self.numbers.cmp(&other.numbers).then_with(|| {
            match (self.labels.is_empty(), other.labels.is_empty()) {
                (true, true) => Ordering::Equal,
                (false, true) => Ordering::Less,
                (true, false) => Ordering::Greater,
                (false, false) => {
                    for (a, b) in self.labels.iter().zip(&other.labels) {
                        let order = compare_label(a, b);
                        if order != Ordering::Equal {
                            return order;
                        }
                    }
                    self.labels.len().cmp(&other.labels.len())
                }
            }
        })
    }
}

fn compare_label(a: &str, b: &str) -> Ordering {
    match (label_number(a), label_number(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => {
            let upper = |s: &str| {
                s.bytes()
                    .map(|c| c.to_ascii_uppercase())
                    .collect::<Vec<_>>()
            };
            upper(a).cmp(&upper(b))
        }
    }
}

/// `int.TryParse` on a label, which holds only `[0-9A-Za-z-]`: an optional minus sign and
/// digits, within the range of an `int`.
fn label_number(label: &str) -> Option<i32> {
    let digits = label.strip_prefix('-').unwrap_or(label);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let value: i64 = match digits.trim_start_matches('0') {
        "" => 0,
        d if d.len() > 10 => return None,
        d => d.parse().ok()?,
    };
    let value = if label.starts_with('-') {
        -value
    } else {
        value
    };
    i32::try_from(value).ok()
}

/// `IsValidPart`: not empty, `[0-9A-Za-z-]` only, and (for labels) no leading zero in an
/// all-digit part.
fn is_valid_part(part: &str, allow_leading_zeros: bool) -> bool {
    let all_digits = part.bytes().all(|c| c.is_ascii_digit());
    let leading_zero = part.len() > 1 && part.starts_with('0') && all_digits;
    !part.is_empty()
        && (allow_leading_zeros || !leading_zero)
        && part.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// `System.Version`'s component: `int.TryParse` with `NumberStyles.Integer` (whitespace
/// around, an optional sign) and not negative.
fn version_component(text: &str) -> Option<i32> {
    let is_space = |c: char| matches!(c, '\t'..='\r' | ' ');
    let trimmed = text.trim_matches(is_space);
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let value: i32 = match digits.trim_start_matches('0') {
        "" => 0,
        d if d.len() > 10 => return None,
        d => d.parse().ok()?,
    };
    (!negative || value == 0).then_some(value)
}

pub(super) fn parse(text: &str) -> Result<NuGetVersion, String> {
    let trimmed = text.trim();
    let (version, labels, metadata) = parse_sections(trimmed);
    let version = match version {
        Some(v) if !v.is_empty() => v,
        _ => return Err("no version number".to_owned()),
    };
    let version = if version.contains('.') {
        version.to_owned()
    } else {
        format!("{version}.0")
    };
    let parts: Vec<&str> = version.split('.').collect();
    if !(2..=4).contains(&parts.len()) {
        return Err("not 2 to 4 dot-separated numbers".to_owned());
    }
    let mut numbers = [0; 4];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        *slot = version_component(part)
            .ok_or_else(|| format!("{part:?} is not a number from 0 to 2147483647"))?;
    }
    let labels = labels.unwrap_or_default();
    if let Some(bad) = labels.iter().find(|l| !is_valid_part(l, false)) {
        return Err(format!(
            "release label {bad:?} is empty, not [0-9A-Za-z-] or has a leading zero"
        ));
    }
    if let Some(metadata) = metadata
        && !metadata.split('.').all(|p| is_valid_part(p, true))
    {
        return Err(format!(
            "metadata {metadata:?} is not dot-separated [0-9A-Za-z-]+"
        ));
    }
    Ok(NuGetVersion {
        numbers,
        labels: labels.into_iter().map(str::to_owned).collect(),
    })
}

/// `ParseSections`, character for character: the version runs to the first `-` or `+` (or
/// to the end, the last character included even when it is one of them), the labels to the
/// next `+` (or the end), the metadata to the end.
fn parse_sections(value: &str) -> (Option<&str>, Option<Vec<&str>>, Option<&str>) {
    let (mut version, mut labels, mut metadata) = (None, None, None);
    let mut dash: Option<usize> = None;
    let mut plus: Option<usize> = None;
    let chars: Vec<(usize, char)> = value.char_indices().collect();
    for (n, &(i, c)) in chars.iter().enumerate() {
        let end = n == chars.len() - 1;
        let end_pos = if end { value.len() } else { i };
        match (dash, plus) {
            (None, _) => {
                if end || c == '-' || c == '+' {
                    version = Some(&value[..end_pos]);
                    dash = Some(i);
                    if c == '+' {
                        plus = Some(i);
                    }
                }
            }
            (Some(d), None) => {
                if end || c == '+' {
                    labels = Some(value[d + 1..end_pos].split('.').collect());
                    plus = Some(i);
                }
            }
            (Some(_), Some(p)) => {
                if end {
                    metadata = Some(&value[p + 1..]);
                }
            }
        }
    }
    (version, labels, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        parse(a).unwrap().compare(&parse(b).unwrap())
    }

    #[test]
    fn nuget_versioning_test_pairs() {
        // From NuGet.Versioning.Test (VersionComparerTests, SemanticVersionTests).
        let cases = [
            ("1.0.0", "1.0.0", Equal),
            ("1.0", "1.0.0.0", Equal), // missing parts are 0
            ("1", "1.0.0", Equal),
            ("1.0.0", "1.0.0.1", Less),          // the fourth part counts
            ("1.0.0-BETA", "1.0.0-beta", Equal), // labels ignore case
            ("1.0.0-beta+A", "1.0.0-beta+B", Equal), // metadata is ignored
            ("1.0.0-alpha", "1.0.0-alpha.1", Less),
            ("1.0.0-alpha.1", "1.0.0-alpha.beta", Less),
            ("1.0.0-alpha.beta", "1.0.0-beta", Less),
            ("1.0.0-beta.2", "1.0.0-beta.11", Less),
            ("1.0.0-beta.11", "1.0.0-rc.1", Less),
            ("1.0.0-rc.1", "1.0.0", Less),
            ("1.0.0-1", "1.0.0-a", Less),  // numeric labels first
            ("1.0.0--1", "1.0.0-0", Less), // "-1" reads as the number -1
            ("1.0.0-2147483648", "1.0.0-1", Greater), // too big for an int: a string label
            ("1.0.0-2147483648", "1.0.0-a", Less), // which sorts as text, digits first
            ("01.002.0003", "1.2.3", Equal),
            (" 1.0.0 ", "1.0.0", Equal),
            ("1. 2", "1.2", Equal), // System.Version allows blanks around a part
            ("2147483647.0", "1.0", Greater),
            ("1.0.0-a-b", "1.0.0-a-c", Less),
            ("1.0.0-A.b", "1.0.0-a.C", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn what_nuget_refuses() {
        for text in [
            "a",
            "1.0.0.0.0",
            "1.0-",
            "1.0+",
            "1.0.0-01",
            "1.0.0-a..b",
            "1.0.0-a_b",
            "1.0.0+a+b",
            "-1.0",
            "1.-1",
            "2147483648.0",
            "1.0.0-",
            "1.0.0-+x",
            "1..0",
            "1.0.",
            ".1",
            " ",
            "1 0",
            "v1.0",
            "1.0.0-é",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        for text in [
            "1.0.0+01",
            "1.0.0-0",
            "1.0.0-0a",
            "1.0.0+a-b.c",
            "1.0.0-a+b",
        ] {
            assert!(parse(text).is_ok(), "{text:?}");
        }
    }
}
