//! Alpine's secdb (`https://secdb.alpinelinux.org/<release>/<repository>.json`):
//! `{distroversion, reponame, packages: [{pkg: {name, secfixes: {fixed version: [CVE...]}}}]}`.
//!
//! A CVE listed under a version is fixed in that version of the release's package (the
//! package is the apk origin, the source package). Listed under version `0`, the package was
//! never affected in Alpine: no entry. One [`Entry`] per package and CVE.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Advisory, Affected, Entry, Event, Range, RangeKind};

#[derive(Deserialize)]
struct SecDb {
    distroversion: String,
    #[serde(default)]
    reponame: Option<String>,
    packages: Vec<PackageEntry>,
}

#[derive(Deserialize)]
struct PackageEntry {
    pkg: Pkg,
}

#[derive(Deserialize)]
struct Pkg {
    name: String,
    /// Fixed version → CVE ids. Real files also hold `null` and `{}` where the list would be
    /// (a version with no CVE): those name nothing.
    #[serde(default)]
    secfixes: BTreeMap<String, serde_json::Value>,
}

/// Whether `json` looks like a secdb document (for format detection).
pub fn looks_like(json: &serde_json::Value) -> bool {
    json.get("distroversion").is_some() && json.get("packages").is_some()
}

/// Parses one secdb document.
pub fn parse(json: &[u8]) -> Result<Vec<Entry>, String> {
    let db: SecDb =
        serde_json::from_slice(json).map_err(|e| format!("not an Alpine secdb file: {e}"))?;
    let release = db.distroversion.trim();
    if release.is_empty() {
        return Err("Alpine secdb file without distroversion".into());
    }
    // `v3.18` as OSV spells it; `edge` stays `edge`.
    let ecosystem = format!("Alpine:{release}");
    let feed = format!(
        "alpine-secdb:{release}/{}",
        db.reponame.as_deref().unwrap_or("main")
    );
    // Per package, each CVE with every version that lists it as fixed; listed under `0`
    // anywhere, the package was never affected.
    let mut fixes: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut never = std::collections::BTreeSet::new();
    for p in db.packages {
        let name = p.pkg.name.trim().to_owned();
        for (version, ids) in p.pkg.secfixes {
            let version = version.trim();
            let ids = ids
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str());
            for id in ids {
                // Entries carry a note now and then ("CVE-2019-1234 (a comment)").
                let Some(id) = id.split_whitespace().next() else {
                    continue;
                };
                let key = (name.clone(), id.to_owned());
                if version == "0" {
                    never.insert(key);
                } else {
                    fixes.entry(key).or_default().push(version.to_owned());
                }
            }
        }
    }
    fixes.retain(|key, _| !never.contains(key));
    Ok(fixes
        .into_iter()
        .map(|((name, id), versions)| {
            let mut events = vec![Event::Introduced("0".into())];
            events.extend(versions.into_iter().map(Event::Fixed));
            Entry {
                feed: feed.clone(),
                key: format!("{name}/{id}"),
                advisory: Advisory {
                    id: id.clone(),
                    source: "alpine-secdb".into(),
                    aliases: Vec::new(),
                    upstream: Vec::new(),
                    published: None,
                    modified: None,
                    summary: None,
                    details: None,
                    severity: Vec::new(),
                    references: Vec::new(),
                    affected: vec![Affected {
                        ecosystem: ecosystem.clone(),
                        name,
                        ranges: vec![Range {
                            kind: RangeKind::Ecosystem,
                            events,
                        }],
                        versions: Vec::new(),
                        status: None,
                        severity: Vec::new(),
                    }],
                },
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_become_ranges_and_version_zero_means_never_affected() {
        let json = br#"{"distroversion":"v3.4","reponame":"main","packages":[
            {"pkg":{"name":"openssl","secfixes":{"1.0.2h-r1":["CVE-2016-2177"],
              "0":["CVE-2000-1"],"1.0.2h-r2":["CVE-2000-1 (not in alpine)","CVE-2016-2180"],
              "1.0.2h-r3":{},"1.0.2h-r4":null}}}]}"#;
        let entries = parse(json).unwrap();
        let keys: Vec<_> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["openssl/CVE-2016-2177", "openssl/CVE-2016-2180"]);
        assert_eq!(entries[0].feed, "alpine-secdb:v3.4/main");
        let a = &entries[0].advisory.affected[0];
        assert_eq!(a.ecosystem, "Alpine:v3.4");
        assert_eq!(
            a.ranges[0].events,
            [
                Event::Introduced("0".into()),
                Event::Fixed("1.0.2h-r1".into())
            ]
        );
        assert!(parse(br#"{"packages":[]}"#).is_err());
    }
}
