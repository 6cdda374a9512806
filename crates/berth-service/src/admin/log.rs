//! The audit log, search, and token signing keys.

use berth_meta::{AuditEvent, AuditFilter, ProjectRow};

use crate::access::Actor;
use crate::{Registry, Result};

/// Events returned by one audit query when it names no limit, and at most.
pub const AUDIT_PAGE_DEFAULT: u32 = 100;
pub const AUDIT_PAGE_MAX: u32 = 1000;
/// Projects and repositories one search returns at most (of each).
pub const SEARCH_MAX: usize = 100;

/// One page of the audit log, newest first, and the id to ask for the next one with.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next: Option<i64>,
}

/// What a search found among what the caller may read.
#[derive(Debug, Clone)]
pub struct SearchResult {
    pub projects: Vec<ProjectRow>,
    pub repositories: Vec<String>,
}

impl Registry {
    /// A page of the audit log (`filter.limit` 0: the default page size; clamped to the
    /// maximum). Registry admins only.
    pub async fn audit_log(&self, actor: &Actor, mut filter: AuditFilter) -> Result<AuditPage> {
        self.require_admin(actor)?;
        filter.limit = match filter.limit {
            0 => AUDIT_PAGE_DEFAULT,
            n => n.min(AUDIT_PAGE_MAX),
        };
        let events = self.meta.query_audit(&filter).await?;
        let next = (events.len() == filter.limit as usize)
            .then(|| events.last().map(|e| e.id))
            .flatten();
        Ok(AuditPage { events, next })
    }

    /// Adds a token signing key (rotation): tokens signed by older keys stay valid until they
    /// expire; every node picks the new key up. Returns its key id.
    pub async fn rotate_token_key(&self, actor: &Actor) -> Result<String> {
        self.require_admin(actor)?;
        let kid = self.auth.rotate_key().await?;
        self.audit
            .record(actor, "token_key.rotate", &kid, true, "")
            .await;
        Ok(kid)
    }

    /// Projects and repositories whose name contains `needle` (lower-cased), among those the
    /// caller may read; at most [`SEARCH_MAX`] of each.
    pub async fn search(&self, actor: &Actor, needle: &str) -> Result<SearchResult> {
        const SCAN: u32 = 1000;
        let needle = needle.to_lowercase();
        let named: Vec<ProjectRow> = self
            .meta
            .list_projects()
            .await?
            .into_iter()
            .filter(|p| p.name.contains(&needle))
            .collect();
        let mut projects = self.visible(actor, named, |p| p.name.as_str()).await?;
        projects.truncate(SEARCH_MAX);
        let mut repositories = Vec::new();
        let mut last: Option<String> = None;
        'scan: loop {
            let names = self.meta.list_repos(last.as_deref(), SCAN).await?;
            let done = names.len() < SCAN as usize;
            last = names.last().cloned();
            for n in names {
                if n.contains(&needle) && self.may_read_any(actor, &n).await {
                    repositories.push(n);
                    if repositories.len() >= SEARCH_MAX {
                        break 'scan;
                    }
                }
            }
            if done {
                break;
            }
        }
        Ok(SearchResult {
            projects,
            repositories,
        })
    }
}
