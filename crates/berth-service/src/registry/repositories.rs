//! Deleting a repository with everything in it.

use berth_core::RepoName;
use berth_core::access::Action;
use berth_meta::RepoDeletion;
use berth_storage::UploadId;

use crate::access::Actor;
use crate::{Error, Registry, Result};

impl Registry {
    /// Deletes a repository with its tags, manifests, blob links and upload sessions (their
    /// staged bytes too); blobs nothing else uses go with the next garbage collection.
    pub async fn delete_repository(&self, actor: &Actor, name: &RepoName) -> Result<RepoDeletion> {
        self.require(actor, name, Action::Delete).await?;
        self.check_delete_enabled()?;
        let report = self
            .meta
            .delete_repository(name, actor.principal.name())
            .await?
            .ok_or_else(|| Error::not_found(format!("repository {name}")))?;
        for id in &report.uploads {
            if let Some(uid) = UploadId::parse(id)
                && let Err(e) = self.blobs.delete_upload(&uid).await
            {
                tracing::warn!(upload = %id, error = %e, "deleting the bytes of an upload of a deleted repository");
            }
        }
        let detail = format!(
            "manifests={} tags={} blob_links={} uploads={}",
            report.manifests,
            report.tags,
            report.blobs,
            report.uploads.len()
        );
        self.audit
            .record(actor, "repository.delete", name.as_str(), true, &detail)
            .await;
        Ok(report)
    }
}
