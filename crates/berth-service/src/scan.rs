//! The package inventory of an artifact (berth-scan's walker over its stored layers) and the
//! SBOM documents made from it.
//!
//! Layers are read from the blob store as streams, on a blocking thread (the walker and its
//! decompressors are synchronous), at most `scan.concurrency` inventories at once on a node.
//! A layer the repository does not hold (a sparse image) makes the inventory "incomplete" with
//! the layer named; an index is inventoried per platform child.

use std::io::{self, Read};
use std::sync::Arc;

use berth_core::access::Action;
use berth_core::{Digest, RepoName};
use berth_scan::image::{Scannable, classify};
use berth_scan::walk::{self, LayerRef, Layers, Limits, WalkError};
use berth_scan::{Coverage, Inventory};
use berth_storage::BlobStore;
use serde::Serialize;

use crate::access::Actor;
use crate::{Error, Registry, Result};

/// What an artifact holds: one image's inventory, or one per platform of an index.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArtifactInventory {
    Image {
        digest: String,
        #[serde(flatten)]
        inventory: Inventory,
    },
    Index {
        digest: String,
        platforms: Vec<PlatformInventory>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformInventory {
    pub digest: String,
    pub platform: Option<String>,
    #[serde(flatten)]
    pub inventory: Inventory,
}

impl Registry {
    /// The walker's bounds, from `[scan]`.
    fn scan_limits(&self) -> Limits {
        let c = &self.config.scan;
        let mut limits = Limits {
            max_file_bytes: c.max_file_size.as_u64(),
            max_layer_bytes: c.max_layer_size.as_u64(),
            max_paths: usize::try_from(c.max_paths).unwrap_or(usize::MAX),
            max_duration: c.timeout.0,
            ..Limits::default()
        };
        limits.java.max_total_bytes = c.max_archive_size.as_u64();
        limits
    }

    /// The package inventory of the artifact `digest` of `repo`, which the caller must be
    /// allowed to pull.
    pub async fn inventory(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<ArtifactInventory> {
        self.require(actor, repo, Action::Pull).await?;
        let repo_id = self
            .meta
            .repo_id(repo)
            .await?
            .ok_or_else(|| Error::not_found(format!("repository {repo}")))?;
        let row = self
            .meta
            .get_manifest(repo_id, digest)
            .await?
            .ok_or_else(|| Error::not_found(format!("artifact {digest}")))?;
        match classify(&row.media_type, &row.payload) {
            Scannable::Index(children) => {
                let mut platforms = Vec::new();
                for child in children {
                    let inventory = match Digest::parse(&child.digest) {
                        Ok(d) => match self.meta.get_manifest(repo_id, &d).await? {
                            Some(m) => {
                                self.inventory_of(repo_id, &m.media_type, &m.payload)
                                    .await?
                            }
                            None => not_scannable(format!(
                                "the index lists {d}, which this repository does not hold"
                            )),
                        },
                        Err(e) => not_scannable(format!("the index lists {:?}: {e}", child.digest)),
                    };
                    platforms.push(PlatformInventory {
                        digest: child.digest,
                        platform: child.platform,
                        inventory,
                    });
                }
                Ok(ArtifactInventory::Index {
                    digest: digest.to_string(),
                    platforms,
                })
            }
            _ => Ok(ArtifactInventory::Image {
                digest: digest.to_string(),
                inventory: self
                    .inventory_of(repo_id, &row.media_type, &row.payload)
                    .await?,
            }),
        }
    }

    /// The inventory of one image manifest (an index nested in an index is not followed).
    async fn inventory_of(
        &self,
        repo_id: i64,
        media_type: &str,
        payload: &[u8],
    ) -> Result<Inventory> {
        let layers = match classify(media_type, payload) {
            Scannable::Image(layers) => layers,
            Scannable::Index(_) => return Ok(not_scannable("an index inside an index".into())),
            Scannable::Not(reason) => return Ok(not_scannable(reason)),
        };
        let _slot = self
            .scan_slots
            .acquire()
            .await
            .map_err(|_| Error::Internal("the scan slots are closed".into()))?;
        let mut store = StoredLayers {
            meta: self.meta.clone(),
            blobs: self.blobs.clone(),
            repo_id,
            handle: tokio::runtime::Handle::current(),
        };
        let limits = self.scan_limits();
        let walked =
            tokio::task::spawn_blocking(move || walk::inventory(&layers, &mut store, &limits))
                .await
                .map_err(|e| Error::Internal(format!("the layer walker stopped: {e}")))?;
        walked.map_err(|e| match e {
            WalkError::Read { digest, source } => Error::Storage(berth_storage::StorageError::io(
                format!("reading layer {digest}"),
                source,
            )),
            limit => Error::ScanFailed {
                reason: limit.to_string(),
            },
        })
    }
}

fn not_scannable(reason: String) -> Inventory {
    Inventory {
        coverage: Coverage::NotScannable { reason },
        os: None,
        packages: Vec::new(),
        skipped: Vec::new(),
        errors: Vec::new(),
    }
}

/// Layers from the blob store, as the repository sees them.
struct StoredLayers {
    meta: berth_meta::MetaStore,
    blobs: Arc<dyn BlobStore>,
    repo_id: i64,
    handle: tokio::runtime::Handle,
}

impl Layers for StoredLayers {
    fn open(&mut self, layer: &LayerRef) -> io::Result<Option<Box<dyn Read + Send>>> {
        let other = |e: String| io::Error::other(e);
        let digest = Digest::parse(&layer.digest).map_err(|e| other(e.to_string()))?;
        let Some(row) = self
            .handle
            .block_on(self.meta.blob_in_repo(self.repo_id, &digest))
            .map_err(|e| other(e.to_string()))?
        else {
            return Ok(None);
        };
        let key = crate::registry::stored_key(&row).map_err(|e| other(e.to_string()))?;
        let stream = self
            .handle
            .block_on(self.blobs.read_blob(&key, 0, row.size))
            .map_err(|e| other(e.to_string()))?;
        let reader = tokio_util::io::StreamReader::new(stream);
        Ok(Some(Box::new(
            tokio_util::io::SyncIoBridge::new_with_handle(reader, self.handle.clone()),
        )))
    }
}

/// The SBOM document formats served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX JSON.
    CycloneDx,
}

impl SbomFormat {
    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "application/spdx+json",
            SbomFormat::CycloneDx => "application/vnd.cyclonedx+json",
        }
    }
}

impl Registry {
    /// The SBOM of the image `digest` of `repo`, as (media type, document). An index has one
    /// per platform: the refusal names its children.
    pub async fn sbom(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
        format: SbomFormat,
    ) -> Result<(&'static str, serde_json::Value)> {
        let inventory = match self.inventory(actor, repo, digest).await? {
            ArtifactInventory::Image { inventory, .. } => inventory,
            ArtifactInventory::Index { platforms, .. } => {
                let children: Vec<String> = platforms
                    .iter()
                    .map(|p| {
                        format!(
                            "{} ({})",
                            p.digest,
                            p.platform.as_deref().unwrap_or("no platform")
                        )
                    })
                    .collect();
                return Err(Error::invalid(format!(
                    "{digest} is an index; an SBOM describes one image: ask for one of {}",
                    children.join(", ")
                )));
            }
        };
        if let Coverage::NotScannable { reason } = &inventory.coverage {
            return Err(Error::invalid(format!(
                "{digest} is not an image: {reason}"
            )));
        }
        let repo_id = self.meta.repo_id(repo).await?.unwrap_or_default();
        let tags = self
            .meta
            .tag_rows(repo_id)
            .await?
            .into_iter()
            .filter(|t| &t.digest == digest)
            .map(|t| t.name)
            .collect();
        // The image's purl names the registry when the operator said where it is.
        let repository = match &self.config.server.external_url {
            Some(url) => {
                let host = url.split_once("://").map_or(url.as_str(), |(_, h)| h);
                format!("{}/{repo}", host.trim_end_matches('/'))
            }
            None => repo.to_string(),
        };
        let subject = berth_scan::sbom::Subject {
            repository,
            digest: digest.to_string(),
            tags,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            uuid: uuid::Uuid::new_v4().to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let document = match format {
            SbomFormat::Spdx => berth_scan::sbom::spdx(&inventory, &subject),
            SbomFormat::CycloneDx => berth_scan::sbom::cyclonedx(&inventory, &subject),
        };
        Ok((format.media_type(), document))
    }
}

/// The empty JSON config of an artifact (image-spec 1.1).
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

impl Registry {
    /// Makes the SBOM of the image `digest` and pushes it beside the image as an OCI referrer
    /// (`artifactType` the document's media type, `subject` the image), so that the referrers
    /// API lists it; the caller must be allowed to push. Returns the referrer's digest.
    pub async fn push_sbom(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
        format: SbomFormat,
    ) -> Result<Digest> {
        self.require(actor, repo, Action::Push).await?;
        let (media_type, document) = self.sbom(actor, repo, digest, format).await?;
        let subject = self
            .meta
            .get_manifest(
                self.meta
                    .repo_id(repo)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("repository {repo}")))?,
                digest,
            )
            .await?
            .ok_or_else(|| Error::not_found(format!("artifact {digest}")))?;
        let body = serde_json::to_vec(&document).map_err(|e| Error::Internal(e.to_string()))?;
        for blob in [EMPTY_CONFIG, body.as_slice()] {
            let d = Digest::sha256_of(blob);
            let bytes = bytes::Bytes::copy_from_slice(blob);
            let stream: berth_storage::ByteStream =
                Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
            self.monolithic_upload(repo, &d, Some(blob.len() as u64), stream)
                .await?;
        }
        let descriptor = |media_type: &str, bytes: &[u8]| {
            serde_json::json!({
                "mediaType": media_type,
                "digest": Digest::sha256_of(bytes).to_string(),
                "size": bytes.len(),
            })
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": media_type,
            "config": descriptor(EMPTY_MEDIA_TYPE, EMPTY_CONFIG),
            "layers": [descriptor(media_type, &body)],
            "subject": {
                "mediaType": subject.media_type,
                "digest": digest.to_string(),
                "size": subject.payload.len(),
            },
            "annotations": {
                "org.opencontainers.image.created": document_time(&document),
                "dev.berth.sbom.generator": concat!("berth ", env!("CARGO_PKG_VERSION")),
            },
        });
        let payload = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        let referrer = Digest::sha256_of(&payload);
        self.put_manifest(
            actor,
            repo,
            &berth_core::Reference::Digest(referrer.clone()),
            Vec::new(),
            Some("application/vnd.oci.image.manifest.v1+json"),
            payload,
        )
        .await?;
        Ok(referrer)
    }
}

/// When the document was made (SPDX `creationInfo.created`, CycloneDX `metadata.timestamp`).
fn document_time(document: &serde_json::Value) -> String {
    document["creationInfo"]["created"]
        .as_str()
        .or_else(|| document["metadata"]["timestamp"].as_str())
        .unwrap_or_default()
        .to_owned()
}
