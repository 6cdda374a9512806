//! Maven versions, ordered as `ComparableVersion` of maven-artifact 3.8.7 (the class Maven
//! itself uses to pick the newest artifact).
//!
//! The lowercased text is split into items at `.`, at `-` (which also opens a nested list)
//! and at each change between digits and non-digits (which opens a nested list too). Numbers
//! compare numerically; qualifiers in the order
//! `alpha (a) < beta (b) < milestone (m) < rc (cr) < snapshot < "" (ga, final, release) < sp`,
//! then unknown qualifiers in lexical order; `a1`, `b1`, `m1` are alpha-1, beta-1,
//! milestone-1. Trailing "null" items (0, "", empty lists) are dropped, so `1.0 == 1`. Between
//! kinds: a number beats a list, which beats a qualifier.
//!
//! Faithful quirks of 3.8.7: a digit is any Unicode decimal digit the JVM knows (`Character.
//! isDigit`); a number is an int, long or big integer by its length once ASCII `0`s are
//! stripped, and numbers of different classes compare by class, so an all-zero run of ten
//! or more digits (kept whole) outranks every short number.

use std::cmp::Ordering;

use super::Decimal;

#[derive(Clone, Debug)]
pub(super) struct MavenVersion {
    items: Vec<Item>,
}

impl MavenVersion {
    pub(super) fn compare(&self, other: &Self) -> Ordering {
        compare_lists(&self.items, Some(&other.items))
    }
}

#[derive(Clone, Debug)]
enum Item {
    /// Class 0 (int, up to 9 digits), 1 (long, up to 18) or 2 (big integer), and the value.
    Number(u8, Decimal),
    Qualifier(Qualifier),
    List(Vec<Item>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Qualifier {
    /// Index into [`KNOWN_QUALIFIERS`].
    Known(usize),
    Unknown(String),
}

const KNOWN_QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];
/// The index of the release qualifier "", the pivot that `1-rc < 1 < 1-sp` turns on.
const RELEASE: usize = 5;

impl Qualifier {
    fn new(text: &str, followed_by_digit: bool) -> Qualifier {
        let text = match text {
            "a" if followed_by_digit => "alpha",
            "b" if followed_by_digit => "beta",
            "m" if followed_by_digit => "milestone",
            "ga" | "final" | "release" => "",
            "cr" => "rc",
            other => other,
        };
        match KNOWN_QUALIFIERS.iter().position(|&q| q == text) {
            Some(i) => Qualifier::Known(i),
            None => Qualifier::Unknown(text.to_owned()),
        }
    }

    /// `comparableQualifier` ordering: known ones by index ("0".."6"), unknown ones after
    /// ("7-" + text), unknown among themselves as Java compares strings (UTF-16 units).
    fn compare(&self, other: &Qualifier) -> Ordering {
        match (self, other) {
            (Qualifier::Known(a), Qualifier::Known(b)) => a.cmp(b),
            (Qualifier::Known(_), Qualifier::Unknown(_)) => Ordering::Less,
            (Qualifier::Unknown(_), Qualifier::Known(_)) => Ordering::Greater,
            (Qualifier::Unknown(a), Qualifier::Unknown(b)) => {
                a.encode_utf16().cmp(b.encode_utf16())
            }
        }
    }

    fn compare_to_release(&self) -> Ordering {
        self.compare(&Qualifier::Known(RELEASE))
    }
}

impl Item {
    fn is_null(&self) -> bool {
        match self {
            Item::Number(_, n) => n.is_zero(),
            Item::Qualifier(q) => *q == Qualifier::Known(RELEASE),
            Item::List(items) => items.is_empty(),
        }
    }

    /// `Item.compareTo`, where `None` stands for the missing item of a shorter list.
    fn compare(&self, other: Option<&Item>) -> Ordering {
        match (self, other) {
            (Item::Number(_, n), None) => {
                if n.is_zero() {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                }
            }
            (Item::Qualifier(q), None) => q.compare_to_release(),
            (Item::List(items), None) => compare_lists(items, None),
            (Item::Number(ca, a), Some(Item::Number(cb, b))) => ca.cmp(cb).then_with(|| a.cmp(b)),
            (Item::Number(..), Some(_)) => Ordering::Greater,
            (Item::Qualifier(a), Some(Item::Qualifier(b))) => a.compare(b),
            (Item::Qualifier(_), Some(_)) => Ordering::Less,
            (Item::List(a), Some(Item::List(b))) => compare_lists(a, Some(b)),
            (Item::List(_), Some(Item::Number(..))) => Ordering::Less,
            (Item::List(_), Some(Item::Qualifier(_))) => Ordering::Greater,
        }
    }
}

/// `ListItem.compareTo`: against a missing item, the first item that is not null decides.
fn compare_lists(left: &[Item], right: Option<&[Item]>) -> Ordering {
    let Some(right) = right else {
        return left
            .iter()
            .map(|item| item.compare(None))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal);
    };
    for i in 0..left.len().max(right.len()) {
        let order = match (left.get(i), right.get(i)) {
            (Some(l), r) => l.compare(r),
            (None, Some(r)) => r.compare(None).reverse(),
            (None, None) => Ordering::Equal,
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// `ListItem.normalize`: drops null items from the end, looking past non-null lists.
fn normalize(items: &mut Vec<Item>) {
    let mut i = items.len();
    while i > 0 {
        i -= 1;
        if items[i].is_null() {
            items.remove(i);
        } else if !matches!(items[i], Item::List(_)) {
            break;
        }
    }
}

/// The first code point of each run of ten decimal digits in the Basic Multilingual Plane, as
/// `Character.isDigit(char)` of Java 17 (Unicode 13) knows them. Maven reads UTF-16 units,
/// so digits outside the BMP are never digits to it.
const DIGIT_ZEROS: [u32; 37] = [
    0x0030, 0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
    0x0D66, 0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80,
    0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
    0xFF10,
];

fn java_digit(c: char) -> Option<u8> {
    let c = c as u32;
    DIGIT_ZEROS
        .iter()
        .find(|&&zero| (zero..zero + 10).contains(&c))
        .map(|&zero| (c - zero) as u8)
}

/// `parseItem(true, …)`: the class by length after stripping ASCII zeros (an all-zero run is
/// kept whole), the value from the digits' numeric values.
fn number(digits: &[char]) -> Item {
    let zeros = digits.iter().take_while(|&&c| c == '0').count();
    let stripped_len = if zeros == digits.len() {
        digits.len()
    } else {
        digits.len() - zeros
    };
    let class = match stripped_len {
        0..=9 => 0,
        10..=18 => 1,
        _ => 2,
    };
    let value: String = digits
        .iter()
        .map(|&c| char::from(b'0' + java_digit(c).expect("only digits reach number()")))
        .collect();
    Item::Number(class, Decimal::new(&value))
}

fn current(stack: &mut [Vec<Item>]) -> &mut Vec<Item> {
    stack
        .last_mut()
        .expect("the stack always holds the top-level list")
}

fn item(is_digit: bool, chars: &[char]) -> Item {
    if is_digit {
        number(chars)
    } else {
        Item::Qualifier(Qualifier::new(&chars.iter().collect::<String>(), false))
    }
}

/// `ComparableVersion.parseVersion`. Every text is a Maven version; nested lists are kept as
/// a stack whose last element is the list being filled, folded back into its parent at the
/// end (a new list is always the last item of its parent).
pub(super) fn parse(text: &str) -> Result<MavenVersion, String> {
    let chars: Vec<char> = text.to_lowercase().chars().collect();
    let mut stack: Vec<Vec<Item>> = vec![Vec::new()];
    let mut is_digit = false;
    let mut start = 0;
    for (i, &c) in chars.iter().enumerate() {
        if c == '.' || c == '-' {
            let next = if i == start {
                Item::Number(0, Decimal::zero())
            } else {
                item(is_digit, &chars[start..i])
            };
            current(&mut stack).push(next);
            start = i + 1;
            if c == '-' {
                stack.push(Vec::new());
            }
        } else if java_digit(c).is_some() {
            if !is_digit && i > start {
                if !current(&mut stack).is_empty() {
                    stack.push(Vec::new());
                }
                let qualifier: String = chars[start..i].iter().collect();
                current(&mut stack).push(Item::Qualifier(Qualifier::new(&qualifier, true)));
                start = i;
                stack.push(Vec::new());
            }
            is_digit = true;
        } else {
            if is_digit && i > start {
                let next = number(&chars[start..i]);
                current(&mut stack).push(next);
                start = i;
                stack.push(Vec::new());
            }
            is_digit = false;
        }
    }
    if chars.len() > start {
        if !is_digit && !current(&mut stack).is_empty() {
            stack.push(Vec::new());
        }
        let last = item(is_digit, &chars[start..]);
        current(&mut stack).push(last);
    }
    let mut items = stack
        .pop()
        .expect("the stack always holds the top-level list");
    normalize(&mut items);
    while let Some(mut parent) = stack.pop() {
        parent.push(Item::List(items));
        normalize(&mut parent);
        items = parent;
    }
    Ok(MavenVersion { items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        parse(a).unwrap().compare(&parse(b).unwrap())
    }

    #[test]
    fn comparable_version_test_orderings() {
        // The two chains of Maven's ComparableVersionTest, oldest first.
        let qualifiers = [
            "1-alpha2snapshot",
            "1-alpha2",
            "1-alpha-123",
            "1-beta-2",
            "1-beta123",
            "1-m2",
            "1-m11",
            "1-rc",
            "1-cr2",
            "1-rc123",
            "1-SNAPSHOT",
            "1",
            "1-sp",
            "1-sp2",
            "1-sp123",
            "1-abc",
            "1-def",
            "1-pom-1",
            "1-1-snapshot",
            "1-1",
            "1-2",
            "1-123",
        ];
        let numbers = [
            "2.0", "2.0.a", "2-1", "2.0.2", "2.0.123", "2.1.0", "2.1-a", "2.1b", "2.1-c", "2.1-1",
            "2.1.0.1", "2.2", "2.123", "11.a2", "11.a11", "11.b2", "11.b11", "11.m2", "11.m11",
            "11", "11.a", "11b", "11c", "11m",
        ];
        for chain in [&qualifiers[..], &numbers[..]] {
            for (i, a) in chain.iter().enumerate() {
                for b in &chain[i + 1..] {
                    assert_eq!(cmp(a, b), Less, "{a} < {b}");
                    assert_eq!(cmp(b, a), Greater, "{b} > {a}");
                }
            }
        }
    }

    #[test]
    fn equal_spellings() {
        // ComparableVersionTest.testVersionsEqual and friends.
        let groups: &[&[&str]] = &[
            &[
                "1",
                "1.0",
                "1.0.0",
                "1-0",
                "1-0.0",
                "1.0-0",
                "1-ga",
                "1.ga",
                "1-final",
                "1-release",
            ],
            &["1a", "1-a", "1.0-a", "1.0.0-a"],
            &[
                "1alpha1",
                "1-alpha-1",
                "1a1",
                "1-a1",
                "1.0-alpha1",
                "1-ALPHA1",
            ],
            &["1cr", "1rc", "1-cr", "1.0-rc"],
            &["1x", "1-x", "1.0-x"],
            &["1.0ga", "1.0.ga", "1.ga", "1-ga"],
            &["1m3", "1milestone3", "1-milestone-3", "1.0-m3"],
            &["2.0.0", "2.0", "2"],
        ];
        for group in groups {
            for a in *group {
                for b in *group {
                    assert_eq!(cmp(a, b), Equal, "{a} == {b}");
                }
            }
        }
    }

    #[test]
    fn quirks_of_3_8_7() {
        assert_eq!(cmp("1.0000000000", "1"), Equal); // an all-zero long is still zero
        assert_eq!(cmp("1.0000000000.1", "1.5.1"), Greater); // but outranks a short int
        assert_eq!(cmp("1.12345678901", "1.999999999"), Greater); // long beats int
        assert_eq!(cmp("1.\u{661}\u{662}", "1.12"), Equal); // Arabic-Indic digits
        assert_eq!(cmp("1.\u{ff11}", "1.1"), Equal); // fullwidth digits
        assert_eq!(cmp("1.\u{1d7cf}", "1.1"), Less); // no digit outside the BMP: a qualifier list
        assert_eq!(cmp("1.a", "1-a"), Equal);
        assert_eq!(cmp("1..1", "1.0.1"), Equal);
        assert_eq!(cmp("-1", "0-1"), Equal);
        assert_eq!(cmp("1.0.RC1", "1.0-rc1"), Equal);
    }
}
