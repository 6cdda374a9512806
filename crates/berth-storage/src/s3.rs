//! The S3 BlobStore (any S3-compatible service), through `object_store`'s `aws` client.
//!
//! Layout in the bucket, under an optional key prefix:
//! - `blobs/<alg>/<first two hex>/<hex>/<generation>`: committed blobs, as in the filesystem
//!   store.
//! - `uploads/<upload-id>/created`: an empty marker written by `create_upload`, so an upload
//!   with no bytes yet is still listed and known.
//! - `uploads/<upload-id>/<offset, 20 digits>`: staged chunks, each holding the upload's bytes
//!   from that offset, at most `part_size` bytes. Every staged byte lives in the bucket, never on
//!   a node's disk, so any node can continue or commit any upload.
//!
//! Appending streams the body into chunk objects: up to one part is buffered while the previous
//! one is being PUT (so receiving and uploading overlap, and memory per upload stays at two
//! parts at most). A PUT is durable once S3 acknowledges it, and an append returns only when
//! all of its PUTs have been acknowledged.
//!
//! Committing assembles the chunks into the blob object: a server-side copy when the upload is
//! one chunk of exactly the blob's length, one PUT when the blob is at most `part_size`, and
//! otherwise a multipart upload with parts of at least 5 MiB (S3's minimum), grown so that no
//! blob needs more than 10,000 parts. The staged chunks are deleted afterwards.

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::Digester;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

use crate::{
    BlobKey, BlobStore, ByteStream, StorageError, StorageErrorKind, StoredObject, UploadId,
    WriteError,
};

/// Default size of a staged chunk, and the smallest multipart part used for large blobs.
pub const DEFAULT_PART_SIZE: usize = 16 << 20;
/// S3's smallest part of a multipart upload (all but the last part).
const MIN_MULTIPART_PART: u64 = 5 << 20;
/// S3's largest number of parts in a multipart upload.
const MAX_PARTS: u64 = 10_000;
/// S3's largest single PUT (and CopyObject) and largest part.
const MAX_PUT: u64 = 5 << 30;
const MARKER: &str = "created";

/// How to reach the bucket. Credentials, region and endpoint that are not set here come from
/// the standard `AWS_*` environment variables (and then the usual AWS credential chain:
/// web identity, container or instance credentials).
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `us-east-1`; `None`: `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// A custom endpoint for S3-compatible services, e.g. `http://127.0.0.1:5055`.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible services need;
    /// `false` uses virtual-hosted-style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Key prefix under which everything is stored, e.g. `berth/` (empty: the bucket's root).
    pub prefix: String,
    /// Largest staged chunk, and so the memory an upload buffers (twice this at most, while one
    /// part is being uploaded and the next is filled). Also the threshold above which a commit
    /// uses a multipart upload, and the smallest part of one (raised to S3's 5 MiB minimum).
    pub part_size: usize,
    /// Allow a plain-HTTP endpoint (tests and local services only).
    pub allow_http: bool,
    /// PEM CA certificates to trust for the endpoint, beside the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Retries of a failed request (a 5xx, a throttling answer, a lost connection) at most,
    /// and for how long in all; then the caller gets the error (a client sees 503).
    pub max_retries: usize,
    pub retry_timeout: Duration,
    /// One request waits this long for the service's answer (its headers) at most.
    pub read_timeout: Duration,
}

impl S3Config {
    /// A config for `bucket` with the defaults: region, endpoint and credentials from the
    /// environment, virtual-hosted-style requests, no prefix, 16 MiB parts, HTTPS only.
    pub fn new(bucket: impl Into<String>) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            region: None,
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            path_style: false,
            prefix: String::new(),
            part_size: DEFAULT_PART_SIZE,
            allow_http: false,
            ca_file: None,
            max_retries: 4,
            retry_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    bucket: String,
    /// The key prefix as a path (empty: the bucket's root).
    root: Path,
    part_size: usize,
}

/// One staged chunk of an upload: bytes `start..start + size`.
#[derive(Debug, Clone)]
struct Chunk {
    start: u64,
    size: u64,
    path: Path,
}

/// What is stored under an upload's prefix.
struct Staged {
    /// Sorted by `start`.
    chunks: Vec<Chunk>,
    /// The marker and anything else that is not a chunk.
    others: Vec<Path>,
}

fn config_err(msg: impl Into<String>) -> StorageError {
    StorageError {
        kind: StorageErrorKind::Io,
        what: "S3 configuration".into(),
        source: io::Error::new(io::ErrorKind::InvalidInput, msg.into()),
    }
}

/// Whether a timeout is somewhere in the error's chain of sources.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<HttpError>()
            && h.kind() == HttpErrorKind::Timeout
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// What the S3 service answered, read from an error's chain of messages: object_store keeps
/// the status and the S3 error document in them (its retry error type is not public).
fn service_answer(e: &(dyn std::error::Error + 'static)) -> (Option<u16>, String) {
    let mut text = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        text.push_str(&err.to_string());
        text.push('\n');
        cur = err.source();
    }
    let status = text
        .split("status code: ")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok());
    (status, text)
}

fn kind_of(e: &object_store::Error) -> StorageErrorKind {
    match e {
        object_store::Error::NotFound { .. } => StorageErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => StorageErrorKind::Unauthorized,
        e if is_timeout(e) => StorageErrorKind::Timeout,
        e => {
            let (status, text) = service_answer(e);
            // Out of space or quota: MinIO answers 507 (XMinioStorageFull), Ceph RGW and
            // others 403 QuotaExceeded.
            if status == Some(507)
                || ["QuotaExceeded", "XMinioStorageFull", "StorageFull"]
                    .iter()
                    .any(|c| text.contains(c))
            {
                StorageErrorKind::Full
            } else if status.is_some_and(|s| s >= 500)
                || ["SlowDown", "ServiceUnavailable", "connection", "Connection"]
                    .iter()
                    .any(|c| text.contains(c))
            {
                StorageErrorKind::Unavailable
            } else {
                StorageErrorKind::Io
            }
        }
    }
}

fn to_io(e: object_store::Error) -> io::Error {
    let kind = match kind_of(&e) {
        StorageErrorKind::NotFound => io::ErrorKind::NotFound,
        StorageErrorKind::Timeout => io::ErrorKind::TimedOut,
        StorageErrorKind::Unauthorized => io::ErrorKind::PermissionDenied,
        StorageErrorKind::Full => io::ErrorKind::StorageFull,
        StorageErrorKind::Unavailable => io::ErrorKind::ConnectionRefused,
        StorageErrorKind::Io => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl S3BlobStore {
    /// Builds the client; nothing is sent to the service until the first call (see
    /// [`S3BlobStore::check`]).
    pub fn new(cfg: &S3Config) -> Result<S3BlobStore, StorageError> {
        if cfg.bucket.is_empty() {
            return Err(config_err("the bucket name is empty"));
        }
        if cfg.part_size == 0 || cfg.part_size as u64 > MAX_PUT {
            return Err(config_err(format!(
                "part size {} is not between 1 byte and 5 GiB",
                cfg.part_size
            )));
        }
        let prefix = cfg.prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            Path::default()
        } else {
            Path::parse(prefix)
                .map_err(|e| config_err(format!("invalid key prefix {prefix:?}: {e}")))?
        };
        // No whole-request timeout: a blob read is one GET streamed to the client for as long
        // as the client takes. A stalled connection is caught by the read timeout instead,
        // which (in reqwest) runs from the start of a request to its response headers, so it
        // also bounds the upload of one part: 120 s is 16 MiB at 140 KB/s.
        let mut client = ClientOptions::new()
            .with_timeout_disabled()
            .with_connect_timeout(Duration::from_secs(10))
            .with_read_timeout(cfg.read_timeout);
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| config_err(format!("reading ca_file {}: {e}", ca.display())))?;
            let certs = object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| config_err(format!("ca_file {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(config_err(format!(
                    "ca_file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            for c in certs {
                client = client.with_root_certificate(c);
            }
        }
        // object_store's default retries last up to three minutes; a client waiting on a push
        // or a node starting against a dead endpoint should hear about it sooner.
        let retry = object_store::RetryConfig {
            max_retries: cfg.max_retries,
            retry_timeout: cfg.retry_timeout,
            ..Default::default()
        };
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(client)
            .with_retry(retry)
            .with_allow_http(cfg.allow_http)
            .with_bucket_name(&cfg.bucket)
            .with_virtual_hosted_style_request(!cfg.path_style);
        if let Some(region) = &cfg.region {
            b = b.with_region(region);
        }
        if let Some(endpoint) = &cfg.endpoint {
            // AWS_ENDPOINT_URL_S3 from the environment would win over a plain endpoint.
            b = b
                .with_endpoint(endpoint)
                .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
        }
        match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(id), Some(secret)) => {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
            }
            (None, None) => {}
            _ => {
                return Err(config_err(
                    "access_key_id and secret_access_key must be set together",
                ));
            }
        }
        let store = b
            .build()
            .map_err(|e| config_err(format!("S3 client: {e}")))?;
        Ok(S3BlobStore {
            store: Arc::new(store),
            bucket: cfg.bucket.clone(),
            root,
            part_size: cfg.part_size,
        })
    }

    /// One cheap request (a listing of at most one page of the prefix), to find a wrong
    /// endpoint, bucket or credentials at startup rather than at the first push.
    pub async fn check(&self) -> Result<(), StorageError> {
        let root = self.root.clone().join("blobs");
        self.store
            .list_with_delimiter(Some(&root))
            .await
            .map(drop)
            .map_err(|e| self.err(&root, e))
    }

    fn err(&self, path: &Path, e: object_store::Error) -> StorageError {
        StorageError {
            kind: kind_of(&e),
            what: format!("s3://{}/{}", self.bucket, path),
            source: to_io(e),
        }
    }

    fn uploads_root(&self) -> Path {
        self.root.clone().join("uploads")
    }

    fn blobs_root(&self) -> Path {
        self.root.clone().join("blobs")
    }

    fn upload_prefix(&self, id: &UploadId) -> Path {
        self.uploads_root().join(id.to_string())
    }

    fn chunk_path(&self, id: &UploadId, start: u64) -> Path {
        self.upload_prefix(id).join(format!("{start:020}"))
    }

    fn blob_path(&self, key: &BlobKey) -> Path {
        let hex = key.digest.hex();
        self.blobs_root()
            .join(key.digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
            .join(key.generation.as_str())
    }

    /// Lists an upload's objects; `NotFound` if there are none (never created, or deleted).
    async fn staged(&self, id: &UploadId) -> Result<Staged, StorageError> {
        let prefix = self.upload_prefix(id);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.err(&prefix, e))?;
        if metas.is_empty() {
            return Err(StorageError {
                kind: StorageErrorKind::NotFound,
                what: format!("s3://{}/{}", self.bucket, prefix),
                source: io::Error::new(io::ErrorKind::NotFound, "no such upload"),
            });
        }
        let mut chunks = Vec::new();
        let mut others = Vec::new();
        for m in metas {
            let start = m.location.prefix_match(&prefix).and_then(|mut rest| {
                match (rest.next(), rest.next()) {
                    (Some(name), None) => parse_chunk_name(name.as_ref()),
                    _ => None,
                }
            });
            match start {
                Some(start) => chunks.push(Chunk {
                    start,
                    size: m.size,
                    path: m.location,
                }),
                None => others.push(m.location),
            }
        }
        chunks.sort_by_key(|c| c.start);
        Ok(Staged { chunks, others })
    }

    /// The byte ranges of chunk objects that make up an upload's first `len` bytes.
    fn plan(&self, id: &UploadId, chunks: &[Chunk], len: u64) -> Result<Vec<Piece>, StorageError> {
        let mut out = Vec::new();
        let mut pos = 0u64;
        for c in chunks {
            if pos >= len {
                break;
            }
            if c.start != pos {
                break; // a gap or an overlap: reported below
            }
            let take = c.size.min(len - pos);
            if take > 0 {
                out.push(Piece {
                    path: c.path.clone(),
                    range: 0..take,
                });
            }
            pos += take;
            if take < c.size {
                break;
            }
        }
        if pos < len {
            return Err(StorageError {
                kind: StorageErrorKind::Io,
                what: format!("s3://{}/{}", self.bucket, self.upload_prefix(id)),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("upload holds {pos} contiguous bytes, {len} were expected"),
                ),
            });
        }
        Ok(out)
    }

    /// Streams the given pieces of chunk objects, in order, one ranged GET at a time.
    fn read_pieces(&self, pieces: Vec<Piece>) -> BoxStream<'static, Result<Bytes, StorageError>> {
        let this = self.clone();
        stream::iter(pieces)
            .then(move |p| {
                let this = this.clone();
                async move {
                    let opts = GetOptions {
                        range: Some(GetRange::Bounded(p.range.clone())),
                        ..Default::default()
                    };
                    let got = this
                        .store
                        .get_opts(&p.path, opts)
                        .await
                        .map_err(|e| this.err(&p.path, e))?;
                    let path = p.path;
                    Ok::<_, StorageError>(
                        got.into_stream()
                            .map_err(move |e| this.err(&path, e))
                            .boxed(),
                    )
                }
            })
            .try_flatten()
            .boxed()
    }

    /// Deletes these objects (a bulk delete where the service has one); missing ones are fine.
    async fn delete_all(&self, paths: Vec<Path>) -> Result<(), StorageError> {
        if paths.is_empty() {
            return Ok(());
        }
        let results: Vec<_> = self
            .store
            .delete_stream(stream::iter(paths.into_iter().map(Ok)).boxed())
            .collect()
            .await;
        for r in results {
            match r {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    let what = self.uploads_root();
                    return Err(self.err(&what, e));
                }
            }
        }
        Ok(())
    }

    async fn commit_multipart(
        &self,
        pieces: Vec<Piece>,
        len: u64,
        dest: &Path,
    ) -> Result<(), StorageError> {
        let part = multipart_part_size(len, self.part_size as u64);
        let part = usize::try_from(part).map_err(|_| config_err("part size too large"))?;
        let mp = self
            .store
            .create_multipart(dest)
            .await
            .map_err(|e| self.err(dest, e))?;
        let outcome = async {
            let mut src = self.read_pieces(pieces);
            let (n, parts) = pump(
                &mut src,
                part,
                |_| Ok(()),
                |_, idx, data| {
                    let mp = &mp;
                    async move {
                        self.store
                            .put_part(dest, mp, idx, PutPayload::from(data))
                            .await
                            .map_err(|e| self.err(dest, e))
                    }
                },
            )
            .await?;
            if n != len {
                return Err(short_read(dest, n, len));
            }
            self.store
                .complete_multipart(dest, &mp, parts)
                .await
                .map_err(|e| self.err(dest, e))?;
            Ok(())
        }
        .await;
        if outcome.is_err()
            && let Err(e) = self.store.abort_multipart(dest, &mp).await
        {
            tracing::warn!(path = %dest, error = %e, "aborting a failed multipart upload failed");
        }
        outcome
    }
}

/// A range of one chunk object.
#[derive(Debug, Clone)]
struct Piece {
    path: Path,
    range: Range<u64>,
}

fn parse_chunk_name(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

fn short_read(dest: &Path, n: u64, len: u64) -> StorageError {
    StorageError {
        kind: StorageErrorKind::Io,
        what: dest.to_string(),
        source: io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("staged upload gave {n} bytes, {len} were expected"),
        ),
    }
}

/// The part size of a multipart upload of `len` bytes: the configured size, at least S3's
/// 5 MiB minimum, and large enough (rounded up to whole MiB) that no more than 10,000 parts are
/// needed.
fn multipart_part_size(len: u64, configured: u64) -> u64 {
    let for_count = len.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    configured.max(MIN_MULTIPART_PART).max(for_count)
}

enum Event<T, E> {
    Flushed(Result<T, E>),
    Item(Option<Result<Bytes, E>>),
}

/// Cuts `src` into pieces of `piece` bytes (the last one may be shorter) and hands each to
/// `flush` with its position and index, filling the next piece while the previous one is being
/// flushed (one flush in flight at most, so memory stays within about two pieces). `inspect`
/// sees every buffer as it arrives and may refuse it. Returns the bytes read and the flush
/// results in order; on an error, waits for the flush in flight before returning, so nothing
/// of this call is still being written when the caller goes on.
async fn pump<S, E, T, F, Fut>(
    src: &mut S,
    piece: usize,
    mut inspect: impl FnMut(&Bytes) -> Result<(), E>,
    mut flush: F,
) -> Result<(u64, Vec<T>), E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    F: FnMut(u64, usize, Bytes) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut buf = BytesMut::new();
    let mut total = 0u64;
    let mut flushed = 0u64;
    let mut started = 0usize;
    let mut done = Vec::new();
    let mut inflight: Option<Pin<Box<Fut>>> = None;
    let outcome: Result<(), E> = 'outer: loop {
        let ev = match inflight.as_mut() {
            Some(f) => tokio::select! {
                r = f.as_mut() => Event::Flushed(r),
                item = src.next() => Event::Item(item),
            },
            None => Event::Item(src.next().await),
        };
        match ev {
            Event::Flushed(r) => {
                inflight = None;
                match r {
                    Ok(t) => done.push(t),
                    Err(e) => break Err(e),
                }
            }
            Event::Item(Some(Err(e))) => break Err(e),
            Event::Item(Some(Ok(b))) => {
                if let Err(e) = inspect(&b) {
                    break Err(e);
                }
                total += b.len() as u64;
                buf.extend_from_slice(&b);
                while buf.len() >= piece {
                    if let Some(f) = inflight.take() {
                        match f.await {
                            Ok(t) => done.push(t),
                            Err(e) => break 'outer Err(e),
                        }
                    }
                    let data = buf.split_to(piece).freeze();
                    let len = data.len() as u64;
                    inflight = Some(Box::pin(flush(flushed, started, data)));
                    flushed += len;
                    started += 1;
                }
            }
            Event::Item(None) => {
                if !buf.is_empty() {
                    if let Some(f) = inflight.take() {
                        match f.await {
                            Ok(t) => done.push(t),
                            Err(e) => break Err(e),
                        }
                    }
                    let data = buf.split().freeze();
                    inflight = Some(Box::pin(flush(flushed, started, data)));
                }
                break Ok(());
            }
        }
    };
    if let Some(f) = inflight.take() {
        let r = f.await;
        if outcome.is_ok() {
            done.push(r?);
        }
    }
    outcome.map(|()| (total, done))
}

#[async_trait]
impl BlobStore for S3BlobStore {
    /// A part being uploaded and the next being filled.
    fn upload_buffer_size(&self) -> u64 {
        2 * self.part_size as u64
    }

    async fn create_upload(&self, id: &UploadId) -> Result<(), StorageError> {
        let path = self.upload_prefix(id).join(MARKER);
        self.store
            .put(&path, PutPayload::new())
            .await
            .map(drop)
            .map_err(|e| self.err(&path, e))
    }

    async fn append_upload(
        &self,
        id: &UploadId,
        offset: u64,
        body: ByteStream,
        digester: &mut Digester,
        max_len: Option<u64>,
    ) -> Result<u64, WriteError> {
        let staged = self.staged(id).await?;
        // Bytes past the recorded offset belong to a write that never committed: drop chunks
        // that start at or after it, and cut the one that straddles it.
        let mut stale = Vec::new();
        let mut have = 0u64;
        for c in &staged.chunks {
            if c.start >= offset {
                stale.push(c.path.clone());
            } else if c.start + c.size > offset {
                let keep = offset - c.start;
                let head = self
                    .store
                    .get_range(&c.path, 0..keep)
                    .await
                    .map_err(|e| self.err(&c.path, e))?;
                self.store
                    .put(&c.path, PutPayload::from(head))
                    .await
                    .map_err(|e| self.err(&c.path, e))?;
                if c.start == have {
                    have = offset;
                }
            } else if c.start == have {
                have += c.size;
            }
        }
        self.delete_all(stale).await?;
        if have != offset {
            return Err(StorageError {
                kind: StorageErrorKind::Io,
                what: format!("s3://{}/{}", self.bucket, self.upload_prefix(id)),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("upload holds {have} contiguous bytes, cannot append at {offset}"),
                ),
            }
            .into());
        }

        let mut src = body.map(|r| r.map_err(WriteError::Body));
        let mut seen = 0u64;
        let (written, _) = pump(
            &mut src,
            self.part_size,
            |b| {
                seen += b.len() as u64;
                if let Some(max) = max_len
                    && seen > max
                {
                    return Err(WriteError::TooLong(max));
                }
                digester.update(b);
                Ok(())
            },
            |pos, _, data| {
                let path = self.chunk_path(id, offset + pos);
                async move {
                    self.store
                        .put(&path, PutPayload::from(data))
                        .await
                        .map(drop)
                        .map_err(|e| WriteError::Storage(self.err(&path, e)))
                }
            },
        )
        .await?;
        Ok(written)
    }

    async fn commit_upload(
        &self,
        id: &UploadId,
        len: u64,
        key: &BlobKey,
    ) -> Result<(), StorageError> {
        let staged = self.staged(id).await?;
        let pieces = self.plan(id, &staged.chunks, len)?;
        let dest = self.blob_path(key);
        match pieces.as_slice() {
            [] => {
                self.store
                    .put(&dest, PutPayload::new())
                    .await
                    .map_err(|e| self.err(&dest, e))?;
            }
            // The whole blob is one chunk: copy it inside the service.
            [p] if staged.chunks[0].size == len && len <= MAX_PUT => {
                self.store
                    .copy(&p.path, &dest)
                    .await
                    .map_err(|e| self.err(&dest, e))?;
            }
            _ if len <= self.part_size as u64 => {
                let mut buf = BytesMut::with_capacity(len as usize);
                let mut src = self.read_pieces(pieces);
                while let Some(b) = src.try_next().await? {
                    buf.extend_from_slice(&b);
                }
                if buf.len() as u64 != len {
                    return Err(short_read(&dest, buf.len() as u64, len));
                }
                self.store
                    .put(&dest, PutPayload::from(buf.freeze()))
                    .await
                    .map_err(|e| self.err(&dest, e))?;
            }
            _ => self.commit_multipart(pieces, len, &dest).await?,
        }
        // The blob is durable; staging left behind by a failed delete is found by scrub.
        let mut rest: Vec<Path> = staged.chunks.into_iter().map(|c| c.path).collect();
        rest.extend(staged.others);
        if let Err(e) = self.delete_all(rest).await {
            tracing::warn!(upload = %id, error = %e, "deleting a committed upload's staging failed");
        }
        Ok(())
    }

    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream, StorageError> {
        let staged = self.staged(id).await?;
        let pieces = self.plan(id, &staged.chunks, len)?;
        Ok(Box::pin(
            self.read_pieces(pieces)
                .map_err(|e| io::Error::new(e.source.kind(), e)),
        ))
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<(), StorageError> {
        let prefix = self.upload_prefix(id);
        let paths: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| self.err(&prefix, e))?;
        self.delete_all(paths).await
    }

    async fn presigned_read(
        &self,
        key: &BlobKey,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        use object_store::signer::Signer;
        let path = self.blob_path(key);
        let url = self
            .store
            .signed_url(http::Method::GET, &path, ttl)
            .await
            .map_err(|e| self.err(&path, e))?;
        Ok(Some(url.to_string()))
    }

    async fn read_blob(
        &self,
        key: &BlobKey,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StorageError> {
        let path = self.blob_path(key);
        if len == 0 {
            // S3 has no empty range; still say whether the blob exists.
            self.store
                .head(&path)
                .await
                .map_err(|e| self.err(&path, e))?;
            return Ok(Box::pin(stream::empty()));
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(offset..offset.saturating_add(len))),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&path, opts)
            .await
            .map_err(|e| self.err(&path, e))?;
        Ok(Box::pin(got.into_stream().map_err(to_io)))
    }

    async fn delete_blob(&self, key: &BlobKey) -> Result<(), StorageError> {
        let path = self.blob_path(key);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(&path, e)),
        }
    }

    async fn blob_size(&self, key: &BlobKey) -> Result<u64, StorageError> {
        let path = self.blob_path(key);
        self.store
            .head(&path)
            .await
            .map(|m| m.size)
            .map_err(|e| self.err(&path, e))
    }

    async fn list_blobs(&self) -> Result<Vec<StoredObject<BlobKey>>, StorageError> {
        let root = self.blobs_root();
        let metas: Vec<_> = self
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| self.err(&root, e))?;
        let mut out = Vec::new();
        for m in metas {
            let Some(rest) = m.location.prefix_match(&root) else {
                continue;
            };
            let parts: Vec<String> = rest.map(|p| p.as_ref().to_owned()).collect();
            let [alg, ab, hex, generation] = parts.as_slice() else {
                continue;
            };
            if !hex.starts_with(ab.as_str()) || ab.len() != 2 {
                continue;
            }
            let Ok(digest) = berth_core::Digest::parse(&format!("{alg}:{hex}")) else {
                continue;
            };
            let Some(key) = BlobKey::new(digest, generation) else {
                continue;
            };
            out.push(StoredObject {
                key,
                size: m.size,
                modified_ms: m.last_modified.timestamp_millis(),
            });
        }
        out.sort_by(|a, b| {
            (a.key.digest.to_string(), &a.key.generation)
                .cmp(&(b.key.digest.to_string(), &b.key.generation))
        });
        Ok(out)
    }

    async fn list_uploads(&self) -> Result<Vec<StoredObject<UploadId>>, StorageError> {
        let root = self.uploads_root();
        let metas: Vec<_> = self
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| self.err(&root, e))?;
        let mut uploads: std::collections::BTreeMap<String, StoredObject<UploadId>> =
            Default::default();
        for m in metas {
            let Some(rest) = m.location.prefix_match(&root) else {
                continue;
            };
            let parts: Vec<String> = rest.map(|p| p.as_ref().to_owned()).collect();
            let [id, name] = parts.as_slice() else {
                continue;
            };
            let Some(upload) = UploadId::parse(id) else {
                continue;
            };
            let size = if name == MARKER {
                0
            } else if parse_chunk_name(name).is_some() {
                m.size
            } else {
                continue;
            };
            let modified_ms = m.last_modified.timestamp_millis();
            let e = uploads.entry(id.clone()).or_insert(StoredObject {
                key: upload,
                size: 0,
                modified_ms,
            });
            e.size += size;
            e.modified_ms = e.modified_ms.max(modified_ms);
        }
        Ok(uploads.into_values().collect())
    }
}

/// The S3 endpoint for tests (`S3_TEST_ENDPOINT`, e.g. from `scripts/s3-test-server.sh`)
/// and a store on it under a fresh prefix, so tests never see each other's objects. Without the
/// variable the S3 tests are skipped with a note, except under `CI=true`, where a missing
/// server fails them.
#[cfg(test)]
pub(crate) fn test_store(part_size: usize) -> Option<S3BlobStore> {
    let Some(endpoint) = std::env::var("S3_TEST_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("S3_TEST_ENDPOINT is not set under CI=true: start scripts/s3-test-server.sh");
        }
        eprintln!("note: S3_TEST_ENDPOINT is not set; skipping the S3 backend test");
        return None;
    };
    let bucket = std::env::var("S3_TEST_BUCKET").unwrap_or_else(|_| "berth-test".into());
    let cfg = S3Config {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        path_style: true,
        prefix: format!("test-{}/", uuid::Uuid::new_v4()),
        part_size,
        allow_http: true,
        max_retries: 4,
        retry_timeout: Duration::from_secs(30),
        read_timeout: Duration::from_secs(120),
        ..S3Config::new(bucket)
    };
    Some(S3BlobStore::new(&cfg).expect("S3 test store"))
}

#[cfg(test)]
mod tests {
    use berth_core::{Algorithm, Digest};

    use super::*;

    fn body(chunks: Vec<Vec<u8>>) -> ByteStream {
        Box::pin(stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))))
    }

    async fn collect(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[test]
    fn part_sizes() {
        assert_eq!(multipart_part_size(1 << 30, 16 << 20), 16 << 20);
        assert_eq!(multipart_part_size(1 << 20, 1), 5 << 20);
        // 1 TiB in at most 10,000 parts: 105 MiB each (rounded up to whole MiB).
        let p = multipart_part_size(1 << 40, 16 << 20);
        assert_eq!(p, 105 << 20);
        assert!((1u64 << 40).div_ceil(p) <= MAX_PARTS);
    }

    #[test]
    fn error_kinds() {
        let boxed = |e: io::Error| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) };
        let nf = object_store::Error::NotFound {
            path: "p".into(),
            source: boxed(io::Error::other("404")),
        };
        assert_eq!(kind_of(&nf), StorageErrorKind::NotFound);
        assert_eq!(to_io(nf).kind(), io::ErrorKind::NotFound);
        let denied = object_store::Error::PermissionDenied {
            path: "p".into(),
            source: boxed(io::Error::other("403")),
        };
        assert_eq!(kind_of(&denied), StorageErrorKind::Unauthorized);
        let unauth = object_store::Error::Unauthenticated {
            path: "p".into(),
            source: boxed(io::Error::other("401")),
        };
        assert_eq!(kind_of(&unauth), StorageErrorKind::Unauthorized);
        let timeout = object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(
                HttpErrorKind::Timeout,
                io::Error::other("slow"),
            )),
        };
        assert_eq!(kind_of(&timeout), StorageErrorKind::Timeout);
        assert_eq!(to_io(timeout).kind(), io::ErrorKind::TimedOut);
        let nested = object_store::Error::Generic {
            store: "S3",
            source: boxed(io::Error::new(io::ErrorKind::TimedOut, "read")),
        };
        assert_eq!(kind_of(&nested), StorageErrorKind::Timeout);
        let other = object_store::Error::Generic {
            store: "S3",
            source: boxed(io::Error::other("500")),
        };
        assert_eq!(kind_of(&other), StorageErrorKind::Io);
        // What object_store's retry error says for a service answer (its type is private).
        let answered = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: boxed(io::Error::other(text.to_owned())),
        };
        let slow = answered(
            "Error performing PUT http://s3/b/k in 2ms - Server returned non-2xx status code: \
             503 Service Unavailable: <Error><Code>SlowDown</Code></Error>",
        );
        assert_eq!(kind_of(&slow), StorageErrorKind::Unavailable);
        let failing = answered("Server returned non-2xx status code: 500 Internal Server Error: ");
        assert_eq!(kind_of(&failing), StorageErrorKind::Unavailable);
        let full = answered("Server returned non-2xx status code: 507 Insufficient Storage: ");
        assert_eq!(kind_of(&full), StorageErrorKind::Full);
        let quota = answered(
            "Server returned non-2xx status code: 403 Forbidden: <Code>QuotaExceeded</Code>",
        );
        assert_eq!(kind_of(&quota), StorageErrorKind::Full);
        assert_eq!(to_io(quota).kind(), io::ErrorKind::StorageFull);
        let bad = answered("Server returned non-2xx status code: 400 Bad Request: ");
        assert_eq!(kind_of(&bad), StorageErrorKind::Io);
    }

    #[test]
    fn chunk_names() {
        assert_eq!(parse_chunk_name("00000000000000000042"), Some(42));
        assert_eq!(parse_chunk_name("42"), None);
        assert_eq!(parse_chunk_name(MARKER), None);
        assert_eq!(parse_chunk_name("0000000000000000004x"), None);
    }

    #[test]
    fn config_is_checked_and_secret_not_printed() {
        let mut cfg = S3Config::new("b");
        cfg.part_size = 0;
        assert!(S3BlobStore::new(&cfg).is_err());
        cfg.part_size = DEFAULT_PART_SIZE;
        cfg.access_key_id = Some("id".into());
        assert!(S3BlobStore::new(&cfg).is_err(), "a key id without a secret");
        cfg.secret_access_key = Some("hunter2".into());
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    /// Small chunks, an append that rewinds into the middle of a chunk, the chunk layout in the
    /// bucket, and a multipart commit (3 parts: 5 MiB, 5 MiB, 1 MiB + 3 bytes).
    #[tokio::test]
    async fn staging_and_multipart_commit() {
        let Some(store) = test_store(1 << 20) else {
            return;
        };
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        let mut d = Digester::new(Algorithm::Sha256);
        let n = store
            .append_upload(&id, 0, body(vec![b"hello world".to_vec()]), &mut d, None)
            .await
            .unwrap();
        assert_eq!(n, 11);
        // Rewind into the middle of the chunk: the chunk is cut at 5.
        let mut d = Digester::new(Algorithm::Sha256);
        d.update(b"hello");
        let n = store
            .append_upload(&id, 5, body(vec![b", ".to_vec()]), &mut d, None)
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            collect(store.read_upload(&id, 7).await.unwrap()).await,
            b"hello, "
        );

        // 11 MiB in body pieces that do not line up with the 1 MiB chunks.
        let mut data = b"hello, ".to_vec();
        let mut pieces = Vec::new();
        let mut i = 0u32;
        while data.len() < (11 << 20) + 3 {
            let piece: Vec<u8> = (0..100_003u32)
                .map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8)
                .collect();
            let piece = &piece[..piece.len().min((11 << 20) + 3 - data.len())];
            data.extend_from_slice(piece);
            pieces.push(piece.to_vec());
            i += 1;
        }
        let n = store
            .append_upload(&id, 7, body(pieces), &mut d, None)
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64 - 7);
        let staged = store.staged(&id).await.unwrap();
        assert!(
            staged.chunks.iter().all(|c| c.size <= 1 << 20),
            "chunks are at most one part"
        );
        assert_eq!(staged.chunks.len(), 13);
        let listed = store.list_uploads().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, id);
        assert_eq!(listed[0].size, data.len() as u64);

        let digest = d.finish();
        assert_eq!(digest, Digest::sha256_of(&data));
        let key = BlobKey::from_upload(digest, &id);
        store
            .commit_upload(&id, data.len() as u64, &key)
            .await
            .unwrap();
        assert_eq!(store.blob_size(&key).await.unwrap(), data.len() as u64);
        let back = collect(store.read_blob(&key, 0, data.len() as u64).await.unwrap()).await;
        assert!(back == data, "blob bytes differ");
        let mid = collect(store.read_blob(&key, 6 << 20, 10).await.unwrap()).await;
        assert_eq!(mid, &data[6 << 20..(6 << 20) + 10]);
        assert!(store.list_uploads().await.unwrap().is_empty());
        assert!(matches!(
            store.staged(&id).await,
            Err(StorageError {
                kind: StorageErrorKind::NotFound,
                ..
            })
        ));
        store.delete_blob(&key).await.unwrap();
        assert!(store.list_blobs().await.unwrap().is_empty());
    }

    /// Keys that are not Berth's are skipped by the listings; appending to an upload that does
    /// not exist is NotFound; a hole in the staged bytes is refused.
    #[tokio::test]
    async fn foreign_keys_and_missing_uploads() {
        let Some(store) = test_store(DEFAULT_PART_SIZE) else {
            return;
        };
        for p in [
            "blobs/README",
            "blobs/sha256/ab/notahex/0d9c2c5f-3d55-4f9a-9a53-1c4a1d0b0f00",
            "uploads/not-a-uuid/created",
            "uploads/7d0c3b1e-2f4a-4c57-8a64-0a7e0e0b9d11/junk",
            "elsewhere",
        ] {
            let path = Path::parse(format!("{}/{p}", store.root)).unwrap();
            store.store.put(&path, PutPayload::from("x")).await.unwrap();
        }
        assert!(store.list_blobs().await.unwrap().is_empty());
        assert!(store.list_uploads().await.unwrap().is_empty());

        let mut d = Digester::new(Algorithm::Sha256);
        let err = store
            .append_upload(&UploadId::new(), 0, body(vec![b"x".to_vec()]), &mut d, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, WriteError::Storage(e) if e.kind == StorageErrorKind::NotFound),
            "{err}"
        );

        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        let err = store
            .append_upload(&id, 5, body(vec![b"x".to_vec()]), &mut d, None)
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::Storage(_)), "{err}");
        let err = store.read_upload(&id, 1).await.err().expect("short upload");
        assert_eq!(err.kind, StorageErrorKind::Io);
        store.delete_upload(&id).await.unwrap();

        // Clean up the foreign objects too.
        let all: Vec<Path> = store
            .store
            .list(Some(&store.root))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap();
        store.delete_all(all).await.unwrap();
    }
}
