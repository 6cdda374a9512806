//! The vulnerability database's records and how an inventory is matched against them.
//!
//! Three sources are read ([`source`]): OSV records (osv.dev's `all.zip` exports, or
//! directories of OSV JSON), the Debian Security Tracker's JSON and Alpine's secdb. Each is
//! turned into [`Advisory`] values, one shape for all of them, which the MetaStore keeps as
//! JSON, indexed by `(ecosystem, name)` of every package an advisory names. [`matching`]
//! evaluates an inventory's packages against the advisories found for them.
//!
//! Ecosystems are kept in one canonical spelling ([`canonical_ecosystem`]): OSV's
//! (`Debian:12`, `Alpine:v3.18`, `PyPI`, `Go`...), with Ubuntu's `:LTS` suffix dropped so
//! that `Ubuntu:18.04` names the release whatever its support status. OS packages are keyed by
//! their source package, language packages by their name as the ecosystem normalises it.

pub mod alpine;
pub mod debian;
pub mod matching;
pub mod osv;
pub mod source;

use serde::{Deserialize, Serialize};

/// One vulnerability record, as stored: an OSV record, one CVE of one source package of the
/// Debian tracker, or one CVE of one package of an Alpine secdb file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    /// The id shown to users: the OSV id, or the CVE of a tracker or secdb entry.
    pub id: String,
    /// Where it came from: `osv`, `debian-tracker` or `alpine-secdb`.
    pub source: String,
    /// Ids of the same vulnerability in other databases (OSV `aliases`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Records this one was derived from (OSV `upstream`), shown but not merged on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Ratings of the whole record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<Rating>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    pub affected: Vec<Affected>,
}

/// What a report shows of a record beside what matching reads: kept apart in the database
/// so that a match reads and parses only the part it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
}

impl Advisory {
    /// Takes the descriptive part out (see [`Info`]).
    pub fn take_info(&mut self) -> Info {
        Info {
            summary: self.summary.take(),
            details: self.details.take(),
            references: std::mem::take(&mut self.references),
        }
    }
}

/// A severity as a record states it: a CVSS vector, or a word of the distribution or GHSA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    pub kind: RatingKind,
    /// The vector (`CVSS:3.1/AV:N/...`) or the word (`high`, `MODERATE`, `low**`).
    pub value: String,
    /// Who rated: `ubuntu`, `debian`, `ghsa`, or the record's id for CVSS vectors.
    pub by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatingKind {
    Cvss,
    /// The distribution's own rating (Debian urgency, Ubuntu priority, Red Hat...).
    Distribution,
    /// GitHub's rating of a reviewed advisory (`database_specific.severity`).
    Ghsa,
}

/// One package an advisory names, in one ecosystem (with release for OS packages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Affected {
    /// Canonical ecosystem (see [`canonical_ecosystem`]).
    pub ecosystem: String,
    /// Canonical package name (see [`canonical_name`]); the source package for OS packages.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Range>,
    /// Versions listed one by one (OSV `versions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// What the distribution says of a package with no fix (Debian tracker statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Ratings of this package only (OSV `affected[].severity`, the tracker's urgency).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<Rating>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub kind: RangeKind,
    pub events: Vec<Event>,
}

/// OSV range types that can be evaluated without a repository (`GIT` ranges are dropped on
/// import: they need the commit graph, and every ecosystem's records that have them also carry
/// `ECOSYSTEM` or `SEMVER` ranges or `versions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeKind {
    /// SemVer 2.0 precedence, whatever the ecosystem.
    Semver,
    /// The ecosystem's own ordering.
    Ecosystem,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

/// Whether a found vulnerability can be fixed by an upgrade, and if not, why (the statuses
/// Trivy reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A fixed version exists.
    Fixed,
    /// Affected, and no fix yet.
    Affected,
    /// The distribution decided not to fix it (tracker `nodsa_reason: ignored`).
    WillNotFix,
    /// The fix is postponed to a later point release (tracker `nodsa_reason: postponed`).
    FixDeferred,
    /// The release is no longer supported for this package (tracker urgency `end-of-life`).
    EndOfLife,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Fixed => "fixed",
            Status::Affected => "affected",
            Status::WillNotFix => "will_not_fix",
            Status::FixDeferred => "fix_deferred",
            Status::EndOfLife => "end_of_life",
        }
    }
}

/// An advisory with the feed it belongs to and its key there. An import of a feed replaces
/// the feed: keys it no longer has are withdrawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `osv:<Ecosystem>` (the ecosystem of the first package, without release), e.g.
    /// `osv:PyPI`, `osv:Debian`; `debian-tracker`; `alpine-secdb:<release>/<repository>`.
    pub feed: String,
    /// Unique in the feed: the OSV id, `<source package>/<CVE>`, `<package>/<CVE>`.
    pub key: String,
    pub advisory: Advisory,
}

/// OSV's ecosystem string in the spelling the database indexes by: Ubuntu's `:LTS` suffix is
/// dropped (`Ubuntu:18.04:LTS` and `Ubuntu:18.04` are one release), surrounding space trimmed.
pub fn canonical_ecosystem(ecosystem: &str) -> String {
    let e = ecosystem.trim();
    match e.strip_suffix(":LTS") {
        Some(base) if e.starts_with("Ubuntu:") => base.to_owned(),
        _ => e.to_owned(),
    }
}

/// The ecosystem without its release: `Debian:12` → `Debian`, `Ubuntu:Pro:18.04` → `Ubuntu`.
pub fn ecosystem_base(ecosystem: &str) -> &str {
    ecosystem.split(':').next().unwrap_or(ecosystem)
}

/// A package name as its ecosystem compares names: PyPI's PEP 503 normalisation (lower case,
/// runs of `-_.` as one `-`), NuGet's and Packagist's case-insensitivity; others as given.
pub fn canonical_name(ecosystem: &str, name: &str) -> String {
    let name = name.trim();
    match ecosystem_base(ecosystem) {
        "PyPI" => {
            let mut out = String::with_capacity(name.len());
            let mut sep = false;
            for c in name.chars() {
                if matches!(c, '-' | '_' | '.') {
                    sep = true;
                    continue;
                }
                if sep {
                    out.push('-');
                }
                sep = false;
                out.extend(c.to_lowercase());
            }
            if sep {
                out.push('-');
            }
            out
        }
        "NuGet" | "Packagist" => name.to_lowercase(),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ubuntu_lts_suffix_is_dropped_and_other_ecosystems_kept() {
        assert_eq!(canonical_ecosystem("Ubuntu:18.04:LTS"), "Ubuntu:18.04");
        assert_eq!(
            canonical_ecosystem("Ubuntu:Pro:18.04:LTS"),
            "Ubuntu:Pro:18.04"
        );
        assert_eq!(canonical_ecosystem("Ubuntu:22.10"), "Ubuntu:22.10");
        assert_eq!(canonical_ecosystem("Alpine:v3.18"), "Alpine:v3.18");
        assert_eq!(ecosystem_base("Debian:12"), "Debian");
        assert_eq!(ecosystem_base("PyPI"), "PyPI");
    }

    #[test]
    fn names_are_normalised_as_the_ecosystem_compares_them() {
        assert_eq!(
            canonical_name("PyPI", "Zope.Interface__x"),
            "zope-interface-x"
        );
        assert_eq!(canonical_name("PyPI", "requests"), "requests");
        assert_eq!(
            canonical_name("NuGet", "Newtonsoft.Json"),
            "newtonsoft.json"
        );
        assert_eq!(canonical_name("npm", "@Scope/Pkg"), "@Scope/Pkg");
    }
}
