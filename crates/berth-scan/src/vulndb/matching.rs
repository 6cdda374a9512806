//! Matching installed packages against advisories: which records apply to a package
//! ([`target`]), whether its version is affected ([`evaluate`]), and the findings of one
//! package with the records that share an alias merged ([`findings`]).
//!
//! Severity, in this order of precedence (the first that gives a rating wins; the finding
//! keeps every rating it saw):
//! - OS packages (dpkg, apk, rpm): the distribution's own rating (Debian's urgency, Ubuntu's
//!   priority) of the matching records, as Trivy does; then CVSS.
//! - Language packages: GitHub's rating of a reviewed advisory (`database_specific.severity`);
//!   then CVSS.
//! - CVSS: the score computed from the newest CVSS version among the merged records' vectors
//!   (4.0, then 3.1, 3.0, 2), the highest score where several records give that version.
//! - Otherwise `unknown`.
//!
//! The pull gate uses the same severity a finding shows ([`Finding::severity`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use berth_core::cvss::{self, CvssVersion, Severity};
use berth_core::version::{Scheme, Version};
use serde::Serialize;

use super::{Advisory, Affected, Event, Info, RangeKind, Rating, RatingKind, Status};
use super::{canonical_name, debian, ecosystem_base};
use crate::{Ecosystem, OsRelease, Package};

/// Where to look a package up: the ecosystem (with release) and name records use for it, and
/// the version to compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Target {
    pub ecosystem: String,
    pub name: String,
    pub version: String,
}

/// Why a package cannot be matched (no records can apply to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmatched {
    pub reason: String,
}

/// The records key of an installed package: OS packages by distribution release and source
/// package, language packages by ecosystem and normalised name.
pub fn target(p: &Package, os: Option<&OsRelease>) -> Result<Target, Unmatched> {
    let unmatched = |reason: String| Err(Unmatched { reason });
    let (ecosystem, name, version) = match p.ecosystem {
        Ecosystem::Deb | Ecosystem::Apk | Ecosystem::Rpm => {
            let Some(os) = os else {
                return unmatched("an OS package in an image without /etc/os-release".into());
            };
            let Some(ecosystem) = os_ecosystem(os) else {
                return unmatched(format!(
                    "no vulnerability data is known for the distribution {:?} {}",
                    os.id,
                    os.version_id.as_deref().unwrap_or("")
                ));
            };
            let (name, version) = match p.ecosystem {
                Ecosystem::Deb => match &p.source {
                    Some(s) => (s.name.clone(), s.version.clone()),
                    None => (p.name.clone(), p.version.clone()),
                },
                Ecosystem::Apk => (
                    p.source
                        .as_ref()
                        .map_or_else(|| p.name.clone(), |s| s.name.clone()),
                    p.version.clone(),
                ),
                _ => (
                    p.rpm
                        .as_ref()
                        .and_then(|r| r.source_rpm.as_deref())
                        .and_then(source_rpm_name)
                        .unwrap_or(&p.name)
                        .to_owned(),
                    p.version.clone(),
                ),
            };
            (ecosystem, name, version)
        }
        Ecosystem::Pypi => ("PyPI".into(), p.name.clone(), p.version.clone()),
        Ecosystem::Npm => ("npm".into(), p.name.clone(), p.version.clone()),
        Ecosystem::Golang => ("Go".into(), p.name.clone(), p.version.clone()),
        Ecosystem::Cargo => ("crates.io".into(), p.name.clone(), p.version.clone()),
        Ecosystem::Maven => ("Maven".into(), p.name.clone(), p.version.clone()),
        Ecosystem::Gem => ("RubyGems".into(), p.name.clone(), p.version.clone()),
        Ecosystem::Composer => ("Packagist".into(), p.name.clone(), p.version.clone()),
        Ecosystem::Nuget => ("NuGet".into(), p.name.clone(), p.version.clone()),
    };
    Ok(Target {
        name: canonical_name(&ecosystem, &name),
        ecosystem,
        version,
    })
}

/// The OSV ecosystem of a distribution release, from its os-release.
pub fn os_ecosystem(os: &OsRelease) -> Option<String> {
    let version = os.version_id.as_deref().unwrap_or("").trim();
    let major_minor = || {
        let mut parts = version.split(['.', '_']);
        Some(format!("{}.{}", parts.next()?, parts.next()?))
    };
    let major = || version.split('.').next().filter(|m| !m.is_empty());
    Some(match os.id.as_str() {
        "debian" => match major() {
            Some(m) if m.chars().all(|c| c.is_ascii_digit()) => format!("Debian:{m}"),
            // testing and sid carry no VERSION_ID: the codename's number, else sid.
            _ => os
                .version_codename
                .as_deref()
                .and_then(debian::ecosystem_of_codename)
                .unwrap_or_else(|| "Debian:sid".into()),
        },
        "ubuntu" => format!("Ubuntu:{}", major_minor()?),
        "alpine" => format!("Alpine:v{}", major_minor()?),
        "wolfi" => "Wolfi".into(),
        "chainguard" => "Chainguard".into(),
        "rocky" => format!("Rocky Linux:{}", major()?),
        "almalinux" => format!("AlmaLinux:{}", major()?),
        "opensuse-leap" => format!("openSUSE:Leap {version}"),
        "mariner" => format!("Mariner:{version}"),
        "azurelinux" => format!("Azure Linux:{version}"),
        _ => return None,
    })
}

/// `openssl-3.0.7-16.el9.src.rpm` → `openssl`.
fn source_rpm_name(srpm: &str) -> Option<&str> {
    let base = srpm.strip_suffix(".rpm")?;
    let base = base.rsplit_once('.')?.0; // .src / .nosrc
    let base = base.rsplit_once('-')?.0; // release
    let name = base.rsplit_once('-')?.0; // version
    (!name.is_empty()).then_some(name)
}

/// The version ordering of an ecosystem's `ECOSYSTEM` ranges (None: not known, so only the
/// records' explicit `versions` lists can match).
pub fn ecosystem_scheme(ecosystem: &str) -> Option<Scheme> {
    Some(match ecosystem_base(ecosystem) {
        "Debian" | "Ubuntu" => Scheme::Dpkg,
        "Alpine" | "Wolfi" | "Chainguard" => Scheme::Apk,
        "Rocky Linux" | "AlmaLinux" | "Red Hat" | "openSUSE" | "SUSE" | "Mariner"
        | "Azure Linux" | "openEuler" | "Photon OS" => Scheme::Rpm,
        "PyPI" => Scheme::Pep440,
        "npm" | "crates.io" => Scheme::SemVer,
        "Go" => Scheme::Go,
        "Maven" => Scheme::Maven,
        "RubyGems" => Scheme::RubyGems,
        "NuGet" => Scheme::NuGet,
        _ => return None,
    })
}

fn range_scheme(ecosystem: &str, kind: RangeKind) -> Option<Scheme> {
    match kind {
        // Go's records are SEMVER ranges over Go's own version forms.
        RangeKind::Semver if ecosystem_base(ecosystem) == "Go" => Some(Scheme::Go),
        RangeKind::Semver => Some(Scheme::SemVer),
        RangeKind::Ecosystem => ecosystem_scheme(ecosystem),
    }
}

/// An affected installed version, as one record's package entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The lowest fixed version above the installed one, if the record names one.
    pub fixed: Option<String>,
    pub status: Status,
}

#[derive(Debug, Clone)]
enum Bound {
    Zero,
    Version(Version),
    Infinity,
}

impl Bound {
    fn cmp_installed(&self, v: &Version) -> Option<Ordering> {
        match self {
            Bound::Zero => Some(Ordering::Less),
            Bound::Infinity => Some(Ordering::Greater),
            Bound::Version(b) => b.compare(v),
        }
    }
}

/// Whether `installed` is affected by one package entry of a record (OSV semantics: in the
/// `versions` list, or in any range). Events whose version does not parse in the range's
/// ordering are left out of that range; an installed version that does not parse matches
/// only the `versions` list.
pub fn evaluate(affected: &Affected, installed: &str) -> Option<Hit> {
    let mut in_range = false;
    let mut fixed: Option<Version> = None;
    // The installed version, parsed once per ordering the ranges use.
    let mut parsed: Option<(Scheme, Option<Version>)> = None;
    for range in &affected.ranges {
        let Some(scheme) = range_scheme(&affected.ecosystem, range.kind) else {
            continue;
        };
        if parsed.as_ref().is_none_or(|(s, _)| *s != scheme) {
            parsed = Some((scheme, Version::parse(scheme, installed).ok()));
        }
        let Some((_, Some(v))) = &parsed else {
            continue;
        };
        let (hit, fix) = in_one_range(&range.events, scheme, v);
        if hit {
            in_range = true;
            if let Some(f) = fix
                && fixed
                    .as_ref()
                    .is_none_or(|old| f.compare(old) == Some(Ordering::Less))
            {
                fixed = Some(f);
            }
        }
    }
    // The explicit list, when no range said so: by text, then in the ecosystem's order
    // (PEP 440's 1.0 is 1.0.0).
    let listed = !in_range && !affected.versions.is_empty() && {
        let scheme = ecosystem_scheme(&affected.ecosystem);
        let mine = scheme.and_then(|s| Version::parse(s, installed).ok());
        affected.versions.iter().any(|v| {
            v == installed
                || matches!((scheme, &mine), (Some(s), Some(m))
                    if Version::parse(s, v).is_ok_and(|v| v.compare(m) == Some(Ordering::Equal)))
        })
    };
    if !listed && !in_range {
        return None;
    }
    let fixed = fixed.map(|f| f.as_str().to_owned());
    let status = match (&fixed, affected.status) {
        (Some(_), _) => Status::Fixed,
        (None, Some(s)) => s,
        (None, None) => Status::Affected,
    };
    Some(Hit { fixed, status })
}

/// OSV's evaluation of one range: walk the events in version order; `introduced` at or
/// below the version makes it affected, `fixed` at or below and `last_affected` below make it
/// not; versions at or past a `limit` are outside the range. The fix reported is the lowest
/// `fixed` above the installed version.
fn in_one_range(events: &[Event], scheme: Scheme, v: &Version) -> (bool, Option<Version>) {
    let bound = |s: &str, zero: bool| -> Option<Bound> {
        match s {
            "0" if zero => Some(Bound::Zero),
            "*" => Some(Bound::Infinity),
            _ => Version::parse(scheme, s).ok().map(Bound::Version),
        }
    };
    let mut limits = Vec::new();
    let mut walk: Vec<(u8, Bound)> = Vec::new();
    for e in events {
        match e {
            Event::Introduced(s) => walk.extend(bound(s, true).map(|b| (0, b))),
            Event::Fixed(s) => walk.extend(bound(s, false).map(|b| (1, b))),
            Event::LastAffected(s) => walk.extend(bound(s, false).map(|b| (2, b))),
            Event::Limit(s) => limits.extend(bound(s, false)),
        }
    }
    if !limits.is_empty()
        && !limits
            .iter()
            .any(|l| l.cmp_installed(v) == Some(Ordering::Greater))
    {
        return (false, None);
    }
    let mut fix: Option<Version> = None;
    for (kind, b) in &walk {
        if let (1, Bound::Version(f)) = (kind, b)
            && f.compare(v) == Some(Ordering::Greater)
            && fix
                .as_ref()
                .is_none_or(|old| f.compare(old) == Some(Ordering::Less))
        {
            fix = Some(f.clone());
        }
    }
    walk.sort_by(|a, b| order_bounds(&a.1, &b.1).then(a.0.cmp(&b.0)));
    let mut vulnerable = false;
    for (kind, b) in &walk {
        let Some(order) = b.cmp_installed(v) else {
            continue;
        };
        match kind {
            0 if order != Ordering::Greater => vulnerable = true,
            1 if order != Ordering::Greater => vulnerable = false,
            2 if order == Ordering::Less => vulnerable = false,
            _ => {}
        }
    }
    (vulnerable, if vulnerable { fix } else { None })
}

fn order_bounds(a: &Bound, b: &Bound) -> Ordering {
    match (a, b) {
        (Bound::Zero, Bound::Zero) | (Bound::Infinity, Bound::Infinity) => Ordering::Equal,
        (Bound::Zero, _) | (_, Bound::Infinity) => Ordering::Less,
        (_, Bound::Zero) | (Bound::Infinity, _) => Ordering::Greater,
        (Bound::Version(x), Bound::Version(y)) => x.compare(y).unwrap_or(Ordering::Equal),
    }
}

/// One vulnerability of one installed package: every record that matched it and shares an
/// alias with another is merged in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The id shown: the lowest CVE id among the merged records' ids and aliases, else the
    /// GHSA id, else the first record's id.
    pub id: String,
    /// Every id of the merged records and their aliases, sorted.
    pub ids: Vec<String>,
    /// Records this finding's records were derived from (OSV `upstream`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    /// The records that matched, as `source:id`.
    pub records: Vec<String>,
    pub package: String,
    pub installed_version: String,
    /// The ecosystem and name the records know the package by (the source package for OS
    /// packages).
    pub matched: Target,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    pub status: Status,
    /// The version that fixes every merged record (the highest of their fixes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    /// The severity shown and used by the pull gate.
    pub severity: Severity,
    /// Where it came from: `debian`, `ubuntu`, `ghsa`, `cvss` or `none`.
    pub severity_source: String,
    /// The CVSS score used, or the best one seen when a rating came first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvss: Option<CvssShown>,
    /// Every rating the merged records give.
    pub ratings: Vec<Rating>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub links: Vec<String>,
    /// Which of the advisories given to [`findings`] merged into this one (their positions).
    #[serde(skip)]
    pub merged: Vec<usize>,
}

impl Finding {
    /// Fills summary, description and links from the [`Info`] of the merged records (in the
    /// order of `merged`), for records whose descriptive part was kept apart.
    pub fn describe(&mut self, infos: &[&Info]) {
        for info in infos {
            if self.summary.is_none() {
                self.summary = info.summary.clone();
            }
            if self.description.is_none() {
                self.description = info.details.clone();
            }
            for link in &info.references {
                if !self.links.contains(link) {
                    self.links.push(link.clone());
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CvssShown {
    pub version: CvssVersion,
    pub vector: String,
    pub score: f64,
    pub severity: Severity,
    /// The record the vector comes from.
    pub by: String,
}

/// A record that matched a package, with the entry that matched.
struct Matched<'a> {
    /// Its position among the advisories given.
    index: usize,
    advisory: &'a Advisory,
    affected: &'a Affected,
    hit: Hit,
}

/// The findings of one installed package among `advisories` (the records found for its
/// target), merged by alias.
pub fn findings(package: &Package, target: &Target, advisories: &[&Advisory]) -> Vec<Finding> {
    let mut matched = Vec::new();
    for (index, advisory) in advisories.iter().enumerate() {
        for affected in &advisory.affected {
            if affected.ecosystem != target.ecosystem || affected.name != target.name {
                continue;
            }
            if let Some(hit) = evaluate(affected, &target.version) {
                matched.push(Matched {
                    index,
                    advisory,
                    affected,
                    hit,
                });
                break;
            }
        }
    }
    // Union-find over the matches: two share a group when their id sets meet.
    let ids = |m: &Matched| -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = std::iter::once(&m.advisory.id)
            .chain(&m.advisory.aliases)
            .cloned()
            .collect();
        // A distribution's record of one CVE (DEBIAN-CVE-2024-1, UBUNTU-CVE-2024-1) is that
        // CVE for its packages: its upstream CVE is one more id of it. (A USN's upstream lists
        // several CVEs it fixes together; those stay apart.)
        if let Some((_, cve)) = m.advisory.id.split_once("-CVE-") {
            let cve = format!("CVE-{cve}");
            if m.advisory.upstream.contains(&cve) {
                ids.insert(cve);
            }
        }
        ids
    };
    let mut group: Vec<usize> = (0..matched.len()).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, m) in matched.iter().enumerate() {
        for id in ids(m) {
            match owner.get(&id) {
                Some(&j) => {
                    let (a, b) = (root(&mut group, i), root(&mut group, j));
                    group[a] = b;
                }
                None => {
                    owner.insert(id, i);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<&Matched>> = BTreeMap::new();
    for (i, m) in matched.iter().enumerate() {
        let r = root(&mut group, i);
        groups.entry(r).or_default().push(m);
    }
    let os = matches!(
        package.ecosystem,
        Ecosystem::Deb | Ecosystem::Apk | Ecosystem::Rpm
    );
    let mut out: Vec<Finding> = groups
        .into_values()
        .map(|members| finding(package, target, os, &members, &ids))
        .collect();
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    out
}

fn finding(
    package: &Package,
    target: &Target,
    os: bool,
    members: &[&Matched],
    ids: &dyn Fn(&Matched) -> BTreeSet<String>,
) -> Finding {
    let all: BTreeSet<String> = members.iter().flat_map(|m| ids(m)).collect();
    let id = all
        .iter()
        .filter(|i| i.starts_with("CVE-"))
        .min_by(|a, b| cve_order(a).cmp(&cve_order(b)))
        .or_else(|| all.iter().find(|i| i.starts_with("GHSA-")))
        .cloned()
        .unwrap_or_else(|| members[0].advisory.id.clone());
    let scheme = ecosystem_scheme(&target.ecosystem);
    let mut fixed: Option<String> = None;
    for f in members.iter().filter_map(|m| m.hit.fixed.as_ref()) {
        let higher = match (&fixed, scheme) {
            (None, _) => true,
            (Some(old), Some(s)) => {
                berth_core::version::compare(s, f, old).is_ok_and(|o| o == Ordering::Greater)
            }
            (Some(_), None) => false,
        };
        if higher {
            fixed = Some(f.clone());
        }
    }
    let status = if fixed.is_some() {
        Status::Fixed
    } else {
        members
            .iter()
            .map(|m| m.hit.status)
            .max()
            .unwrap_or(Status::Affected)
    };
    let mut ratings: Vec<Rating> = Vec::new();
    for m in members {
        for r in m.advisory.severity.iter().chain(&m.affected.severity) {
            if !ratings.contains(r) {
                ratings.push(r.clone());
            }
        }
    }
    let (severity, severity_source, cvss) = resolve_severity(os, &ratings);
    let mut links: Vec<String> = Vec::new();
    for m in members {
        for l in &m.advisory.references {
            if !links.contains(l) {
                links.push(l.clone());
            }
        }
    }
    let upstream: BTreeSet<String> = members
        .iter()
        .flat_map(|m| m.advisory.upstream.iter().cloned())
        .filter(|u| !all.contains(u))
        .collect();
    Finding {
        id,
        ids: all.into_iter().collect(),
        upstream: upstream.into_iter().collect(),
        records: members
            .iter()
            .map(|m| format!("{}:{}", m.advisory.source, m.advisory.id))
            .collect(),
        package: package.name.clone(),
        installed_version: package.version.clone(),
        matched: target.clone(),
        path: package.path.clone(),
        layer: package.layer,
        status,
        fixed_version: fixed,
        severity,
        severity_source,
        cvss,
        summary: members.iter().find_map(|m| m.advisory.summary.clone()),
        description: members.iter().find_map(|m| m.advisory.details.clone()),
        ratings,
        links,
        merged: members.iter().map(|m| m.index).collect(),
    }
}

/// `CVE-2021-44228` sorts by year, then number.
fn cve_order(id: &str) -> (u32, u64) {
    let mut parts = id.trim_start_matches("CVE-").splitn(2, '-');
    let year = parts
        .next()
        .and_then(|y| y.parse().ok())
        .unwrap_or(u32::MAX);
    let n = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    (year, n)
}

/// The severity of a finding from its ratings, in the order of precedence of this module's
/// documentation: (severity, where it came from, the CVSS score used or seen).
pub fn resolve_severity(os: bool, ratings: &[Rating]) -> (Severity, String, Option<CvssShown>) {
    let first = if os {
        RatingKind::Distribution
    } else {
        RatingKind::Ghsa
    };
    let best_cvss = ratings
        .iter()
        .filter(|r| r.kind == RatingKind::Cvss)
        .filter_map(|r| {
            let s = cvss::score(&r.value).ok()?;
            Some(CvssShown {
                version: s.version,
                vector: s.vector,
                score: s.base_score,
                severity: s.severity,
                by: r.by.clone(),
            })
        })
        .max_by(|a, b| {
            a.version
                .cmp(&b.version)
                .then(a.score.partial_cmp(&b.score).unwrap_or(Ordering::Equal))
        });
    let rated = ratings
        .iter()
        .filter(|r| r.kind == first)
        .filter_map(|r| {
            let word = r.value.trim().trim_end_matches('*');
            Severity::from_word(word)
                .filter(|s| *s != Severity::Unknown)
                .map(|s| (s, r.by.clone()))
        })
        .max_by_key(|(s, _)| *s);
    if let Some((severity, by)) = rated {
        return (severity, by, best_cvss);
    }
    match best_cvss {
        Some(c) => (c.severity, "cvss".into(), Some(c)),
        None => (Severity::Unknown, "none".into(), None),
    }
}

/// Counts of a report's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: u64,
    /// Findings with a fixed version.
    pub fixable: u64,
    pub by_severity: BTreeMap<Severity, u64>,
}

impl Summary {
    pub fn of(findings: &[Finding]) -> Summary {
        let mut s = Summary::default();
        for f in findings {
            s.total += 1;
            s.fixable += u64::from(f.fixed_version.is_some());
            *s.by_severity.entry(f.severity).or_default() += 1;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vulndb::Range;

    fn affected(
        ecosystem: &str,
        ranges: Vec<(RangeKind, Vec<Event>)>,
        versions: &[&str],
    ) -> Affected {
        Affected {
            ecosystem: ecosystem.into(),
            name: "p".into(),
            ranges: ranges
                .into_iter()
                .map(|(kind, events)| Range { kind, events })
                .collect(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            status: None,
            severity: Vec::new(),
        }
    }

    fn i(v: &str) -> Event {
        Event::Introduced(v.into())
    }
    fn f(v: &str) -> Event {
        Event::Fixed(v.into())
    }
    fn la(v: &str) -> Event {
        Event::LastAffected(v.into())
    }
    fn lim(v: &str) -> Event {
        Event::Limit(v.into())
    }

    fn hit(a: &Affected, v: &str) -> Option<Option<String>> {
        evaluate(a, v).map(|h| h.fixed)
    }

    #[test]
    fn osv_events_as_the_schema_evaluates_them() {
        use RangeKind::Ecosystem as E;
        // Two introduced/fixed pairs, listed out of order: the walk is in version order.
        let a = affected(
            "PyPI",
            vec![(E, vec![f("2.0"), i("3.0"), i("1.0"), f("3.1")])],
            &[],
        );
        assert_eq!(hit(&a, "0.9"), None);
        assert_eq!(hit(&a, "1.0"), Some(Some("2.0".into())));
        assert_eq!(hit(&a, "1.5"), Some(Some("2.0".into())));
        assert_eq!(hit(&a, "2.0"), None, "fixed is not affected");
        assert_eq!(hit(&a, "3.0.5"), Some(Some("3.1".into())));
        assert_eq!(hit(&a, "3.1"), None);
        // last_affected includes its version; no fix to report.
        let a = affected(
            "npm",
            vec![(RangeKind::Semver, vec![i("0"), la("1.2.3")])],
            &[],
        );
        assert_eq!(hit(&a, "1.2.3"), Some(None));
        assert_eq!(hit(&a, "1.2.4"), None);
        assert_eq!(hit(&a, "1.2.4-rc.1"), None, "1.2.4-rc.1 > 1.2.3");
        // limit: at or past it, outside the range.
        let a = affected(
            "Go",
            vec![(RangeKind::Semver, vec![i("0"), lim("1.5.0")])],
            &[],
        );
        assert_eq!(hit(&a, "1.4.9"), Some(None));
        assert_eq!(hit(&a, "1.5.0"), None);
        // introduced only: every version from there on.
        let a = affected(
            "crates.io",
            vec![(RangeKind::Semver, vec![i("0.6.5")])],
            &[],
        );
        assert_eq!(hit(&a, "0.6.4"), None);
        assert_eq!(hit(&a, "99.0.0"), Some(None));
        // An explicit versions list, compared in the ecosystem's order (1.0 == 1.0.0 in PEP
        // 440), and a version that does not parse matching the list only.
        let a = affected("PyPI", vec![], &["1.0", "not a version"]);
        assert_eq!(hit(&a, "1.0.0"), Some(None));
        assert_eq!(hit(&a, "not a version"), Some(None));
        assert_eq!(hit(&a, "1.1"), None);
        // Debian's ordering: epochs and ~.
        let a = affected("Debian:12", vec![(E, vec![i("0"), f("1:2.0-1")])], &[]);
        assert_eq!(
            hit(&a, "2.5-1"),
            Some(Some("1:2.0-1".into())),
            "no epoch < epoch 1"
        );
        let a = affected("Debian:12", vec![(E, vec![i("0"), f("2.0-1")])], &[]);
        assert_eq!(hit(&a, "2.0~rc1-1"), Some(Some("2.0-1".into())));
        // An ecosystem with no known ordering: ranges are not evaluated, versions are.
        let a = affected("Packagist", vec![(E, vec![i("0"), f("2.0")])], &["1.0"]);
        assert_eq!(hit(&a, "1.5"), None);
        assert_eq!(hit(&a, "1.0"), Some(None));
    }

    #[test]
    fn a_distribution_record_of_a_cve_merges_with_that_cve() {
        let record = |id: &str, upstream: &[&str], fixed: &str| Advisory {
            id: id.into(),
            source: "osv".into(),
            aliases: Vec::new(),
            upstream: upstream.iter().map(|u| u.to_string()).collect(),
            published: None,
            modified: None,
            summary: None,
            details: None,
            severity: Vec::new(),
            references: Vec::new(),
            affected: vec![affected(
                "Debian:12",
                vec![(RangeKind::Ecosystem, vec![i("0"), f(fixed)])],
                &[],
            )],
        };
        let tracker = Advisory {
            source: "debian-tracker".into(),
            ..record("CVE-2024-1", &[], "1.2-1")
        };
        let osv = record("DEBIAN-CVE-2024-1", &["CVE-2024-1"], "1.2-1");
        let usn_like = record("DSA-9-1", &["CVE-2024-1", "CVE-2024-2"], "1.2-1");
        let p = Package::new(Ecosystem::Deb, "p", "1.0-1", "/x");
        let t = Target {
            ecosystem: "Debian:12".into(),
            name: "p".into(),
            version: "1.0-1".into(),
        };
        let found = findings(&p, &t, &[&tracker, &osv, &usn_like]);
        let ids: Vec<&Vec<String>> = found.iter().map(|f| &f.ids).collect();
        assert_eq!(
            ids,
            [
                &vec!["CVE-2024-1".to_owned(), "DEBIAN-CVE-2024-1".to_owned()],
                &vec!["DSA-9-1".to_owned()]
            ]
        );
        assert_eq!(found[1].upstream, ["CVE-2024-1", "CVE-2024-2"]);
    }

    #[test]
    fn severity_precedence() {
        let r = |kind, value: &str, by: &str| Rating {
            kind,
            value: value.into(),
            by: by.into(),
        };
        let v31 = r(
            RatingKind::Cvss,
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "A",
        );
        let v40 = r(
            RatingKind::Cvss,
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N",
            "B",
        );
        // OS: the distribution's word first, CVSS shown beside it.
        let (s, from, cvss) = resolve_severity(
            true,
            &[v31.clone(), r(RatingKind::Distribution, "low*", "debian")],
        );
        assert_eq!((s, from.as_str()), (Severity::Low, "debian"));
        assert_eq!(cvss.unwrap().score, 9.8);
        // A word that rates nothing ("not yet assigned") falls through to CVSS.
        let (s, from, _) = resolve_severity(
            true,
            &[
                v31.clone(),
                r(RatingKind::Distribution, "not yet assigned", "debian"),
            ],
        );
        assert_eq!((s, from.as_str()), (Severity::Critical, "cvss"));
        // Language packages: a distribution's word does not count, GHSA's does.
        let (s, from, _) = resolve_severity(
            false,
            &[v31.clone(), r(RatingKind::Ghsa, "MODERATE", "ghsa")],
        );
        assert_eq!((s, from.as_str()), (Severity::Medium, "ghsa"));
        // The newest CVSS version wins over a higher score of an older one.
        let (s, from, cvss) = resolve_severity(false, &[v31, v40]);
        assert_eq!(from, "cvss");
        let cvss = cvss.unwrap();
        assert_eq!((cvss.version, cvss.by.as_str()), (CvssVersion::V4_0, "B"));
        assert_eq!(s, cvss.severity);
        assert_eq!(
            resolve_severity(true, &[]),
            (Severity::Unknown, "none".into(), None)
        );
    }

    #[test]
    fn targets_use_the_release_and_the_source_package() {
        let os = |id: &str, v: Option<&str>, c: Option<&str>| OsRelease {
            id: id.into(),
            version_id: v.map(Into::into),
            version_codename: c.map(Into::into),
            pretty_name: None,
        };
        assert_eq!(
            os_ecosystem(&os("debian", Some("12"), None)).unwrap(),
            "Debian:12"
        );
        assert_eq!(
            os_ecosystem(&os("debian", None, Some("trixie"))).unwrap(),
            "Debian:13"
        );
        assert_eq!(
            os_ecosystem(&os("debian", None, None)).unwrap(),
            "Debian:sid"
        );
        assert_eq!(
            os_ecosystem(&os("ubuntu", Some("22.04"), None)).unwrap(),
            "Ubuntu:22.04"
        );
        assert_eq!(
            os_ecosystem(&os("alpine", Some("3.18.4"), None)).unwrap(),
            "Alpine:v3.18"
        );
        assert_eq!(
            os_ecosystem(&os("rocky", Some("9.3"), None)).unwrap(),
            "Rocky Linux:9"
        );
        assert_eq!(os_ecosystem(&os("fedora", Some("39"), None)), None);
        assert_eq!(
            source_rpm_name("openssl-3.0.7-16.el9.src.rpm"),
            Some("openssl")
        );
        assert_eq!(
            source_rpm_name("perl-Digest-1.17-395.fc32.src.rpm"),
            Some("perl-Digest")
        );
        assert_eq!(source_rpm_name("garbage"), None);
        let mut p = Package::new(Ecosystem::Rpm, "openssl-libs", "1:3.0.7-16.el9", "/x");
        p.rpm = Some(crate::RpmVersion {
            epoch: Some(1),
            version: "3.0.7".into(),
            release: "16.el9".into(),
            source_rpm: Some("openssl-3.0.7-16.el9.src.rpm".into()),
        });
        let t = target(&p, Some(&os("almalinux", Some("9.2"), None))).unwrap();
        assert_eq!(
            (t.ecosystem.as_str(), t.name.as_str(), t.version.as_str()),
            ("AlmaLinux:9", "openssl", "1:3.0.7-16.el9")
        );
        assert!(target(&p, None).is_err());
        let py = Package::new(Ecosystem::Pypi, "Zope.Interface", "5.0", "/x");
        assert_eq!(target(&py, None).unwrap().name, "zope-interface");
    }
}
