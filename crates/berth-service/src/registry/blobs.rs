//! Blobs as a repository sees them: stat (with the touch that protects a "HEAD, 200, skip"
//! client from garbage collection), read (whole, a range, or a redirect to the bucket),
//! delete, and cross-repository mounts.

use berth_core::range::{RangeRequest, parse_range};
use berth_core::{Digest, RepoName};
use berth_meta::{BlobRow, now_ms};
use berth_storage::ByteStream;
use futures_util::StreamExt;

use super::stored_key;
use crate::access::Actor;
use crate::pullthrough::ProxyBlob;
use crate::{Error, ReadCheck, Registry, Result};

/// Where a blob read is served from.
pub enum BlobSource {
    /// This registry's store: ranges work and the bytes never change.
    Stored,
    /// A proxy project's upstream, being fetched (whole, verified as it streams).
    Upstream,
}

/// What a blob GET or HEAD answers.
pub enum BlobRead {
    /// Go to the bucket for the whole blob (a presigned URL).
    Redirect { url: String },
    /// The bytes: all of them, or `range` (start, length) of a blob of `size`.
    Bytes {
        size: u64,
        range: Option<(u64, u64)>,
        /// None for a HEAD or an empty answer.
        body: Option<ByteStream>,
        source: BlobSource,
    },
}

fn blob_unknown(digest: &Digest) -> Error {
    Error::BlobUnknown {
        digest: digest.clone(),
    }
}

impl Registry {
    /// The blob as this repository sees it. A client that sees a blob exist may skip
    /// uploading it and reference it in a manifest later ("HEAD, 200, skip"), so the blob and
    /// the repository's link are touched whenever their times are older than half the GC
    /// grace period: a sweep can then only take them after a full grace period without
    /// touches. The touch is a write that serializes with the sweeper; if the sweeper won,
    /// the blob is answered as unknown, never as present-then-gone.
    pub async fn stat_blob(&self, name: &RepoName, digest: &Digest) -> Result<BlobRow> {
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

    /// A blob GET (`head`: a HEAD) with the request's `Range` header, from the store or, in a
    /// proxy project, from the upstream.
    pub async fn read_blob(
        self: &std::sync::Arc<Self>,
        name: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        head: bool,
    ) -> Result<BlobRead> {
        let row = match self.proxy.project_of(name) {
            None => self.stat_blob(name, digest).await?,
            Some(p) => match self
                .proxy
                .get_blob(self.clone(), p, name, digest, head)
                .await?
            {
                ProxyBlob::Local(row) => row,
                // A miss is answered whole (a Range is ignored, as HTTP allows).
                ProxyBlob::Remote { size } => {
                    return Ok(BlobRead::Bytes {
                        size,
                        range: None,
                        body: None,
                        source: BlobSource::Upstream,
                    });
                }
                ProxyBlob::Streaming { size, body } => {
                    return Ok(BlobRead::Bytes {
                        size,
                        range: None,
                        body: (!head).then_some(body),
                        source: BlobSource::Upstream,
                    });
                }
            },
        };
        let size = row.size;
        let (start, len, partial) = match range.map(|v| parse_range(v, size)) {
            None | Some(RangeRequest::Full) => (0, size, false),
            Some(RangeRequest::Partial { start, end }) => (start, end - start + 1, true),
            Some(RangeRequest::Unsatisfiable) => return Err(Error::RangeUnsatisfiable { size }),
        };
        // A whole-blob GET goes to the bucket directly when redirects are on (a ranged one is
        // served here, since not every client repeats its Range header after a redirect).
        let s3 = &self.config.storage.s3;
        if !head
            && !partial
            && len > 0
            && s3.redirect
            && let Some(url) = self
                .blobs
                .presigned_read(&stored_key(&row)?, s3.redirect_ttl.0)
                .await?
        {
            return Ok(BlobRead::Redirect { url });
        }
        let body = if head || len == 0 {
            None
        } else {
            // The first piece is read before the answer's head is sent, so a store that cannot
            // read the blob at all is refused instead of a 200 whose body is cut at once.
            let mut stream = self.blobs.read_blob(&stored_key(&row)?, start, len).await?;
            let first = match stream.next().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    return Err(berth_storage::StorageError::io(
                        format!("reading blob {digest}"),
                        e,
                    )
                    .into());
                }
                None => bytes::Bytes::new(),
            };
            let body: ByteStream =
                Box::pin(futures_util::stream::once(async move { Ok(first) }).chain(stream));
            Some(body)
        };
        Ok(BlobRead::Bytes {
            size,
            range: partial.then_some((start, len)),
            body,
            source: BlobSource::Stored,
        })
    }

    /// Removes a blob from a repository (its bytes go with garbage collection when nothing
    /// else holds them).
    pub async fn delete_blob(&self, actor: &Actor, name: &RepoName, digest: &Digest) -> Result<()> {
        self.check_delete_enabled()?;
        let repo = self
            .existing_repo(name)
            .await?
            .ok_or_else(|| blob_unknown(digest))?;
        if !self.meta.unlink_blob(repo, digest).await? {
            return Err(blob_unknown(digest));
        }
        self.audit
            .record(actor, "delete", &format!("{name}@{digest}"), true, "blob")
            .await;
        Ok(())
    }

    /// Links `digest` into `name` from `from` (or, without `from`, from any repository the
    /// caller may read). False when the blob cannot be mounted; the caller then opens a
    /// session. A source the caller cannot read counts as not holding the blob, so the client
    /// never learns whether it exists there.
    pub async fn mount_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
        may_read: &dyn ReadCheck,
    ) -> Result<bool> {
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
}
