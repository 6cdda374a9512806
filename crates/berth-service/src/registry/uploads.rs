//! Upload sessions: start, append chunks (durably, each at the session's offset), complete
//! with a digest check, cancel; and the single-request (monolithic) upload, which needs no
//! session. Memory is bounded by `limits.upload_buffer_memory`; a concurrent request on the
//! same session loses.

use std::time::Duration;

use berth_core::range::ChunkRange;
use berth_core::{Algorithm, Digest, Digester, RepoName};
use berth_meta::{CommitOutcome, RepoRef, UploadRow};
use berth_storage::{BlobKey, ByteStream, UploadId, WriteError};

use super::{UploadLock, UploadState, digest_mismatch};
use crate::{Error, Registry, Result};

/// A long streamed PATCH marks its session active this often, so the idle-upload purger
/// never takes a slow but live push.
const UPLOAD_ACTIVITY_INTERVAL: Duration = Duration::from_secs(60);

fn restore_digester(row: &UploadRow) -> Result<Digester> {
    Digester::restore(&row.hash_state).map_err(|_| {
        Error::Meta(berth_meta::MetaError::Corrupt(format!(
            "hash state of upload {}",
            row.id
        )))
    })
}

fn write_error(e: WriteError) -> Error {
    match e {
        WriteError::Body(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            Error::UploadBodyFailed {
                reason:
                    "the upload body stalled; the session keeps its last offset and can be resumed"
                        .into(),
            }
        }
        WriteError::Body(e) => Error::UploadBodyFailed {
            reason: format!(
                "the upload body failed ({e}); the session keeps its last offset and can be resumed"
            ),
        },
        WriteError::TooLong(n) => Error::SizeInvalid {
            reason: format!("the body is longer than the {n} bytes declared"),
        },
        WriteError::Storage(e) => Error::Storage(e),
    }
}

impl Registry {
    /// Opens an upload session (creating the repository if needed) hashing with `algorithm`.
    pub async fn start_upload(&self, name: &RepoName, algorithm: Algorithm) -> Result<UploadState> {
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

    async fn session(&self, name: &RepoName, id: &UploadId) -> Result<UploadRow> {
        let row = self
            .meta
            .get_upload(&id.to_string())
            .await?
            .ok_or(Error::UploadUnknown)?;
        match self.existing_repo(name).await? {
            Some(repo) if repo == row.repo_id => Ok(row),
            _ => Err(Error::UploadUnknown),
        }
    }

    /// Takes this node's write lock on an upload session and reads the session under it (a
    /// request that just finished may have moved it). A session another request is writing
    /// to is refused with its current offset.
    async fn lock_session(
        &self,
        name: &RepoName,
        id: &UploadId,
    ) -> Result<(UploadLock<'_>, UploadRow)> {
        self.session(name, id).await?;
        let lock = self.lock_upload(id);
        let row = self.session(name, id).await?;
        match lock {
            Some(lock) => Ok((lock, row)),
            None => Err(Error::UploadOutOfOrder {
                repository: name.to_string(),
                upload: id.to_string(),
                offset: row.offset,
                reason: "another request is writing to this upload".into(),
            }),
        }
    }

    pub async fn upload_status(&self, name: &RepoName, id: &UploadId) -> Result<UploadState> {
        let row = self.session(name, id).await?;
        Ok(UploadState {
            id: id.clone(),
            offset: row.offset,
        })
    }

    pub async fn cancel_upload(&self, name: &RepoName, id: &UploadId) -> Result<()> {
        self.session(name, id).await?;
        let _lock = self.lock_upload(id);
        self.meta.delete_upload(&id.to_string()).await?;
        self.blobs.delete_upload(id).await?;
        Ok(())
    }

    /// Appends a chunk. `range` is the request's `Content-Range`, if any; a chunk must start at
    /// the session's offset, and a concurrent request on the same session loses.
    pub async fn append_upload(
        &self,
        name: &RepoName,
        id: &UploadId,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> Result<UploadState> {
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
    ) -> Result<(u64, Digester)> {
        let id = UploadId::parse(&row.id).ok_or(Error::UploadUnknown)?;
        let out_of_order = |reason: String| Error::UploadOutOfOrder {
            repository: name.to_string(),
            upload: row.id.clone(),
            offset: row.offset,
            reason,
        };
        if let Some(r) = range {
            if r.start != row.offset {
                return Err(out_of_order(format!(
                    "chunk starts at byte {} but the upload has {} bytes",
                    r.start, row.offset
                )));
            }
            if let Some(cl) = content_length
                && cl != r.len()
            {
                return Err(Error::SizeInvalid {
                    reason: format!(
                        "Content-Length {cl} does not match Content-Range {}-{}",
                        r.start, r.end
                    ),
                });
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
            return Err(Error::SizeInvalid {
                reason: format!(
                    "Content-Range declared {} bytes but the body had {written}",
                    r.len()
                ),
            });
        }
        let new_offset = row.offset + written;
        if !self
            .meta
            .advance_upload(&row.id, row.offset, new_offset, &digester.export())
            .await?
        {
            return Err(out_of_order(
                "the upload moved on while this chunk was written".into(),
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
    ) -> Result<()> {
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
            return Err(digest_mismatch(digest, actual));
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
    ) -> Result<()> {
        // A digest that is already stored only needs a link: skip the rename and fsyncs.
        if self.meta.live_blob(digest).await?.is_some() {
            match self
                .meta
                .commit_blob(session, repo.clone(), digest, None)
                .await?
            {
                CommitOutcome::AlreadyLive { .. } => {
                    self.blobs.delete_upload(id).await?;
                    return Ok(());
                }
                CommitOutcome::SessionGone => {
                    self.blobs.delete_upload(id).await?;
                    return Err(Error::UploadUnknown);
                }
                CommitOutcome::Stored | CommitOutcome::NotLive => {}
            }
        }
        let key = BlobKey::from_upload(digest.clone(), id);
        self.blobs.commit_upload(id, size, &key).await?;
        let outcome = match self
            .meta
            .commit_blob(session, repo, digest, Some((&key.generation, size)))
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                // The transaction failed, or its outcome is unknown (a connection lost at
                // commit): the bytes go unless a row names them. If even that cannot be
                // read, scrub removes them after the grace period.
                if let Ok(rows) = self.meta.blob_generations(&digest.to_string()).await
                    && !rows.iter().any(|(g, _)| *g == key.generation)
                {
                    let _ = self.blobs.delete_blob(&key).await;
                }
                return Err(e.into());
            }
        };
        match outcome {
            CommitOutcome::Stored => Ok(()),
            CommitOutcome::AlreadyLive { .. } | CommitOutcome::NotLive => {
                Ok(self.blobs.delete_blob(&key).await?)
            }
            // The session was purged or its repository deleted while the bytes were written.
            CommitOutcome::SessionGone => {
                self.blobs.delete_blob(&key).await?;
                Err(Error::UploadUnknown)
            }
        }
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
    ) -> Result<()> {
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
                return Err(digest_mismatch(digest, actual));
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
}
