//! BlobStore: the bytes of blobs and of uploads in progress. Blobs are content-addressed and
//! shared by all repositories; each stored copy is one *generation* of a digest, so an upload
//! of a digest that is being swept never shares a path with the sweep. Which generation is
//! live, and who may see it, is the MetaStore's business, not this crate's.

mod buffers;
mod fs;
#[cfg(feature = "s3")]
mod s3;

use std::fmt;
use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use berth_core::{Digest, Digester};
use bytes::Bytes;
use futures_util::Stream;

pub use fs::FsBlobStore;
#[cfg(feature = "s3")]
pub use s3::{DEFAULT_PART_SIZE as S3_DEFAULT_PART_SIZE, S3BlobStore, S3Config};

/// A stream of body bytes, as an upload request delivers them or a blob read returns them.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// What kind of failure a storage call met; callers map these to OCI codes and retry choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    NotFound,
    Timeout,
    /// The storage service refused the credentials or the permission (S3 401/403): a
    /// configuration problem, not worth retrying.
    Unauthorized,
    /// Out of space: the disk is full (ENOSPC), a quota is used up (EDQUOT, S3
    /// `QuotaExceeded`, MinIO's 507). Writes fail until space is freed; reads still work.
    Full,
    /// The storage service is there but not serving: a 5xx, throttling (`SlowDown`), a refused
    /// or reset connection. Worth retrying later.
    Unavailable,
    Io,
}

#[derive(Debug, thiserror::Error)]
#[error("{kind:?} at {what}: {source}")]
pub struct StorageError {
    pub kind: StorageErrorKind,
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl StorageError {
    pub fn io(what: impl Into<String>, source: io::Error) -> StorageError {
        let kind = match source.kind() {
            io::ErrorKind::NotFound => StorageErrorKind::NotFound,
            io::ErrorKind::TimedOut => StorageErrorKind::Timeout,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageErrorKind::Full,
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected => StorageErrorKind::Unavailable,
            _ if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
                StorageErrorKind::Full
            }
            _ => StorageErrorKind::Io,
        };
        StorageError {
            kind,
            what: what.into(),
            source,
        }
    }
}

/// Why appending to an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The request body failed (client went away, sent nothing for too long). Nothing written
    /// counts; the upload stays at its previous offset.
    #[error("request body failed: {0}")]
    Body(io::Error),
    /// The body carried more bytes than the caller allowed.
    #[error("request body is longer than {0} bytes")]
    TooLong(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// An upload session's identity: a UUID, so it is always a safe path component.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    pub fn new() -> UploadId {
        UploadId(uuid::Uuid::new_v4())
    }

    pub fn parse(s: &str) -> Option<UploadId> {
        uuid::Uuid::try_parse(s).ok().map(UploadId)
    }
}

impl Default for UploadId {
    fn default() -> Self {
        UploadId::new()
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One stored copy of a blob: its digest and the generation (the id of the upload that wrote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobKey {
    pub digest: Digest,
    pub generation: String,
}

impl BlobKey {
    /// Generations come from the database; only UUID-shaped ones are accepted, so they are
    /// safe path components.
    pub fn new(digest: Digest, generation: &str) -> Option<BlobKey> {
        uuid::Uuid::try_parse(generation).ok()?;
        Some(BlobKey {
            digest,
            generation: generation.to_owned(),
        })
    }

    pub fn from_upload(digest: Digest, upload: &UploadId) -> BlobKey {
        BlobKey {
            digest,
            generation: upload.to_string(),
        }
    }
}

/// The blob store: filesystem or S3, one conformance suite for both.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Creates the (empty) staging area of a new upload.
    async fn create_upload(&self, id: &UploadId) -> Result<(), StorageError>;

    /// Appends `body` to the upload at `offset` (bytes past `offset` from an earlier failed
    /// write are discarded first), feeding every byte to `digester`, and makes the bytes
    /// durable before returning the number written. At most `max_len` bytes are accepted.
    async fn append_upload(
        &self,
        id: &UploadId,
        offset: u64,
        body: ByteStream,
        digester: &mut Digester,
        max_len: Option<u64>,
    ) -> Result<u64, WriteError>;

    /// Writes the whole body of a single-request upload into its new, empty staging area,
    /// like `append_upload` at offset 0, except that the bytes need not be durable when it
    /// returns: nothing records them before `commit_upload`, which makes them durable. (On the
    /// filesystem that saves a disk flush per push; stores whose appends are durable anyway
    /// keep this default.)
    async fn write_whole_upload(
        &self,
        id: &UploadId,
        body: ByteStream,
        digester: &mut Digester,
        max_len: Option<u64>,
    ) -> Result<u64, WriteError> {
        self.append_upload(id, 0, body, digester, max_len).await
    }

    /// Makes the upload's first `len` bytes the blob `key`, durably: after this returns, a
    /// crash cannot lose or zero them.
    async fn commit_upload(
        &self,
        id: &UploadId,
        len: u64,
        key: &BlobKey,
    ) -> Result<(), StorageError>;

    /// Streams the first `len` staged bytes of an upload (to re-hash it with another algorithm
    /// than the one it was started with).
    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream, StorageError>;

    /// Removes an upload's staged bytes. Removing one that does not exist is not an error.
    async fn delete_upload(&self, id: &UploadId) -> Result<(), StorageError>;

    /// Streams `len` bytes of a blob from `offset`.
    async fn read_blob(
        &self,
        key: &BlobKey,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StorageError>;

    /// A URL from which a client can GET the blob directly for `ttl`, where the store can
    /// issue one (S3's presigned URLs); None where it cannot.
    async fn presigned_read(
        &self,
        _key: &BlobKey,
        _ttl: std::time::Duration,
    ) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    /// Memory one upload request may buffer at most while it streams into this store (the
    /// budget `limits.upload_buffer_memory` is shared out in these).
    fn upload_buffer_size(&self) -> u64 {
        1 << 20
    }

    /// Removes a blob generation. Removing one that does not exist is not an error.
    async fn delete_blob(&self, key: &BlobKey) -> Result<(), StorageError>;

    /// Size of a stored blob generation (used by scrub and by tests).
    async fn blob_size(&self, key: &BlobKey) -> Result<u64, StorageError>;

    /// Every stored blob generation, for scrub. Files whose path is not a blob key are
    /// skipped. (Held in memory: fine to millions of blobs; a streaming walk is future work.)
    async fn list_blobs(&self) -> Result<Vec<StoredObject<BlobKey>>, StorageError>;

    /// Every staged upload, for scrub to find staging bytes without a session.
    async fn list_uploads(&self) -> Result<Vec<StoredObject<UploadId>>, StorageError>;
}

/// A stored object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject<K> {
    pub key: K,
    pub size: u64,
    /// Last modification, in epoch milliseconds.
    pub modified_ms: i64,
}

#[cfg(test)]
mod conformance;
