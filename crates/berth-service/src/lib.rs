//! The rules of the registry, with no HTTP in them: what a push, a pull, a delete or an admin
//! change does, who may do it, and what it records. The HTTP layer (berth-server) parses a
//! request, calls one method here and turns the result, or the [`Error`], into a response.
//!
//! Where things are:
//! - `registry/`: the OCI registry: `blobs.rs` (stat, read, delete, mount), `uploads.rs`
//!   (sessions, chunks, completion), `manifests.rs` (put, get, delete, with tags and sparse
//!   manifests), `listings.rs` (tags, catalog, referrers), `repositories.rs` (deleting one);
//! - `pullthrough.rs`: proxy projects, which serve what an upstream registry has, through a
//!   narrow interface to the registry ([`pullthrough::LocalStore`]);
//! - `access.rs`: who the caller is ([`Actor`]) and whether they may;
//! - `admin/`: projects and members, users, robots, the audit log, search, signing keys;
//! - `audit.rs`: the batched writer of the audit trail;
//! - `tokens.rs`: the token endpoint's logins and grants;
//! - `jobs.rs`: garbage collection, scrub and their reports, storage accounting.
//!
//! The SQL behind every method is in berth-meta; a request is found as route (berth-server)
//! → method here → query there.

pub mod access;
pub mod admin;
pub mod audit;
pub mod error;
pub mod jobs;
pub mod pullthrough;
mod registry;
pub mod scan;
pub mod tokens;
pub mod vulndb;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use berth_core::config::Config;
use berth_meta::MetaStore;
use berth_storage::BlobStore;

pub use access::Actor;
pub use error::{Error, Result};
pub use registry::{BlobRead, BlobSource, ManifestRead, Page, PushedManifest, UploadState};

/// Whether the caller of a request may read a repository (for mounts and the catalog).
#[async_trait::async_trait]
pub trait ReadCheck: Send + Sync {
    async fn may_read(&self, repo: &str) -> bool;
}

/// The services of one node, over its stores: every request goes through one of its methods.
pub struct Registry {
    pub meta: MetaStore,
    pub blobs: Arc<dyn BlobStore>,
    pub config: Arc<Config>,
    /// Wakes this node's job runner when a job is queued here.
    pub jobs_wake: Arc<tokio::sync::Notify>,
    /// Identities, tokens and permission checks.
    pub auth: Arc<berth_auth::Auth>,
    /// The audit trail's batched writer.
    pub audit: audit::Auditor,
    /// Proxy projects: the pull-through cache.
    pub proxy: pullthrough::PullThrough,
    /// Upload sessions with a request in progress on this node: a second concurrent PATCH or
    /// PUT on the same session is refused instead of interleaving bytes.
    busy_uploads: Mutex<HashSet<String>>,
    /// `limits.upload_buffer_memory` in MiB, taken by every upload request with a body.
    upload_memory: Arc<tokio::sync::Semaphore>,
    /// MiB one upload request takes from it.
    upload_cost: u32,
    /// `scan.concurrency`: inventories read at once on this node.
    scan_slots: tokio::sync::Semaphore,
    /// The vulnerability database, opened at first use.
    vulndb: tokio::sync::OnceCell<berth_meta::VulnStore>,
}

impl Registry {
    /// The services of one node; loads the token signing keys (creating the first one) and
    /// creates the configured proxy projects.
    pub async fn new(
        meta: MetaStore,
        blobs: Arc<dyn BlobStore>,
        config: Arc<Config>,
    ) -> Result<Registry> {
        let auth = Arc::new(berth_auth::Auth::new(meta.clone(), config.auth.clone()).await?);
        let audit = audit::Auditor::start(meta.clone(), &config.audit);
        let proxy = pullthrough::PullThrough::new(&config).map_err(Error::Internal)?;
        meta.set_repository_limit(config.limits.repositories_per_project);
        let budget_mib = (config.limits.upload_buffer_memory.as_u64() >> 20).max(1);
        let upload_cost = blobs
            .upload_buffer_size()
            .div_ceil(1 << 20)
            .clamp(1, budget_mib);
        let scan_slots = tokio::sync::Semaphore::new(config.scan.concurrency as usize);
        let registry = Registry {
            proxy,
            meta,
            blobs,
            config,
            jobs_wake: Arc::new(tokio::sync::Notify::new()),
            auth,
            audit,
            busy_uploads: Mutex::new(HashSet::new()),
            upload_memory: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(budget_mib).unwrap_or(usize::MAX >> 4),
            )),
            upload_cost: u32::try_from(upload_cost).unwrap_or(u32::MAX),
            scan_slots,
            vulndb: tokio::sync::OnceCell::new(),
        };
        registry.proxy.ensure_projects(&registry.meta).await?;
        Ok(registry)
    }
}
