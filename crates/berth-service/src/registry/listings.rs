//! Listings: a repository's tags, the catalog of repositories a caller may read, and the
//! referrers of a manifest, each a page after a cursor.

use berth_core::{Digest, RepoName};
use berth_meta::ReferrerRow;

use super::{Page, page};
use crate::{ReadCheck, Registry, Result};

impl Registry {
    /// Tags after `last`, in bytewise order, at most `n`.
    pub async fn tags(&self, name: &RepoName, last: Option<&str>, n: u32) -> Result<Page<String>> {
        let repo = self.repo_or_unknown(name).await?;
        let items = self.meta.list_tags(repo, last, n.saturating_add(1)).await?;
        Ok(page(items, n))
    }

    /// Repository names after `last` that `visible` accepts, at most `n`.
    pub async fn catalog(
        &self,
        last: Option<&str>,
        n: u32,
        visible: &dyn ReadCheck,
    ) -> Result<Page<String>> {
        let mut items = Vec::new();
        let mut cursor = last.map(str::to_owned);
        let batch = n.saturating_add(1).max(100);
        while items.len() <= n as usize {
            let names = self.meta.list_repos(cursor.as_deref(), batch).await?;
            let exhausted = names.len() < batch as usize;
            cursor = names.last().cloned();
            for name in names {
                if visible.may_read(&name).await {
                    items.push(name);
                    if items.len() > n as usize {
                        break;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(page(items, n))
    }

    /// Manifests of the repository whose `subject` is `subject`, by digest after `last`.
    pub async fn referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> Result<Page<ReferrerRow>> {
        // The spec forbids a 404 here (a client would fall back to the tag schema): an unknown
        // repository simply has no referrers yet.
        let Some(repo) = self.existing_repo(name).await? else {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        };
        let items = self
            .meta
            .referrers(repo, subject, artifact_type, last, n.saturating_add(1))
            .await?;
        Ok(page(items, n))
    }
}
