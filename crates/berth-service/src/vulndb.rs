//! Vulnerabilities of an artifact: its inventory matched against the published version of
//! the vulnerability database (berth-scan's matcher over the records the MetaStore finds).
//!
//! The database is read at one version for a whole match. A package whose ecosystem (a
//! distribution release, a language) has no record at all in that version is reported as not
//! covered, never as free of vulnerabilities.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use berth_core::{Digest, RepoName};
use berth_meta::{VulnStore, VulnVersion};
use berth_scan::vulndb::matching::{self, Finding, Summary, Target};
use berth_scan::vulndb::{Advisory, Info};
use berth_scan::{Coverage, Inventory};
use serde::Serialize;

use crate::access::Actor;
use crate::scan::ArtifactInventory;
use crate::{Error, Registry, Result};

/// The vulnerabilities of one inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Vulnerabilities {
    /// The database version matched against (None: nothing imported yet).
    pub database: Option<DatabaseRef>,
    /// Whether every layer was read and every package's ecosystem is covered.
    pub complete: bool,
    /// The inventory's own coverage (layers not read, not an image).
    pub coverage: Coverage,
    /// Ecosystems (with release) of installed packages that the database has no record for,
    /// and packages no record can apply to, with the reason.
    pub not_covered: Vec<NotCovered>,
    pub summary: Summary,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRef {
    pub version: i64,
    pub published_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct NotCovered {
    /// The ecosystem, or the package (`name version`) when no ecosystem applies.
    pub what: String,
    pub reason: String,
    /// Installed packages it concerns.
    pub packages: u64,
}

/// An artifact's vulnerabilities: one image's, or one per platform of an index.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArtifactVulnerabilities {
    Image {
        digest: String,
        #[serde(flatten)]
        vulnerabilities: Vulnerabilities,
    },
    Index {
        digest: String,
        platforms: Vec<PlatformVulnerabilities>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformVulnerabilities {
    pub digest: String,
    pub platform: Option<String>,
    #[serde(flatten)]
    pub vulnerabilities: Vulnerabilities,
}

/// Matches `inventory` against the published version of `store`.
pub async fn match_inventory(
    store: &VulnStore,
    inventory: &Inventory,
) -> berth_meta::Result<Vulnerabilities> {
    let version = store.published_version().await?;
    let published: Option<VulnVersion> = if version > 0 {
        store.published().await?
    } else {
        None
    };
    let mut not_covered: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut targets: Vec<(usize, Target)> = Vec::new();
    for (i, p) in inventory.packages.iter().enumerate() {
        match matching::target(p, inventory.os.as_ref()) {
            Ok(t) => targets.push((i, t)),
            Err(u) => {
                *not_covered
                    .entry((format!("{} {}", p.name, p.version), u.reason))
                    .or_default() += 1
            }
        }
    }
    let mut by_ecosystem: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (_, t) in &targets {
        by_ecosystem
            .entry(&t.ecosystem)
            .or_default()
            .insert(&t.name);
    }
    // Advisories per (ecosystem, name) with their (feed, key). Each ecosystem is looked up and
    // parsed on its own, side by side (the records are parsed on blocking threads).
    type Found = Vec<(Arc<RecordId>, Arc<Advisory>)>;
    let mut advisories: HashMap<(String, String), Found> = HashMap::new();
    let mut covered = BTreeSet::new();
    if version > 0 {
        let lookups = by_ecosystem.iter().map(|(ecosystem, names)| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let ecosystem = ecosystem.to_string();
            async move {
                if !store.covers(version, &ecosystem).await? {
                    return Ok(None);
                }
                let rows = store.lookup(version, &ecosystem, &names).await?;
                let parsed = tokio::task::spawn_blocking(move || parse_records(rows))
                    .await
                    .map_err(|e| {
                        berth_meta::MetaError::Corrupt(format!("parsing records: {e}"))
                    })??;
                Ok::<_, berth_meta::MetaError>(Some((ecosystem, parsed)))
            }
        });
        for (ecosystem, found) in futures_util::future::try_join_all(lookups)
            .await?
            .into_iter()
            .flatten()
        {
            for (name, id, advisory) in found {
                advisories
                    .entry((ecosystem.clone(), name))
                    .or_default()
                    .push((id, advisory));
            }
            covered.insert(ecosystem);
        }
    }
    let mut findings = Vec::new();
    // Which records' descriptions the findings need, per finding.
    let mut described: Vec<Vec<Arc<RecordId>>> = Vec::new();
    for (i, t) in &targets {
        if !covered.contains(&t.ecosystem) {
            let reason = if version == 0 {
                "no vulnerability database has been imported".to_owned()
            } else {
                "the vulnerability database has no record for this ecosystem".to_owned()
            };
            *not_covered
                .entry((t.ecosystem.clone(), reason))
                .or_default() += 1;
            continue;
        }
        let Some(list) = advisories.get(&(t.ecosystem.clone(), t.name.clone())) else {
            continue;
        };
        let refs: Vec<&Advisory> = list.iter().map(|(_, a)| a.as_ref()).collect();
        for f in matching::findings(&inventory.packages[*i], t, &refs) {
            described.push(f.merged.iter().map(|&m| list[m].0.clone()).collect());
            findings.push(f);
        }
    }
    // Summaries, descriptions and links: read for the records that matched only.
    let wanted: BTreeSet<RecordId> = described
        .iter()
        .flatten()
        .map(|id| (**id).clone())
        .collect();
    let wanted: Vec<RecordId> = wanted.into_iter().collect();
    let mut infos: HashMap<RecordId, Info> = HashMap::new();
    for (id, json) in store.info(version, &wanted).await? {
        let info: Info = serde_json::from_str(&json).map_err(|e| {
            berth_meta::MetaError::Corrupt(format!(
                "vulnerability record {} of {}: {e}",
                id.1, id.0
            ))
        })?;
        infos.insert(id, info);
    }
    for (f, ids) in findings.iter_mut().zip(&described) {
        let of: Vec<&Info> = ids.iter().filter_map(|id| infos.get(id.as_ref())).collect();
        f.describe(&of);
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.package.cmp(&b.package))
    });
    let not_covered: Vec<NotCovered> = not_covered
        .into_iter()
        .map(|((what, reason), packages)| NotCovered {
            what,
            reason,
            packages,
        })
        .collect();
    Ok(Vulnerabilities {
        database: published.map(|p| DatabaseRef {
            version: p.version,
            published_at: p.published_at,
        }),
        complete: matches!(inventory.coverage, Coverage::Complete) && not_covered.is_empty(),
        coverage: inventory.coverage.clone(),
        not_covered,
        summary: Summary::of(&findings),
        findings,
    })
}

/// The database's state: the published version, per-feed counts, ecosystems covered.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseStatus {
    /// 0: nothing imported yet.
    pub version: i64,
    pub published: Option<VulnVersion>,
    /// When an import last ran to its end (ms since the epoch; 0: never), changes or not.
    pub checked_at: i64,
    pub feeds: Vec<berth_meta::VulnFeed>,
    /// Ecosystems (with release for distributions) that have records.
    pub ecosystems: Vec<String>,
}

/// The state of `store` (`berth vulndb status`, `GET /api/v1/vulndb`).
pub async fn status(store: &VulnStore) -> berth_meta::Result<DatabaseStatus> {
    let published = store.published().await?;
    let version = published.as_ref().map_or(0, |p| p.version);
    let (feeds, ecosystems) = if version > 0 {
        (
            store.feeds(version).await?,
            store.ecosystems(version).await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(DatabaseStatus {
        version,
        published,
        checked_at: store.checked_at().await?,
        feeds,
        ecosystems,
    })
}

/// A record's `(feed, key)`.
type RecordId = (String, String);

/// A looked-up record: the name it was found for, its id, the advisory.
type Parsed = (String, Arc<RecordId>, Arc<Advisory>);

/// Parses looked-up records, each once however many names it came for: (name, id, advisory).
fn parse_records(rows: Vec<(String, berth_meta::VulnRecord)>) -> berth_meta::Result<Vec<Parsed>> {
    let mut parsed: HashMap<RecordId, (Arc<RecordId>, Arc<Advisory>)> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (name, record) in rows {
        let id = (record.feed, record.key);
        let (id, advisory) = match parsed.get(&id) {
            Some(found) => found.clone(),
            None => {
                let a: Advisory = serde_json::from_str(&record.body).map_err(|e| {
                    berth_meta::MetaError::Corrupt(format!(
                        "vulnerability record {} of {}: {e}",
                        id.1, id.0
                    ))
                })?;
                let found = (Arc::new(id.clone()), Arc::new(a));
                parsed.insert(id, found.clone());
                found
            }
        };
        out.push((name, id, advisory));
    }
    Ok(out)
}

impl Registry {
    /// This node's handle on the vulnerability database (opened at first use).
    pub async fn vuln_store(&self) -> Result<&VulnStore> {
        self.vulndb
            .get_or_try_init(|| async {
                self.meta
                    .vuln_store(&self.config.data_dir.join(berth_jobs::vulndb::SQLITE_FILE))
                    .await
            })
            .await
            .map_err(Error::from)
    }

    /// The vulnerability database's state, for any signed-in user (it says nothing of the
    /// registry's content).
    pub async fn vulndb_status(&self, actor: &Actor) -> Result<DatabaseStatus> {
        if self.auth.enabled() {
            self.require_signed_in(actor)?;
        }
        Ok(status(self.vuln_store().await?).await?)
    }

    /// The vulnerabilities of the artifact `digest` of `repo`, which the caller must be allowed
    /// to pull: its inventory, matched now.
    pub async fn vulnerabilities(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<ArtifactVulnerabilities> {
        let inventory = self.inventory(actor, repo, digest).await?;
        let store = self.vuln_store().await?;
        Ok(match inventory {
            ArtifactInventory::Image { digest, inventory } => ArtifactVulnerabilities::Image {
                digest,
                vulnerabilities: match_inventory(store, &inventory).await?,
            },
            ArtifactInventory::Index { digest, platforms } => {
                let mut out = Vec::new();
                for p in platforms {
                    out.push(PlatformVulnerabilities {
                        vulnerabilities: match_inventory(store, &p.inventory).await?,
                        digest: p.digest,
                        platform: p.platform,
                    });
                }
                ArtifactVulnerabilities::Index {
                    digest,
                    platforms: out,
                }
            }
        })
    }
}
