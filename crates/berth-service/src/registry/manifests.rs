//! Manifests: a push (validated, stored as the exact bytes received, with its tags in the same
//! transaction, sparse when the project allows), a pull (the stored bytes, or a platform's
//! image for a client that cannot read indexes; through the upstream in a proxy project), and
//! a delete, which takes what depends on the manifest with it (referrers, cosign tags, index
//! children nothing else lists: see berth-meta's `gc.rs`, `delete_manifest_cascade`).

use std::sync::Arc;

use berth_core::manifest::{self, ManifestKind};
use berth_core::{Digest, Reference, RepoName, TagName};
use berth_meta::{DeleteOutcome, ManifestRow, NewManifest, PutManifestError};

use crate::access::Actor;
use crate::{Error, Registry, Result};

/// A stored manifest, as a GET or HEAD serves it.
pub type ManifestRead = Arc<ManifestRow>;

/// What a push stored.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// The `?tag=` tags set with it, to confirm in `OCI-Tag` headers.
    pub tags: Vec<TagName>,
}

/// Where a manifest being stored comes from, which decides what it must reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storing {
    /// A client's push: every blob and child must be in the repository.
    Pushed,
    /// A client's push to a project that takes sparse manifests: what is present must match.
    Sparse,
    /// A proxy project's copy of its upstream's manifest: parts are fetched when asked for.
    FromUpstream,
}

/// `repo:tag` or `repo@digest`, as the audit log names an artifact.
pub(crate) fn resource_name(name: &RepoName, r: &Reference) -> String {
    match r {
        Reference::Tag(t) => format!("{name}:{}", t.as_str()),
        Reference::Digest(d) => format!("{name}@{d}"),
    }
}

fn manifest_unknown(reference: &Reference) -> Error {
    Error::ManifestUnknown {
        reference: reference.to_string(),
    }
}

impl Registry {
    /// Validates and stores a manifest, pointing the reference's tag and `extra_tags` (the
    /// `?tag=` parameters of a push by digest) at it in the same transaction.
    pub async fn put_manifest(
        &self,
        actor: &Actor,
        name: &RepoName,
        reference: &Reference,
        extra_tags: Vec<TagName>,
        content_type: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<PushedManifest> {
        let parsed = manifest::parse_manifest(&payload, content_type)
            .map_err(|e| Error::manifest_invalid(e.0))?;
        let references = parsed.required_blobs().count() + parsed.manifests.len();
        let max = self.config.limits.manifest_max_references as usize;
        if references > max {
            return Err(Error::manifest_invalid(format!(
                "the manifest references {references} blobs and manifests; at most {max} are \
                 accepted (limits.manifest_max_references)"
            )));
        }
        let mut tags: Vec<&str> = Vec::with_capacity(extra_tags.len() + 1);
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &payload);
                if &actual != d {
                    return Err(Error::DigestMismatch {
                        expected: d.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(t) => {
                tags.push(t.as_str());
                Digest::sha256_of(&payload)
            }
        };
        for t in &extra_tags {
            if !tags.contains(&t.as_str()) {
                tags.push(t.as_str());
            }
        }
        let pushed_by = Some(actor.principal.name());
        let stored = self
            .store_manifest(
                name,
                digest.clone(),
                &tags,
                &parsed,
                payload.clone(),
                pushed_by,
                Storing::Pushed,
            )
            .await;
        let subject = match stored {
            // Only a manifest that lacks parts asks whether its project takes sparse ones: the
            // common push needs no project lookup.
            Err(Error::ManifestBlobUnknown { .. } | Error::ManifestChildUnknown { .. })
                if self.accepts_sparse(name).await? =>
            {
                self.store_manifest(
                    name,
                    digest.clone(),
                    &tags,
                    &parsed,
                    payload,
                    pushed_by,
                    Storing::Sparse,
                )
                .await?
            }
            other => other?,
        };
        let detail = if extra_tags.is_empty() {
            format!("digest {digest}")
        } else {
            let t: Vec<&str> = extra_tags.iter().map(TagName::as_str).collect();
            format!("digest {digest}, tags {}", t.join(" "))
        };
        self.audit
            .record(
                actor,
                "push",
                &resource_name(name, reference),
                true,
                &detail,
            )
            .await;
        Ok(PushedManifest {
            digest,
            subject,
            tags: extra_tags,
        })
    }

    /// Whether the repository's project accepts sparse manifests (its own setting, else
    /// `registry.sparse_manifests`).
    async fn accepts_sparse(&self, name: &RepoName) -> Result<bool> {
        let own = self
            .meta
            .project(name.project())
            .await?
            .and_then(|p| p.sparse_manifests);
        Ok(own.unwrap_or(self.config.registry.sparse_manifests))
    }

    /// Stores a manifest fetched from a proxy project's upstream, whose blobs and children
    /// may not be here yet (they are fetched when asked for).
    pub(crate) async fn put_upstream_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        tag: Option<&str>,
        content_type: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<()> {
        let parsed = manifest::parse_manifest(&payload, content_type)
            .map_err(|e| Error::manifest_invalid(format!("upstream manifest: {}", e.0)))?;
        let tags: Vec<&str> = tag.into_iter().collect();
        self.store_manifest(
            name,
            digest.clone(),
            &tags,
            &parsed,
            payload,
            None,
            Storing::FromUpstream,
        )
        .await
        .map(|_| ())
    }

    /// Stores the manifest; returns its subject.
    #[allow(clippy::too_many_arguments)]
    async fn store_manifest(
        &self,
        name: &RepoName,
        digest: Digest,
        tags: &[&str],
        parsed: &manifest::ParsedManifest,
        payload: Vec<u8>,
        pushed_by: Option<&str>,
        storing: Storing,
    ) -> Result<Option<Digest>> {
        let new = NewManifest {
            digest,
            media_type: parsed.media_type.clone(),
            artifact_type: parsed.artifact_type.clone(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            config_digest: parsed.config.as_ref().map(|c| c.digest.clone()),
            annotations: parsed
                .annotations
                .as_ref()
                .and_then(|a| serde_json::to_string(a).ok()),
            blobs: parsed
                .required_blobs()
                .map(|d| (d.digest.clone(), d.size))
                .collect(),
            children: if parsed.kind == ManifestKind::Index {
                parsed
                    .manifests
                    .iter()
                    .map(|d| (d.digest.clone(), d.size))
                    .collect()
            } else {
                Vec::new()
            },
            pushed_by: pushed_by.filter(|p| !p.is_empty()).map(str::to_owned),
            from_upstream: storing == Storing::FromUpstream,
            sparse: storing == Storing::Sparse,
            payload,
        };
        match self.meta.put_manifest(name, &new, tags).await {
            Ok(()) => Ok(new.subject),
            Err(PutManifestError::MissingBlob(digest)) => Err(Error::ManifestBlobUnknown {
                digest,
                repository: name.to_string(),
            }),
            Err(PutManifestError::MissingManifest(digest)) => Err(Error::ManifestChildUnknown {
                digest,
                repository: name.to_string(),
            }),
            Err(e @ PutManifestError::SizeMismatch { .. }) => {
                Err(Error::manifest_invalid(e.to_string()))
            }
            Err(PutManifestError::Meta(e)) => Err(e.into()),
        }
    }

    async fn resolve(&self, repo: i64, reference: &Reference) -> Result<Option<Digest>> {
        Ok(match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(t) => self.meta.resolve_tag(repo, t.as_str()).await?,
        })
    }

    /// A manifest GET (`record`: audited as a pull) or HEAD, honouring `Accept`; in a proxy
    /// project through the upstream.
    pub async fn get_manifest(
        &self,
        actor: &Actor,
        name: &RepoName,
        reference: &Reference,
        accept: &[String],
        record: bool,
    ) -> Result<ManifestRead> {
        let row = match self.proxy.project_of(name) {
            Some(p) => {
                self.proxy
                    .get_manifest(self, p, name, reference, accept)
                    .await?
            }
            None => self.stored_manifest(name, reference, accept).await?,
        };
        if record {
            self.audit
                .record_pull(actor, &resource_name(name, reference));
        }
        Ok(row)
    }

    /// The stored manifest for `reference`, honouring `Accept`: the stored bytes, or for a
    /// client that cannot read indexes, the linux/amd64 child of a stored index.
    pub(crate) async fn stored_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        accept: &[String],
    ) -> Result<ManifestRead> {
        let repo = self.repo_or_unknown(name).await?;
        let digest = self
            .resolve(repo, reference)
            .await?
            .ok_or_else(|| manifest_unknown(reference))?;
        let row = self
            .meta
            .get_manifest(repo, &digest)
            .await?
            .ok_or_else(|| manifest_unknown(reference))?;
        let accepts_all =
            accept.is_empty() || accept.iter().any(|a| a == "*/*" || *a == row.media_type);
        if accepts_all
            || !manifest::is_index_type(&row.media_type)
            || accept.iter().any(|a| manifest::is_index_type(a))
        {
            return Ok(row);
        }
        // The client's Accept excludes indexes: serve the linux/amd64 image, as Distribution does.
        let parsed =
            manifest::parse_manifest(&row.payload, Some(&row.media_type)).map_err(|e| {
                berth_meta::MetaError::Corrupt(format!("stored manifest {}: {e}", row.digest))
            })?;
        let child =
            parsed
                .child_for_platform("linux", "amd64")
                .ok_or_else(|| Error::NoPlatformImage {
                    reference: reference.to_string(),
                })?;
        self.meta
            .get_manifest(repo, &child.digest)
            .await?
            .ok_or_else(|| manifest_unknown(reference))
    }

    /// Deletes a manifest by digest with what depends on it, or a tag (the manifest stays).
    pub async fn delete_manifest(
        &self,
        actor: &Actor,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<()> {
        self.check_delete_enabled()?;
        let repo = self.repo_or_unknown(name).await?;
        let deleted = match reference {
            Reference::Digest(d) => match self
                .meta
                .delete_manifest(repo, d, actor.principal.name())
                .await?
            {
                DeleteOutcome::Deleted(_) => true,
                DeleteOutcome::NotFound => false,
                DeleteOutcome::Listed(indexes) => {
                    return Err(Error::ListedBy {
                        digest: d.clone(),
                        indexes,
                    });
                }
            },
            Reference::Tag(t) => {
                self.meta
                    .delete_tag(repo, t.as_str(), actor.principal.name())
                    .await?
            }
        };
        if !deleted {
            return Err(manifest_unknown(reference));
        }
        self.audit
            .record(actor, "delete", &resource_name(name, reference), true, "")
            .await;
        Ok(())
    }
}
