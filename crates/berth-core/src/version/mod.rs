//! Version orderings of the package ecosystems a vulnerability matcher meets: Debian, RPM,
//! Alpine, SemVer (npm), PEP 440, Go, Maven, RubyGems and NuGet. Each scheme lives in its own
//! file and reproduces the ordering of the ecosystem's own tool, quirks included (dpkg's
//! `verrevcmp`, `rpmvercmp`, apk-tools' `version.c`, node-semver, Python `packaging`,
//! `golang.org/x/mod/semver`, Maven's `ComparableVersion`, `Gem::Version`, NuGet.Versioning).
//! `tests/version_oracles.rs` checks the orderings against the real tools where they run here.
//!
//! Parsing never panics; it accepts what the tool accepts (dpkg and rpm compare almost
//! anything) and turns what the tool rejects, and the empty string, into [`InvalidVersion`].

use std::cmp::Ordering;
use std::fmt;

mod apk;
mod dpkg;
mod go;
mod maven;
mod nuget;
mod pep440;
mod rpm;
mod rubygems;
mod semver;

/// A version scheme: the ordering rules of one packaging ecosystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Debian and Ubuntu packages (`dpkg --compare-versions`).
    Dpkg,
    /// RPM packages, `[epoch:]version[-release]` (`rpmvercmp` on each part).
    Rpm,
    /// Alpine packages (apk-tools).
    Apk,
    /// SemVer 2.0 as node-semver orders it (npm and most OSV "SEMVER" ranges).
    SemVer,
    /// Python packages (PEP 440 as `packaging.version.Version` implements it).
    Pep440,
    /// Go modules (`v1.2.3`, pseudo-versions, `+incompatible`) and the Go toolchain
    /// (`go1.21.5`, `1.21rc2`).
    Go,
    /// Maven artifacts (`ComparableVersion` of maven-artifact 3.8).
    Maven,
    /// Ruby gems (`Gem::Version`).
    RubyGems,
    /// NuGet packages (`NuGetVersion`).
    NuGet,
}

impl Scheme {
    /// Every scheme, for tests and tables.
    pub const ALL: [Scheme; 9] = [
        Scheme::Dpkg,
        Scheme::Rpm,
        Scheme::Apk,
        Scheme::SemVer,
        Scheme::Pep440,
        Scheme::Go,
        Scheme::Maven,
        Scheme::RubyGems,
        Scheme::NuGet,
    ];
}

/// A version text that its scheme's tool would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{version:?} is not a {scheme:?} version: {reason}")]
pub struct InvalidVersion {
    pub scheme: Scheme,
    pub version: String,
    pub reason: String,
}

/// A parsed version of one scheme. Comparing versions of two schemes gives `None`.
#[derive(Clone, Debug)]
pub struct Version {
    text: String,
    parsed: Parsed,
}

/// The per-scheme parsed forms; each knows how to compare itself with its own kind.
#[derive(Clone, Debug)]
enum Parsed {
    Dpkg(dpkg::DpkgVersion),
    Rpm(rpm::RpmVersion),
    Apk(apk::ApkVersion),
    SemVer(semver::SemVer),
    Pep440(pep440::Pep440Version),
    Go(semver::SemVer),
    Maven(maven::MavenVersion),
    RubyGems(rubygems::GemVersion),
    NuGet(nuget::NuGetVersion),
}

impl Version {
    /// Parses `text` with the rules of `scheme`.
    pub fn parse(scheme: Scheme, text: &str) -> Result<Version, InvalidVersion> {
        let invalid = |reason: String| InvalidVersion {
            scheme,
            version: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("the version is empty".to_owned()));
        }
        let parsed = match scheme {
            Scheme::Dpkg => dpkg::parse(text).map(Parsed::Dpkg),
            Scheme::Rpm => rpm::parse(text).map(Parsed::Rpm),
            Scheme::Apk => apk::parse(text).map(Parsed::Apk),
            Scheme::SemVer => semver::parse_node(text).map(Parsed::SemVer),
            Scheme::Pep440 => pep440::parse(text).map(Parsed::Pep440),
            Scheme::Go => go::parse(text).map(Parsed::Go),
            Scheme::Maven => maven::parse(text).map(Parsed::Maven),
            Scheme::RubyGems => rubygems::parse(text).map(Parsed::RubyGems),
            Scheme::NuGet => nuget::parse(text).map(Parsed::NuGet),
        }
        .map_err(invalid)?;
        Ok(Version {
            text: text.to_owned(),
            parsed,
        })
    }

    pub fn scheme(&self) -> Scheme {
        match self.parsed {
            Parsed::Dpkg(_) => Scheme::Dpkg,
            Parsed::Rpm(_) => Scheme::Rpm,
            Parsed::Apk(_) => Scheme::Apk,
            Parsed::SemVer(_) => Scheme::SemVer,
            Parsed::Pep440(_) => Scheme::Pep440,
            Parsed::Go(_) => Scheme::Go,
            Parsed::Maven(_) => Scheme::Maven,
            Parsed::RubyGems(_) => Scheme::RubyGems,
            Parsed::NuGet(_) => Scheme::NuGet,
        }
    }

    /// The text as given to [`Version::parse`].
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Orders two versions of the same scheme as the scheme's tool does; `None` across schemes.
    /// `Equal` is the tool's equality: schemes that ignore build metadata or normalise
    /// spellings call distinct texts equal (`1.0` and `1.0.0`, `1.0a1` and `1.0alpha1`).
    pub fn compare(&self, other: &Version) -> Option<Ordering> {
        Some(match (&self.parsed, &other.parsed) {
            (Parsed::Dpkg(a), Parsed::Dpkg(b)) => a.compare(b),
            (Parsed::Rpm(a), Parsed::Rpm(b)) => a.compare(b),
            (Parsed::Apk(a), Parsed::Apk(b)) => a.compare(b),
            (Parsed::SemVer(a), Parsed::SemVer(b)) => a.compare(b),
            (Parsed::Pep440(a), Parsed::Pep440(b)) => a.compare(b),
            (Parsed::Go(a), Parsed::Go(b)) => a.compare(b),
            (Parsed::Maven(a), Parsed::Maven(b)) => a.compare(b),
            (Parsed::RubyGems(a), Parsed::RubyGems(b)) => a.compare(b),
            (Parsed::NuGet(a), Parsed::NuGet(b)) => a.compare(b),
            _ => return None,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses both texts with `scheme` and orders them.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Result<Ordering, InvalidVersion> {
    let a = Version::parse(scheme, a)?;
    let b = Version::parse(scheme, b)?;
    Ok(a.compare(&b)
        .expect("both versions were parsed with the same scheme"))
}

/// A non-negative integer of any length, kept as its decimal digits without leading zeros, so
/// that "007" == "7" and 30-digit numbers compare exactly (the tools that read into a machine
/// integer never see such numbers in real versions).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Decimal(String);

impl Decimal {
    /// `digits` must be ASCII digits (possibly empty, meaning zero).
    fn new(digits: &str) -> Decimal {
        Decimal(digits.trim_start_matches('0').to_owned())
    }

    fn zero() -> Decimal {
        Decimal(String::new())
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two runs of ASCII digits numerically, whatever their length and leading zeros.
fn cmp_digits(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn comparing_across_schemes_gives_none() {
        let a = Version::parse(Scheme::Dpkg, "1.0").unwrap();
        let b = Version::parse(Scheme::Rpm, "1.0").unwrap();
        assert_eq!(a.compare(&b), None);
        assert_eq!(a.compare(&a), Some(Ordering::Equal));
        assert_eq!(a.scheme(), Scheme::Dpkg);
        assert_eq!(b.as_str(), "1.0");
    }

    #[test]
    fn the_empty_string_is_invalid_in_every_scheme() {
        for scheme in Scheme::ALL {
            let err = Version::parse(scheme, "").unwrap_err();
            assert_eq!(err.scheme, scheme);
            assert_eq!(err.version, "");
        }
    }

    #[test]
    fn compare_reports_the_invalid_side() {
        let err = compare(Scheme::SemVer, "1.0.0", "1.0").unwrap_err();
        assert_eq!(err.version, "1.0");
        assert_eq!(
            err.to_string(),
            format!("\"1.0\" is not a SemVer version: {}", err.reason)
        );
    }

    #[test]
    fn decimals_ignore_leading_zeros_and_length_limits() {
        assert_eq!(Decimal::new("007"), Decimal::new("7"));
        assert!(Decimal::new("99999999999999999999999") < Decimal::new("100000000000000000000000"));
        assert!(Decimal::new("") == Decimal::zero() && Decimal::new("000").is_zero());
        assert_eq!(cmp_digits(b"0010", b"9"), Ordering::Greater);
    }

    /// Text that looks like versions often enough to reach deep into the parsers.
    fn version_like() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9a-zA-Z.~^+_:=! -]{0,24}",
            "[vV=]?[0-9]{1,3}(\\.[0-9]{1,3}){0,3}([-_.~^+][a-z0-9]{0,6}){0,3}",
            "[0-9\u{660}-\u{669}\u{ff10}-\u{ff19}\u{1d7ce}a-zA-Z\u{130}\u{3a3}.-]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// No input makes any parser panic, and what parses compares like an ordering:
        /// reflexive and antisymmetric.
        #[test]
        fn parsing_never_panics(a in version_like(), b in version_like()) {
            for scheme in Scheme::ALL {
                let (pa, pb) = (Version::parse(scheme, &a), Version::parse(scheme, &b));
                if let Ok(pa) = &pa {
                    prop_assert_eq!(pa.compare(pa), Some(Ordering::Equal), "{:?} {:?}", scheme, a);
                }
                if let (Ok(pa), Ok(pb)) = (&pa, &pb) {
                    let ab = pa.compare(pb).unwrap();
                    let ba = pb.compare(pa).unwrap();
                    prop_assert_eq!(ab, ba.reverse(), "{:?} {:?} {:?}", scheme, a, b);
                }
            }
        }
    }
}
