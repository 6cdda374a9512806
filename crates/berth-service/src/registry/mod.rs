//! The OCI registry's rules, one file per resource: `blobs.rs`, `uploads.rs`,
//! `manifests.rs`, `listings.rs` (tags, catalog, referrers) and `repositories.rs`. This file
//! holds what they share.

mod blobs;
mod listings;
mod manifests;
mod repositories;
mod uploads;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use berth_core::{Digest, RepoName};
use berth_meta::BlobRow;
use berth_storage::{BlobKey, UploadId};

use crate::{Error, Registry, Result};

pub use blobs::{BlobRead, BlobSource};
pub use manifests::{ManifestRead, PushedManifest};

/// An upload request waits this long for buffer memory (`limits.upload_buffer_memory`)
/// before it is refused.
const UPLOAD_MEMORY_WAIT: Duration = Duration::from_secs(5);

/// The state of an upload session as the client sees it.
#[derive(Debug, Clone)]
pub struct UploadState {
    pub id: UploadId,
    pub offset: u64,
}

/// One page of a listing, and whether more entries follow it.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

/// `items` fetched with one extra entry, as a page of `n`.
fn page<T>(mut items: Vec<T>, n: u32) -> Page<T> {
    // With n=0 a next link would point at the same empty page forever.
    let more = n > 0 && items.len() > n as usize;
    items.truncate(n as usize);
    Page { items, more }
}

/// Held while a request writes to an upload session on this node.
struct UploadLock<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for UploadLock<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.id);
        }
    }
}

/// The stored object of a blob row.
pub(crate) fn stored_key(row: &BlobRow) -> Result<BlobKey> {
    BlobKey::new(row.digest.clone(), &row.generation).ok_or_else(|| {
        Error::Meta(berth_meta::MetaError::Corrupt(format!(
            "blob generation {:?}",
            row.generation
        )))
    })
}

impl Registry {
    async fn existing_repo(&self, name: &RepoName) -> Result<Option<i64>> {
        Ok(self.meta.repo_id(name).await?)
    }

    /// The repository's id, or [`Error::NameUnknown`].
    async fn repo_or_unknown(&self, name: &RepoName) -> Result<i64> {
        self.existing_repo(name)
            .await?
            .ok_or_else(|| Error::NameUnknown {
                name: name.to_string(),
            })
    }

    fn lock_upload(&self, id: &UploadId) -> Option<UploadLock<'_>> {
        let key = id.to_string();
        let mut set = self.busy_uploads.lock().ok()?;
        if !set.insert(key.clone()) {
            return None;
        }
        Some(UploadLock {
            set: &self.busy_uploads,
            id: key,
        })
    }

    /// Room in the upload buffer budget for one upload request, held while it streams.
    async fn upload_memory(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let want = self
            .upload_memory
            .clone()
            .acquire_many_owned(self.upload_cost);
        match tokio::time::timeout(UPLOAD_MEMORY_WAIT, want).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::UploadMemoryExhausted),
        }
    }

    fn check_delete_enabled(&self) -> Result<()> {
        if self.config.registry.delete_enabled {
            Ok(())
        } else {
            Err(Error::DeletesDisabled)
        }
    }

    /// Refuses a write into a proxy project: its content comes from the upstream.
    pub fn refuse_push_to_proxy(&self, repo: &RepoName) -> Result<()> {
        match self.proxy.project_of(repo) {
            Some(p) => Err(Error::ReadOnlyProxy {
                project: p.name.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// The digest of what was uploaded did not match the one the client named.
fn digest_mismatch(expected: &Digest, actual: Digest) -> Error {
    Error::DigestMismatch {
        expected: expected.clone(),
        actual,
    }
}

/// The registry as the pull-through cache sees it.
#[async_trait::async_trait]
impl crate::pullthrough::LocalStore for Registry {
    async fn local_manifest(
        &self,
        name: &RepoName,
        reference: &berth_core::Reference,
        accept: &[String],
    ) -> Result<ManifestRead> {
        self.stored_manifest(name, reference, accept).await
    }

    async fn local_tag(&self, name: &RepoName, tag: &str) -> Result<Option<Digest>> {
        Ok(match self.existing_repo(name).await? {
            Some(repo) => self.meta.resolve_tag(repo, tag).await?,
            None => None,
        })
    }

    async fn store_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        tag: Option<&str>,
        media_type: &str,
        payload: Vec<u8>,
    ) -> Result<()> {
        self.put_upstream_manifest(name, digest, tag, Some(media_type), payload)
            .await
    }

    async fn local_blob(&self, name: &RepoName, digest: &Digest) -> Result<Option<BlobRow>> {
        match self.stat_blob(name, digest).await {
            Ok(row) => Ok(Some(row)),
            Err(Error::BlobUnknown { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn link_from_project(
        &self,
        name: &RepoName,
        digest: &Digest,
        project: &str,
    ) -> Result<bool> {
        let prefix = format!("{project}/");
        let held = self
            .meta
            .repos_with_blob(digest)
            .await?
            .iter()
            .any(|r| r.starts_with(&prefix));
        Ok(held && self.meta.link_blob(name, digest).await?)
    }

    async fn store_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        size: u64,
        body: berth_storage::ByteStream,
    ) -> Result<()> {
        self.monolithic_upload(name, digest, Some(size), body).await
    }
}
