//! The Debian Security Tracker's JSON (`https://security-tracker.debian.org/tracker/data/json`):
//! `{source package: {CVE: {description, releases: {codename: {status, fixed_version,
//! urgency, nodsa, nodsa_reason}}}}}`. It has the CVEs Debian has not fixed, which Debian's
//! OSV records (DSA, DLA, fixed CVEs only) lack.
//!
//! The file is about 80 MB; it is read as a stream, one source package at a time, so memory
//! stays at the size of one package's entries. One [`Entry`] per source package and CVE.
//!
//! Statuses, as Trivy reports them: `resolved` with a fixed version is fixed in it (fixed
//! version `0`: never affected, no entry); `open` and `undetermined` are affected with no fix,
//! `end-of-life` when the urgency says so, `will_not_fix` for `nodsa_reason: ignored`,
//! `fix_deferred` for `postponed`. The urgency is Debian's rating of the CVE.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, MapAccess, Visitor};

use super::{
    Advisory, Affected, Entry, Event, Range, RangeKind, Rating, RatingKind, Status, canonical_name,
};

pub const FEED: &str = "debian-tracker";

/// Debian's release numbers by codename (OSV names releases by number: `Debian:12`).
pub const RELEASES: &[(&str, &str)] = &[
    ("squeeze", "6"),
    ("wheezy", "7"),
    ("jessie", "8"),
    ("stretch", "9"),
    ("buster", "10"),
    ("bullseye", "11"),
    ("bookworm", "12"),
    ("trixie", "13"),
    ("forky", "14"),
    ("duke", "15"),
    ("sid", "sid"),
];

/// The ecosystem of a Debian release named by codename, if Debian has given it a number.
pub fn ecosystem_of_codename(codename: &str) -> Option<String> {
    RELEASES
        .iter()
        .find(|(c, _)| *c == codename)
        .map(|(_, n)| format!("Debian:{n}"))
}

#[derive(Deserialize)]
struct Cve {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    releases: Releases,
}

/// The tracker writes `"releases": []` for a CVE no release has yet.
#[derive(Deserialize)]
#[serde(untagged)]
enum Releases {
    Map(BTreeMap<String, Release>),
    Empty(#[allow(dead_code)] Vec<serde_json::Value>),
}

impl Default for Releases {
    fn default() -> Self {
        Releases::Empty(Vec::new())
    }
}

#[derive(Deserialize)]
struct Release {
    #[serde(default)]
    status: String,
    #[serde(default)]
    fixed_version: Option<String>,
    #[serde(default)]
    urgency: Option<String>,
    #[serde(default)]
    nodsa_reason: Option<String>,
}

/// Reads a tracker JSON document from `reader`, handing each entry to `each` and each CVE
/// entry that does not parse (with the reason) to `reject`. Broken JSON is an error.
pub fn read(
    reader: impl std::io::Read,
    each: &mut dyn FnMut(Entry) -> Result<(), String>,
    reject: &mut dyn FnMut(String),
) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
    let mut error = None;
    Packages {
        each,
        reject,
        error: &mut error,
    }
    .deserialize(&mut de)
    .map_err(|e| {
        error
            .take()
            .unwrap_or_else(|| format!("not Debian tracker JSON: {e}"))
    })?;
    de.end()
        .map_err(|e| format!("trailing data after the tracker JSON: {e}"))
}

struct Packages<'a> {
    each: &'a mut dyn FnMut(Entry) -> Result<(), String>,
    reject: &'a mut dyn FnMut(String),
    error: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Packages<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Packages<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of source packages to their CVEs")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(package) = map.next_key::<String>()? {
            let cves: BTreeMap<String, serde_json::Value> = map.next_value()?;
            for (id, value) in cves {
                let cve = match serde_json::from_value::<Cve>(value) {
                    Ok(cve) => cve,
                    Err(e) => {
                        (self.reject)(format!("{package}/{id}: {e}"));
                        continue;
                    }
                };
                if let Some(entry) = entry(&package, id, cve)
                    && let Err(e) = (self.each)(entry)
                {
                    *self.error = Some(e.clone());
                    return Err(serde::de::Error::custom(e));
                }
            }
        }
        Ok(())
    }
}

fn entry(package: &str, id: String, cve: Cve) -> Option<Entry> {
    let name = canonical_name("Debian", package);
    let mut affected = Vec::new();
    let mut urgencies = Vec::new();
    let Releases::Map(releases) = cve.releases else {
        return None;
    };
    for (codename, release) in releases {
        let Some(ecosystem) = ecosystem_of_codename(&codename) else {
            continue;
        };
        let urgency = release.urgency.as_deref().unwrap_or("").trim().to_owned();
        let (ranges, status) = match release.status.as_str() {
            "resolved" => match release.fixed_version.as_deref().map(str::trim) {
                Some("0") | None | Some("") => continue,
                Some(fixed) => (
                    vec![Range {
                        kind: RangeKind::Ecosystem,
                        events: vec![
                            Event::Introduced("0".into()),
                            Event::Fixed(fixed.to_owned()),
                        ],
                    }],
                    None,
                ),
            },
            "open" | "undetermined" => {
                let status = if urgency == "end-of-life" {
                    Status::EndOfLife
                } else {
                    match release.nodsa_reason.as_deref() {
                        Some("ignored") => Status::WillNotFix,
                        Some("postponed") => Status::FixDeferred,
                        _ => Status::Affected,
                    }
                };
                (
                    vec![Range {
                        kind: RangeKind::Ecosystem,
                        events: vec![Event::Introduced("0".into())],
                    }],
                    Some(status),
                )
            }
            _ => continue,
        };
        let severity = if urgency.is_empty() {
            Vec::new()
        } else {
            urgencies.push(urgency.clone());
            vec![Rating {
                kind: RatingKind::Distribution,
                value: urgency,
                by: "debian".into(),
            }]
        };
        affected.push(Affected {
            ecosystem,
            name: name.clone(),
            ranges,
            versions: Vec::new(),
            status,
            severity,
        });
    }
    if affected.is_empty() {
        return None;
    }
    Some(Entry {
        feed: FEED.into(),
        key: format!("{name}/{id}"),
        advisory: Advisory {
            references: vec![format!("https://security-tracker.debian.org/tracker/{id}")],
            id,
            source: FEED.into(),
            aliases: Vec::new(),
            upstream: Vec::new(),
            published: None,
            modified: None,
            summary: None,
            details: cve.description.filter(|d| !d.trim().is_empty()),
            severity: Vec::new(),
            affected,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(json: &str) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        read(
            json.as_bytes(),
            &mut |e| {
                out.push(e);
                Ok(())
            },
            &mut |_| {},
        )?;
        Ok(out)
    }

    #[test]
    fn statuses_map_as_trivy_reports_them() {
        let json = r#"{"openssl": {"CVE-1": {"releases": {
            "bookworm": {"status": "open", "urgency": "unimportant", "nodsa_reason": "ignored"},
            "bullseye": {"status": "open", "urgency": "low", "nodsa_reason": "postponed"},
            "buster": {"status": "open", "urgency": "end-of-life"},
            "trixie": {"status": "resolved", "fixed_version": "3.0.1-1", "urgency": "medium**"},
            "sid": {"status": "resolved", "fixed_version": "0"},
            "hamm": {"status": "open"}}}}, "zlib": {"CVE-2": {"releases": []}}}"#;
        let e = entries(json).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "openssl/CVE-1");
        let by: BTreeMap<_, _> = e[0]
            .advisory
            .affected
            .iter()
            .map(|a| (a.ecosystem.as_str(), a.status))
            .collect();
        assert_eq!(by["Debian:12"], Some(Status::WillNotFix));
        assert_eq!(by["Debian:11"], Some(Status::FixDeferred));
        assert_eq!(by["Debian:10"], Some(Status::EndOfLife));
        assert_eq!(by["Debian:13"], None);
        assert!(!by.contains_key("Debian:sid"), "fixed in 0: never affected");
        assert_eq!(by.len(), 4, "an unknown codename is skipped");
    }

    #[test]
    fn truncated_or_foreign_documents_are_errors() {
        assert!(entries(r#"{"openssl": {"CVE-1": {"releases": {"#).is_err());
        assert!(entries("[]").is_err());
        assert!(entries(r#"{"a": {}} x"#).is_err());
    }
}
