//! OSV records (ossf/osv-schema) into [`Advisory`] values.
//!
//! Kept: `id`, `aliases`, `upstream`, `published`, `modified`, `summary`, `details`,
//! `severity`, `references`, and per package `ecosystem`, `name`, the `ECOSYSTEM` and
//! `SEMVER` ranges, `versions` and `severity`; GitHub's rating
//! (`database_specific.severity`) and Ubuntu's priority (`severity` of type `Ubuntu`).
//! Dropped: `GIT` ranges (they need the commit graph; records that have them also carry
//! `ECOSYSTEM` ranges or `versions`), withdrawn records (the import withdraws them),
//! `ecosystem_specific` (Go's affected symbols and Ubuntu's binary names do not change which
//! installed package is affected: OS records name the source package) and packages whose
//! ecosystem is empty.

use serde::Deserialize;

use super::{
    Advisory, Affected, Entry, Event, Range, RangeKind, Rating, RatingKind, canonical_ecosystem,
    canonical_name, ecosystem_base,
};

#[derive(Deserialize)]
struct Record {
    id: String,
    #[serde(default)]
    modified: Option<String>,
    #[serde(default)]
    published: Option<String>,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    aliases: Option<Vec<String>>,
    #[serde(default)]
    upstream: Option<Vec<String>>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    severity: Option<Vec<Severity>>,
    #[serde(default)]
    affected: Option<Vec<RecordAffected>>,
    #[serde(default)]
    references: Option<Vec<Reference>>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Severity {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

#[derive(Deserialize)]
struct Reference {
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct RecordAffected {
    #[serde(default)]
    package: Option<Package>,
    #[serde(default)]
    ranges: Option<Vec<RecordRange>>,
    #[serde(default)]
    versions: Option<Vec<String>>,
    #[serde(default)]
    severity: Option<Vec<Severity>>,
}

#[derive(Deserialize)]
struct Package {
    #[serde(default)]
    ecosystem: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct RecordRange {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// What one OSV document holds.
#[derive(Debug)]
pub enum Parsed {
    Entry(Box<Entry>),
    /// Withdrawn: the import removes it (and does not count it as a record).
    Withdrawn {
        id: String,
    },
    /// Names no package this database can match (only `GIT` ranges, no ecosystem).
    NoPackages {
        id: String,
    },
}

/// Parses one OSV record (JSON).
pub fn parse(json: &[u8]) -> Result<Parsed, String> {
    let r: Record = serde_json::from_slice(json).map_err(|e| format!("not an OSV record: {e}"))?;
    if r.id.trim().is_empty() {
        return Err("OSV record without an id".into());
    }
    if r.withdrawn.as_deref().is_some_and(|w| !w.trim().is_empty()) {
        return Ok(Parsed::Withdrawn { id: r.id });
    }
    let mut affected = Vec::new();
    for a in r.affected.into_iter().flatten() {
        let Some(pkg) = a.package else { continue };
        if pkg.ecosystem.trim().is_empty() || pkg.name.trim().is_empty() {
            continue;
        }
        let ecosystem = canonical_ecosystem(&pkg.ecosystem);
        let mut ranges = Vec::new();
        for range in a.ranges.into_iter().flatten() {
            let kind = match range.kind.as_str() {
                "SEMVER" => RangeKind::Semver,
                "ECOSYSTEM" => RangeKind::Ecosystem,
                _ => continue, // GIT
            };
            let events = range.events.iter().filter_map(event).collect::<Vec<_>>();
            if !events.is_empty() {
                ranges.push(Range { kind, events });
            }
        }
        let versions = a.versions.unwrap_or_default();
        if ranges.is_empty() && versions.is_empty() {
            continue;
        }
        let severity = ratings(a.severity.unwrap_or_default(), &r.id);
        affected.push(Affected {
            name: canonical_name(&ecosystem, &pkg.name),
            ecosystem,
            ranges,
            versions,
            status: None,
            severity,
        });
    }
    let Some(first) = affected.first() else {
        return Ok(Parsed::NoPackages { id: r.id });
    };
    let feed = format!("osv:{}", ecosystem_base(&first.ecosystem));
    let mut severity = ratings(r.severity.unwrap_or_default(), &r.id);
    let ghsa = r
        .database_specific
        .as_ref()
        .and_then(|d| d.get("severity"))
        .and_then(|s| s.as_str());
    if let Some(word) = ghsa.filter(|w| !w.trim().is_empty()) {
        severity.push(Rating {
            kind: RatingKind::Ghsa,
            value: word.to_owned(),
            by: "ghsa".into(),
        });
    }
    let advisory = Advisory {
        id: r.id.clone(),
        source: "osv".into(),
        aliases: r.aliases.unwrap_or_default(),
        upstream: r.upstream.unwrap_or_default(),
        published: r.published,
        modified: r.modified,
        summary: r.summary.filter(|s| !s.trim().is_empty()),
        details: r.details.filter(|s| !s.trim().is_empty()),
        severity,
        references: r
            .references
            .into_iter()
            .flatten()
            .filter_map(|r| r.url)
            .collect(),
        affected,
    };
    Ok(Parsed::Entry(Box::new(Entry {
        feed,
        key: r.id,
        advisory,
    })))
}

fn event(map: &serde_json::Map<String, serde_json::Value>) -> Option<Event> {
    let (key, value) = map.iter().next()?;
    let value = value.as_str()?.trim().to_owned();
    Some(match key.as_str() {
        "introduced" => Event::Introduced(value),
        "fixed" => Event::Fixed(value),
        "last_affected" => Event::LastAffected(value),
        "limit" => Event::Limit(value),
        _ => return None,
    })
}

fn ratings(list: Vec<Severity>, id: &str) -> Vec<Rating> {
    list.into_iter()
        .filter_map(|s| {
            let kind = match s.kind.as_str() {
                "CVSS_V2" | "CVSS_V3" | "CVSS_V4" => RatingKind::Cvss,
                "Ubuntu" => RatingKind::Distribution,
                _ => return None,
            };
            let by = match kind {
                RatingKind::Cvss => id.to_owned(),
                _ => s.kind.to_lowercase(),
            };
            Some(Rating {
                kind,
                value: s.score,
                by,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_ranges_are_dropped_and_withdrawn_records_reported() {
        let json = br#"{"id":"X-1","modified":"2024-01-01T00:00:00Z","affected":[
            {"package":{"ecosystem":"PyPI","name":"Foo_Bar"},"ranges":[
              {"type":"GIT","repo":"r","events":[{"introduced":"0"},{"fixed":"abc"}]},
              {"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.2"}]}]}],
            "database_specific":{"severity":"MODERATE"}}"#;
        let Parsed::Entry(entry) = parse(json).unwrap() else {
            panic!("an entry")
        };
        assert_eq!(entry.feed, "osv:PyPI");
        let a = &entry.advisory.affected[0];
        assert_eq!(a.name, "foo-bar");
        assert_eq!(a.ranges.len(), 1);
        assert_eq!(a.ranges[0].kind, RangeKind::Ecosystem);
        assert_eq!(entry.advisory.severity[0].kind, RatingKind::Ghsa);
        let withdrawn = br#"{"id":"X-2","modified":"x","withdrawn":"2024-02-01T00:00:00Z"}"#;
        assert!(matches!(
            parse(withdrawn).unwrap(),
            Parsed::Withdrawn { .. }
        ));
        let git_only = br#"{"id":"X-3","affected":[{"package":{"ecosystem":"PyPI","name":"a"},
            "ranges":[{"type":"GIT","events":[{"introduced":"0"}]}]}]}"#;
        assert!(matches!(
            parse(git_only).unwrap(),
            Parsed::NoPackages { .. }
        ));
        assert!(parse(b"[1,2]").is_err());
        assert!(parse(br#"{"id":""}"#).is_err());
    }
}
