//! The registry service: the rules behind every /v2 operation, independent of HTTP. Handlers
//! parse a request, call one method here and turn the result into a response.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::config::Config;
use berth_core::manifest::{self, ManifestKind};
use berth_core::range::ChunkRange;
use berth_core::{Algorithm, Digest, Digester, ErrorCode, OciError, Reference, RepoName, TagName};
use berth_meta::{
    BlobRow, CommitOutcome, DeleteOutcome, ManifestRow, MetaStore, NewManifest, PutManifestError,
    ReferrerRow, RepoRef, UploadRow, now_ms,
};
use berth_storage::{BlobKey, BlobStore, ByteStream, UploadId, WriteError};

use crate::error::{ApiError, ApiResult};

/// A long streamed PATCH marks its session active this often, so the idle-upload purger
/// never takes a slow but live push.
const UPLOAD_ACTIVITY_INTERVAL: Duration = Duration::from_secs(60);
/// An upload request waits this long for buffer memory (`limits.upload_buffer_memory`)
/// before it is answered 429.
const UPLOAD_MEMORY_WAIT: Duration = Duration::from_secs(5);

pub struct Registry {
    pub meta: MetaStore,
    pub blobs: Arc<dyn BlobStore>,
    pub config: Arc<Config>,
    /// Wakes this node's job runner when the API queues a job.
    pub jobs_wake: Arc<tokio::sync::Notify>,
    /// Identities, tokens and permission checks.
    pub auth: Arc<berth_auth::Auth>,
    /// The audit trail's batched writer.
    pub audit: crate::audit::Auditor,
    /// Proxy projects: the pull-through cache.
    pub proxy: crate::pullthrough::PullThrough,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<berth_core::config::IpBlock>,
    /// The connections of this node's listeners (limits, idle clocks, counters).
    pub connections: Arc<crate::connections::Connections>,
    /// Upload sessions with a request in progress on this node: a second concurrent PATCH or
    /// PUT on the same session is refused with 416 instead of interleaving bytes.
    busy_uploads: Mutex<HashSet<String>>,
    /// `limits.upload_buffer_memory` in MiB, taken by every upload request with a body.
    upload_memory: Arc<tokio::sync::Semaphore>,
    /// MiB one upload request takes from it.
    upload_cost: u32,
}

/// Held while a request writes to an upload session.
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

/// Whether the caller of a request may read a repository (for mounts and the catalog).
#[async_trait::async_trait]
pub trait ReadCheck: Send + Sync {
    async fn may_read(&self, repo: &str) -> bool;
}

/// The state of an upload session as the client sees it.
pub struct UploadState {
    pub id: UploadId,
    pub offset: u64,
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

/// One page of a listing, and whether more entries follow it.
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

fn upload_unknown() -> ApiError {
    ApiError::oci(
        ErrorCode::BlobUploadUnknown,
        "blob upload unknown to registry",
    )
}

fn blob_unknown(digest: &Digest) -> ApiError {
    ApiError::Oci(
        OciError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
            .with_detail(serde_json::json!({ "digest": digest.to_string() })),
    )
}

fn manifest_unknown(reference: &str) -> ApiError {
    ApiError::Oci(
        OciError::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
            .with_detail(serde_json::json!({ "reference": reference })),
    )
}

fn name_unknown(name: &RepoName) -> ApiError {
    ApiError::Oci(
        OciError::new(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .with_detail(serde_json::json!({ "name": name.as_str() })),
    )
}

/// The 416 of an upload request that does not continue at the session's offset.
pub fn range_error(name: &RepoName, state: &UploadState, message: &str, base: &str) -> ApiError {
    use axum::http::{HeaderValue, header};
    let mut headers = vec![(
        header::RANGE,
        HeaderValue::from_str(&range_value(state.offset)).expect("digits"),
    )];
    if let Ok(loc) = HeaderValue::from_str(&format!("{base}/v2/{name}/blobs/uploads/{}", state.id))
    {
        headers.push((header::LOCATION, loc));
    }
    ApiError::WithHeaders(OciError::new(ErrorCode::RangeInvalid, message), headers)
}

/// The `Range` header of an upload at `offset`: bytes `0-(offset-1)` are stored. With nothing
/// stored this is `0-0`, as Distribution answers and every client parses.
pub fn range_value(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn restore_digester(row: &UploadRow) -> Result<Digester, berth_meta::MetaError> {
    Digester::restore(&row.hash_state)
        .map_err(|_| berth_meta::MetaError::Corrupt(format!("hash state of upload {}", row.id)))
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Body(e) if e.kind() == std::io::ErrorKind::TimedOut => ApiError::oci(
            ErrorCode::BlobUploadInvalid,
            "the upload body stalled; the session keeps its last offset and can be resumed",
        ),
        WriteError::Body(e) => ApiError::oci(
            ErrorCode::BlobUploadInvalid,
            format!(
                "the upload body failed ({e}); the session keeps its last offset and can be resumed"
            ),
        ),
        WriteError::TooLong(n) => ApiError::oci(
            ErrorCode::SizeInvalid,
            format!("the body is longer than the {n} bytes declared"),
        ),
        WriteError::Storage(e) => ApiError::Storage(e),
    }
}

impl Registry {
    /// The service of one node; loads the token signing keys (creating the first one).
    pub async fn new(
        meta: MetaStore,
        blobs: Arc<dyn BlobStore>,
        config: Arc<Config>,
    ) -> Result<Registry, berth_auth::AuthError> {
        let auth = Arc::new(berth_auth::Auth::new(meta.clone(), config.auth.clone()).await?);
        let audit = crate::audit::Auditor::start(meta.clone(), &config.audit);
        let trusted_proxies = config
            .server
            .trusted_proxies
            .iter()
            .filter_map(|p| berth_core::config::IpBlock::parse(p))
            .collect();
        let proxy = crate::pullthrough::PullThrough::new(&config)
            .map_err(berth_auth::AuthError::Internal)?;
        meta.set_repository_limit(config.limits.repositories_per_project);
        let budget_mib = (config.limits.upload_buffer_memory.as_u64() >> 20).max(1);
        let upload_cost = blobs
            .upload_buffer_size()
            .div_ceil(1 << 20)
            .clamp(1, budget_mib);
        let open_files = crate::connections::open_files_limit();
        let connections = crate::connections::Connections::new(
            crate::connections::ConnectionLimits::new(&config, open_files),
        );
        let registry = Registry {
            connections,
            proxy,
            trusted_proxies,
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
        };
        crate::pullthrough::ensure_projects(&registry).await?;
        Ok(registry)
    }

    /// The base of `Location` headers: empty (relative) unless an external URL is configured.
    pub fn url_base(&self) -> &str {
        self.config
            .server
            .external_url
            .as_deref()
            .map(|u| u.trim_end_matches('/'))
            .unwrap_or("")
    }

    async fn existing_repo(&self, name: &RepoName) -> ApiResult<Option<i64>> {
        Ok(self.meta.repo_id(name).await?)
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
    async fn upload_memory(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        let want = self
            .upload_memory
            .clone()
            .acquire_many_owned(self.upload_cost);
        match tokio::time::timeout(UPLOAD_MEMORY_WAIT, want).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::WithHeaders(
                OciError::new(
                    ErrorCode::TooManyRequests,
                    "too many uploads are in progress (limits.upload_buffer_memory); retry shortly",
                ),
                vec![(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(1),
                )],
            )),
        }
    }

    fn check_delete_enabled(&self) -> ApiResult<()> {
        if self.config.registry.delete_enabled {
            Ok(())
        } else {
            Err(ApiError::Oci(
                OciError::new(
                    ErrorCode::Unsupported,
                    "deletes are disabled on this registry (registry.delete_enabled)",
                )
                .with_status(405),
            ))
        }
    }

    // ---- blobs ----

    /// The blob as this repository sees it. A client that sees a blob exist may skip
    /// uploading it and reference it in a manifest later ("HEAD, 200, skip"), so the blob and
    /// the repository's link are touched whenever their times are older than half the GC
    /// grace period: a sweep can then only take them after a full grace period without
    /// touches. The touch is a write that serializes with the sweeper; if the sweeper won,
    /// the blob is answered as unknown, never as present-then-gone.
    pub async fn stat_blob(&self, name: &RepoName, digest: &Digest) -> ApiResult<BlobRow> {
        let repo = self
            .existing_repo(name)
            .await?
            .ok_or_else(|| blob_unknown(digest))?;
        let row = self
            .meta
            .blob_in_repo(repo, digest)
            .await?
            .ok_or_else(|| blob_unknown(digest))?;
        let now = now_ms();
        let touch_after = (self.config.gc.grace_period.0 / 2).as_millis() as i64;
        if now - row.touched_at.min(row.linked_at) > touch_after
            && !self.meta.touch_blob(repo, digest, now).await?
        {
            return Err(blob_unknown(digest));
        }
        Ok(row)
    }

    /// Where to send a client for the whole blob instead of streaming it (a presigned S3 URL),
    /// when `storage.s3.redirect` is on.
    pub async fn blob_redirect(&self, row: &BlobRow) -> ApiResult<Option<String>> {
        let s3 = &self.config.storage.s3;
        if !s3.redirect {
            return Ok(None);
        }
        Ok(self
            .blobs
            .presigned_read(&stored_key(row)?, s3.redirect_ttl.0)
            .await?)
    }

    pub async fn read_blob(&self, row: &BlobRow, offset: u64, len: u64) -> ApiResult<ByteStream> {
        Ok(self.blobs.read_blob(&stored_key(row)?, offset, len).await?)
    }

    pub async fn delete_blob(&self, name: &RepoName, digest: &Digest) -> ApiResult<()> {
        self.check_delete_enabled()?;
        let repo = self
            .existing_repo(name)
            .await?
            .ok_or_else(|| blob_unknown(digest))?;
        if self.meta.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(blob_unknown(digest))
        }
    }

    // ---- uploads ----

    pub async fn start_upload(
        &self,
        name: &RepoName,
        algorithm: Algorithm,
    ) -> ApiResult<UploadState> {
        let id = UploadId::new();
        self.blobs.create_upload(&id).await?;
        if let Err(e) = self
            .meta
            .create_upload(&id.to_string(), name, &Digester::new(algorithm).export())
            .await
        {
            let _ = self.blobs.delete_upload(&id).await;
            return Err(e.into());
        }
        Ok(UploadState { id, offset: 0 })
    }

    /// Links `digest` into `name` from `from` (or, without `from`, from any repository the
    /// caller may read). False when the blob cannot be mounted; the caller then opens a session.
    pub async fn mount_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
        may_read: &dyn ReadCheck,
    ) -> ApiResult<bool> {
        let source_ok = match from {
            Some(from) => match self.existing_repo(from).await? {
                Some(from_id) if may_read.may_read(from.as_str()).await => {
                    self.meta.blob_in_repo(from_id, digest).await?.is_some()
                }
                _ => false,
            },
            None => {
                let mut found = false;
                for r in self.meta.repos_with_blob(digest).await? {
                    if may_read.may_read(&r).await {
                        found = true;
                        break;
                    }
                }
                found
            }
        };
        if !source_ok {
            return Ok(false);
        }
        Ok(self.meta.link_blob(name, digest).await?)
    }

    async fn session(&self, name: &RepoName, id: &UploadId) -> ApiResult<UploadRow> {
        let row = self
            .meta
            .get_upload(&id.to_string())
            .await?
            .ok_or_else(upload_unknown)?;
        match self.existing_repo(name).await? {
            Some(repo) if repo == row.repo_id => Ok(row),
            _ => Err(upload_unknown()),
        }
    }

    /// Takes this node's write lock on an upload session and reads the session under it (a
    /// request that just finished may have moved it). A session another request is writing
    /// to answers 416 with its current offset.
    async fn lock_session(
        &self,
        name: &RepoName,
        id: &UploadId,
    ) -> ApiResult<(UploadLock<'_>, UploadRow)> {
        self.session(name, id).await?;
        let lock = self.lock_upload(id);
        let row = self.session(name, id).await?;
        match lock {
            Some(lock) => Ok((lock, row)),
            None => Err(range_error(
                name,
                &UploadState {
                    id: id.clone(),
                    offset: row.offset,
                },
                "another request is writing to this upload",
                self.url_base(),
            )),
        }
    }

    pub async fn upload_status(&self, name: &RepoName, id: &UploadId) -> ApiResult<UploadState> {
        let row = self.session(name, id).await?;
        Ok(UploadState {
            id: id.clone(),
            offset: row.offset,
        })
    }

    pub async fn cancel_upload(&self, name: &RepoName, id: &UploadId) -> ApiResult<()> {
        self.session(name, id).await?;
        let _lock = self.lock_upload(id);
        self.meta.delete_upload(&id.to_string()).await?;
        self.blobs.delete_upload(id).await?;
        Ok(())
    }

    /// Appends a chunk. `range` is the request's `Content-Range`, if any; a chunk must start at
    /// the session's offset, and a concurrent request on the same session loses with 416.
    pub async fn append_upload(
        &self,
        name: &RepoName,
        id: &UploadId,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> ApiResult<UploadState> {
        let (_lock, row) = self.lock_session(name, id).await?;
        let _memory = self.upload_memory().await?;
        let (offset, _) = self
            .append_locked(name, &row, range, content_length, body)
            .await?;
        Ok(UploadState {
            id: id.clone(),
            offset,
        })
    }

    async fn append_locked(
        &self,
        name: &RepoName,
        row: &UploadRow,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> ApiResult<(u64, Digester)> {
        let id = UploadId::parse(&row.id).ok_or_else(upload_unknown)?;
        let state = UploadState {
            id: id.clone(),
            offset: row.offset,
        };
        if let Some(r) = range {
            if r.start != row.offset {
                return Err(range_error(
                    name,
                    &state,
                    &format!(
                        "chunk starts at byte {} but the upload has {} bytes",
                        r.start, row.offset
                    ),
                    self.url_base(),
                ));
            }
            if let Some(cl) = content_length
                && cl != r.len()
            {
                return Err(ApiError::oci(
                    ErrorCode::SizeInvalid,
                    format!(
                        "Content-Length {cl} does not match Content-Range {}-{}",
                        r.start, r.end
                    ),
                ));
            }
        }
        let mut digester = restore_digester(row)?;
        let max = range.map(|r| r.len()).or(content_length);
        let written = {
            let append = self
                .blobs
                .append_upload(&id, row.offset, body, &mut digester, max);
            tokio::pin!(append);
            let mut activity = tokio::time::interval(UPLOAD_ACTIVITY_INTERVAL);
            activity.tick().await;
            loop {
                tokio::select! {
                    r = &mut append => break r.map_err(write_error)?,
                    _ = activity.tick() => {
                        if let Err(e) = self.meta.touch_upload(&row.id).await {
                            tracing::warn!(error = %e, upload = %row.id, "could not mark the upload active");
                        }
                    }
                }
            }
        };
        if let Some(r) = range
            && written != r.len()
        {
            return Err(ApiError::oci(
                ErrorCode::SizeInvalid,
                format!(
                    "Content-Range declared {} bytes but the body had {written}",
                    r.len()
                ),
            ));
        }
        let new_offset = row.offset + written;
        if !self
            .meta
            .advance_upload(&row.id, row.offset, new_offset, &digester.export())
            .await?
        {
            return Err(range_error(
                name,
                &state,
                "the upload moved on while this chunk was written",
                self.url_base(),
            ));
        }
        Ok((new_offset, digester))
    }

    /// Completes an upload, appending `body` first when it carries bytes, and verifies the
    /// digest. On a mismatch nothing is stored and the session is discarded.
    pub async fn finish_upload(
        &self,
        name: &RepoName,
        id: &UploadId,
        digest: &Digest,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
        body: Option<ByteStream>,
    ) -> ApiResult<()> {
        let (_lock, row) = self.lock_session(name, id).await?;
        let _memory = match &body {
            Some(_) => Some(self.upload_memory().await?),
            None => None,
        };
        let (size, digester) = match body {
            Some(body) => {
                self.append_locked(name, &row, range, content_length, body)
                    .await?
            }
            None => (row.offset, restore_digester(&row)?),
        };
        let actual = if digester.algorithm() == digest.algorithm() {
            digester.finish()
        } else {
            // Started without ?digest-algorithm= but finished with another algorithm's
            // digest: hash the staged bytes again. Rare, and bounded by the blob's size.
            let mut d = Digester::new(digest.algorithm());
            let mut stream = self.blobs.read_upload(id, size).await?;
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                d.update(
                    &chunk
                        .map_err(|e| berth_storage::StorageError::io("re-hashing an upload", e))?,
                );
            }
            d.finish()
        };
        if &actual != digest {
            self.meta.delete_upload(&row.id).await?;
            self.blobs.delete_upload(id).await?;
            return Err(ApiError::Oci(
                OciError::new(
                    ErrorCode::DigestInvalid,
                    format!("the uploaded content has digest {actual}, not {digest}"),
                )
                .with_detail(serde_json::json!({ "digest": digest.to_string() })),
            ));
        }
        self.commit_staged(&row.id, RepoRef::Id(row.repo_id), id, digest, size)
            .await
    }

    /// Makes staged bytes the blob `digest` of the repository (and ends the session
    /// `session`, if it has a row).
    async fn commit_staged(
        &self,
        session: &str,
        repo: RepoRef,
        id: &UploadId,
        digest: &Digest,
        size: u64,
    ) -> ApiResult<()> {
        // A digest that is already stored only needs a link: skip the rename and fsyncs.
        if self.meta.live_blob(digest).await?.is_some()
            && let CommitOutcome::AlreadyLive { .. } = self
                .meta
                .commit_blob(session, repo.clone(), digest, None)
                .await?
        {
            self.blobs.delete_upload(id).await?;
            return Ok(());
        }
        let key = BlobKey::from_upload(digest.clone(), id);
        self.blobs.commit_upload(id, size, &key).await?;
        match self
            .meta
            .commit_blob(session, repo, digest, Some((&key.generation, size)))
            .await?
        {
            CommitOutcome::Stored => {}
            CommitOutcome::AlreadyLive { .. } | CommitOutcome::NotLive => {
                self.blobs.delete_blob(&key).await?
            }
        }
        Ok(())
    }

    /// A single-request upload: `POST ...?digest=` with the whole blob as the body.
    ///
    /// No session row is written: nobody can resume or query this upload, so the bytes go
    /// straight to a staging file and, verified, become the blob in one transaction (two
    /// fewer database commits per push, which is most of the cost of small blobs). A crash
    /// mid-way leaves a staging file without a session, which scrub removes.
    pub async fn monolithic_upload(
        &self,
        name: &RepoName,
        digest: &Digest,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> ApiResult<()> {
        let _memory = self.upload_memory().await?;
        let id = UploadId::new();
        self.blobs.create_upload(&id).await?;
        let result = async {
            let mut digester = Digester::new(digest.algorithm());
            let size = self
                .blobs
                .write_whole_upload(&id, body, &mut digester, content_length)
                .await
                .map_err(write_error)?;
            let actual = digester.finish();
            if &actual != digest {
                return Err(ApiError::Oci(
                    OciError::new(
                        ErrorCode::DigestInvalid,
                        format!("the uploaded content has digest {actual}, not {digest}"),
                    )
                    .with_detail(serde_json::json!({ "digest": digest.to_string() })),
                ));
            }
            self.commit_staged(&id.to_string(), RepoRef::from(name), &id, digest, size)
                .await
        }
        .await;
        if result.is_err() {
            let _ = self.blobs.delete_upload(&id).await;
        }
        result
    }

    // ---- manifests ----

    /// Validates and stores a manifest, pointing the reference's tag and `extra_tags` (the
    /// `?tag=` parameters of a push by digest) at it in the same transaction; returns its
    /// digest and subject.
    pub async fn put_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        extra_tags: &[TagName],
        content_type: Option<&str>,
        payload: Vec<u8>,
        pushed_by: Option<&str>,
    ) -> ApiResult<(Digest, Option<Digest>)> {
        let parsed = manifest::parse_manifest(&payload, content_type)
            .map_err(|e| ApiError::oci(ErrorCode::ManifestInvalid, e.0))?;
        let references = parsed.required_blobs().count() + parsed.manifests.len();
        let max = self.config.limits.manifest_max_references as usize;
        if references > max {
            return Err(ApiError::oci(
                ErrorCode::ManifestInvalid,
                format!(
                    "the manifest references {references} blobs and manifests; at most {max} are \
                     accepted (limits.manifest_max_references)"
                ),
            ));
        }
        let mut tags: Vec<&str> = Vec::with_capacity(extra_tags.len() + 1);
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &payload);
                if &actual != d {
                    return Err(ApiError::Oci(
                        OciError::new(
                            ErrorCode::DigestInvalid,
                            format!("the manifest's digest is {actual}, not the {d} in the URL"),
                        )
                        .with_detail(serde_json::json!({ "digest": d.to_string() })),
                    ));
                }
                actual
            }
            Reference::Tag(t) => {
                tags.push(t.as_str());
                Digest::sha256_of(&payload)
            }
        };
        for t in extra_tags {
            if !tags.contains(&t.as_str()) {
                tags.push(t.as_str());
            }
        }
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
        match stored {
            // Only a manifest that lacks parts asks whether its project takes sparse ones: the
            // common push needs no project lookup.
            Err(ApiError::Oci(e))
                if (e.code == ErrorCode::ManifestBlobUnknown
                    || (e.code == ErrorCode::ManifestUnknown && e.status == Some(400)))
                    && self.accepts_sparse(name).await? =>
            {
                self.store_manifest(
                    name,
                    digest,
                    &tags,
                    &parsed,
                    payload,
                    pushed_by,
                    Storing::Sparse,
                )
                .await
            }
            other => other,
        }
    }

    /// Whether the repository's project accepts sparse manifests (its own setting, else
    /// `registry.sparse_manifests`).
    async fn accepts_sparse(&self, name: &RepoName) -> ApiResult<bool> {
        let own = self
            .meta
            .project(name.project())
            .await?
            .and_then(|p| p.sparse_manifests);
        Ok(own.unwrap_or(self.config.registry.sparse_manifests))
    }

    /// Stores a manifest fetched from a proxy project's upstream, whose blobs and children
    /// may not be here yet (they are fetched when asked for).
    pub async fn put_upstream_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        tag: Option<&str>,
        content_type: Option<&str>,
        payload: Vec<u8>,
    ) -> ApiResult<()> {
        let parsed = manifest::parse_manifest(&payload, content_type).map_err(|e| {
            ApiError::oci(
                ErrorCode::ManifestInvalid,
                format!("upstream manifest: {}", e.0),
            )
        })?;
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
    ) -> ApiResult<(Digest, Option<Digest>)> {
        let new = NewManifest {
            digest: digest.clone(),
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
            Ok(()) => Ok((digest, new.subject)),
            Err(PutManifestError::MissingBlob(d)) => Err(ApiError::Oci(
                OciError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!("blob {d} is not in repository {name}"),
                )
                .with_detail(serde_json::json!({ "digest": d.to_string() })),
            )),
            Err(PutManifestError::MissingManifest(d)) => Err(ApiError::Oci(
                OciError::new(
                    ErrorCode::ManifestUnknown,
                    format!("child manifest {d} is not in repository {name}"),
                )
                .with_detail(serde_json::json!({ "digest": d.to_string() }))
                .with_status(400),
            )),
            Err(e @ PutManifestError::SizeMismatch { .. }) => {
                Err(ApiError::oci(ErrorCode::ManifestInvalid, e.to_string()))
            }
            Err(PutManifestError::Meta(e)) => Err(e.into()),
        }
    }

    async fn resolve(&self, repo: i64, reference: &Reference) -> ApiResult<Option<Digest>> {
        Ok(match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(t) => self.meta.resolve_tag(repo, t.as_str()).await?,
        })
    }

    /// The manifest to serve for `reference`, honouring `Accept`: the stored bytes, or for a
    /// client that cannot read indexes, the linux/amd64 child of a stored index.
    pub async fn get_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        accept: &[String],
    ) -> ApiResult<Arc<ManifestRow>> {
        let repo = self
            .existing_repo(name)
            .await?
            .ok_or_else(|| name_unknown(name))?;
        let unknown = || manifest_unknown(&reference.to_string());
        let digest = self.resolve(repo, reference).await?.ok_or_else(unknown)?;
        let row = self
            .meta
            .get_manifest(repo, &digest)
            .await?
            .ok_or_else(unknown)?;
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
        let child = parsed.child_for_platform("linux", "amd64").ok_or_else(|| {
            ApiError::Oci(OciError::new(
                ErrorCode::ManifestUnknown,
                format!(
                    "{reference} is an image index without a linux/amd64 image, and the request's Accept header \
                     does not include index types"
                ),
            ))
        })?;
        self.meta
            .get_manifest(repo, &child.digest)
            .await?
            .ok_or_else(unknown)
    }

    pub async fn delete_manifest(&self, name: &RepoName, reference: &Reference) -> ApiResult<()> {
        self.check_delete_enabled()?;
        let repo = self
            .existing_repo(name)
            .await?
            .ok_or_else(|| name_unknown(name))?;
        let deleted = match reference {
            Reference::Digest(d) => match self.meta.delete_manifest(repo, d).await? {
                DeleteOutcome::Deleted(_) => true,
                DeleteOutcome::NotFound => false,
                DeleteOutcome::Listed(parents) => {
                    // The spec lists 202, 400, 404 and 405 for a manifest delete: a refusal
                    // the client must not retry is 400.
                    return Err(ApiError::Oci(
                        OciError::new(
                            ErrorCode::Denied,
                            format!(
                                "conflict: {d} is listed by the image index {} of this repository; delete the index first",
                                parents.join(", ")
                            ),
                        )
                        .with_status(400)
                        .with_detail(serde_json::json!({ "digest": d.to_string(), "indexes": parents })),
                    ));
                }
            },
            Reference::Tag(t) => self.meta.delete_tag(repo, t.as_str()).await?,
        };
        if deleted {
            Ok(())
        } else {
            Err(manifest_unknown(&reference.to_string()))
        }
    }

    // ---- repositories ----

    /// Deletes a repository with its tags, manifests, blob links and upload sessions (their
    /// staged bytes too); blobs nothing else uses go with the next garbage collection.
    pub async fn delete_repository(
        &self,
        name: &RepoName,
    ) -> ApiResult<Option<berth_meta::RepoDeletion>> {
        self.check_delete_enabled()?;
        let Some(report) = self.meta.delete_repository(name).await? else {
            return Ok(None);
        };
        for id in &report.uploads {
            if let Some(uid) = UploadId::parse(id)
                && let Err(e) = self.blobs.delete_upload(&uid).await
            {
                tracing::warn!(upload = %id, error = %e, "deleting the bytes of an upload of a deleted repository");
            }
        }
        Ok(Some(report))
    }

    // ---- listings ----

    pub async fn tags(
        &self,
        name: &RepoName,
        last: Option<&str>,
        n: u32,
    ) -> ApiResult<Page<String>> {
        let repo = self
            .existing_repo(name)
            .await?
            .ok_or_else(|| name_unknown(name))?;
        let mut items = self.meta.list_tags(repo, last, n.saturating_add(1)).await?;
        Ok(page(&mut items, n))
    }

    /// Repository names after `last` that `visible` accepts, at most `n`.
    pub async fn catalog(
        &self,
        last: Option<&str>,
        n: u32,
        visible: &dyn ReadCheck,
    ) -> ApiResult<Page<String>> {
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
        Ok(page(&mut items, n))
    }

    pub async fn referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> ApiResult<Page<ReferrerRow>> {
        // The spec forbids a 404 here (a client would fall back to the tag schema): an unknown
        // repository simply has no referrers yet.
        let Some(repo) = self.existing_repo(name).await? else {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        };
        let mut items = self
            .meta
            .referrers(repo, subject, artifact_type, last, n.saturating_add(1))
            .await?;
        Ok(page(&mut items, n))
    }
}

fn page<T>(items: &mut Vec<T>, n: u32) -> Page<T> {
    // With n=0 a next link would point at the same empty page forever.
    let more = n > 0 && items.len() > n as usize;
    items.truncate(n as usize);
    Page {
        items: std::mem::take(items),
        more,
    }
}

/// The stored object of a blob row.
fn stored_key(row: &BlobRow) -> Result<BlobKey, berth_meta::MetaError> {
    BlobKey::new(row.digest.clone(), &row.generation).ok_or_else(|| {
        berth_meta::MetaError::Corrupt(format!("blob generation {:?}", row.generation))
    })
}
