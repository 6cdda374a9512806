//! A repository as the admin API shows it: its summary, tags and artifacts; deleting a tag,
//! an artifact or the whole repository.

use berth_core::access::Action;
use berth_core::{Digest, Reference, RepoName};
use berth_meta::{ArtifactRow, RepoSummary, TagRow};

use crate::access::Actor;
use crate::{Error, Registry, Result};

/// One artifact with its manifest's JSON (absent if it is not valid JSON).
#[derive(Debug, Clone)]
pub struct ArtifactDetail {
    pub artifact: ArtifactRow,
    pub manifest: Option<serde_json::Value>,
}

impl Registry {
    /// The repository's id, once the caller may do `action` on it.
    async fn repository_for(&self, actor: &Actor, repo: &RepoName, action: Action) -> Result<i64> {
        self.require(actor, repo, action).await?;
        self.meta
            .repo_id(repo)
            .await?
            .ok_or_else(|| Error::not_found(format!("repository {repo}")))
    }

    pub async fn repository_summary(&self, actor: &Actor, repo: &RepoName) -> Result<RepoSummary> {
        self.repository_for(actor, repo, Action::Pull).await?;
        let project = self.project_or_404(repo.project()).await?;
        self.meta
            .project_repositories(project.id)
            .await?
            .into_iter()
            .find(|r| r.name == repo.as_str())
            .ok_or_else(|| Error::not_found(format!("repository {repo}")))
    }

    pub async fn tag_rows(&self, actor: &Actor, repo: &RepoName) -> Result<Vec<TagRow>> {
        let id = self.repository_for(actor, repo, Action::Pull).await?;
        Ok(self.meta.tag_rows(id).await?)
    }

    pub async fn artifacts(&self, actor: &Actor, repo: &RepoName) -> Result<Vec<ArtifactRow>> {
        let id = self.repository_for(actor, repo, Action::Pull).await?;
        Ok(self.meta.artifacts(id, None).await?)
    }

    pub async fn artifact(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<ArtifactDetail> {
        let id = self.repository_for(actor, repo, Action::Pull).await?;
        let artifact = self
            .meta
            .artifacts(id, Some(digest))
            .await?
            .pop()
            .ok_or_else(|| Error::not_found(format!("artifact {digest}")))?;
        let manifest = self
            .meta
            .get_manifest(id, digest)
            .await?
            .and_then(|m| serde_json::from_slice(&m.payload).ok());
        Ok(ArtifactDetail { artifact, manifest })
    }

    /// Deletes a tag, or an artifact with what depends on it, through the admin API.
    pub async fn delete_reference(
        &self,
        actor: &Actor,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<()> {
        self.repository_for(actor, repo, Action::Delete).await?;
        self.delete_manifest(actor, repo, reference).await
    }
}
