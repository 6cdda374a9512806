//! The filesystem BlobStore of the embedded mode.
//!
//! Layout under the root: `uploads/<upload-id>` for bytes in flight and
//! `blobs/<alg>/<first two hex>/<hex>/<generation>` for committed blobs. Durability follows
//! DESIGN.md: an append is fdatasync'ed before the caller records the new offset, and a commit
//! fsyncs the file, renames it into place and fsyncs the directories before the caller writes
//! the blob row. Disk writes run on a blocking thread fed through a small bounded channel, so
//! hashing on the async side overlaps with the disk and memory per upload stays bounded.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_core::Digester;
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::{BlobKey, BlobStore, ByteStream, StorageError, StoredObject, UploadId, WriteError};

/// Size of the buffers handed to the disk writer and of blob reads. 64 KiB reads halve the
/// pull rate on this class of machine; 1 MiB keeps the registry at disk speed.
const IO_CHUNK: usize = 1 << 20;
/// Buffers in flight between the hashing side and the disk writer.
const WRITE_QUEUE: usize = 4;

#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

fn blocking_err(what: &str, e: tokio::task::JoinError) -> StorageError {
    StorageError::io(what, io::Error::other(e))
}

impl FsBlobStore {
    /// Opens (and creates if needed) a store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore, StorageError> {
        let root = root.into();
        for dir in ["blobs", "uploads"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| StorageError::io(p.display().to_string(), e))?;
        }
        Ok(FsBlobStore { root })
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }

    fn blob_dir(&self, key: &BlobKey) -> PathBuf {
        let hex = key.digest.hex();
        self.root
            .join("blobs")
            .join(key.digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn blob_path(&self, key: &BlobKey) -> PathBuf {
        self.blob_dir(key).join(&key.generation)
    }
}

fn modified_ms(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn read_dir_sorted(path: &Path) -> io::Result<Vec<fs::DirEntry>> {
    match fs::read_dir(path) {
        Ok(it) => {
            let mut v: Vec<_> = it.collect::<Result<_, _>>()?;
            v.sort_by_key(|e| e.file_name());
            Ok(v)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Walks `blobs/<alg>/<ab>/<hex>/<generation>`.
fn walk_blobs(root: &Path) -> io::Result<Vec<StoredObject<BlobKey>>> {
    let mut out = Vec::new();
    for alg in read_dir_sorted(root)? {
        for ab in read_dir_sorted(&alg.path())? {
            for hex in read_dir_sorted(&ab.path())? {
                let digest = format!(
                    "{}:{}",
                    alg.file_name().to_string_lossy(),
                    hex.file_name().to_string_lossy()
                );
                let Ok(digest) = berth_core::Digest::parse(&digest) else {
                    continue;
                };
                for generation in read_dir_sorted(&hex.path())? {
                    let Some(key) =
                        BlobKey::new(digest.clone(), &generation.file_name().to_string_lossy())
                    else {
                        continue;
                    };
                    let meta = generation.metadata()?;
                    if meta.is_file() {
                        out.push(StoredObject {
                            key,
                            size: meta.len(),
                            modified_ms: modified_ms(&meta),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn create_upload(&self, id: &UploadId) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        tokio::task::spawn_blocking(move || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map(drop)
                .map_err(|e| StorageError::io(path.display().to_string(), e))
        })
        .await
        .map_err(|e| blocking_err("create upload", e))?
    }

    async fn append_upload(
        &self,
        id: &UploadId,
        offset: u64,
        mut body: ByteStream,
        digester: &mut Digester,
        max_len: Option<u64>,
    ) -> Result<u64, WriteError> {
        let path = self.upload_path(id);
        let what = path.display().to_string();
        let file = tokio::task::spawn_blocking(move || -> io::Result<File> {
            let mut f = OpenOptions::new().write(true).open(&path)?;
            // Bytes past the recorded offset belong to a write that never committed.
            f.set_len(offset)?;
            f.seek(SeekFrom::Start(offset))?;
            Ok(f)
        })
        .await
        .map_err(|e| blocking_err(&what, e))?
        .map_err(|e| StorageError::io(&what, e))?;

        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut f = file;
            while let Some(buf) = rx.blocking_recv() {
                f.write_all(&buf)?;
            }
            f.sync_data()
        });

        let mut written: u64 = 0;
        let mut pending = BytesMut::with_capacity(IO_CHUNK);
        let outcome: Result<(), WriteError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(WriteError::Body)?;
                written += chunk.len() as u64;
                if let Some(max) = max_len
                    && written > max
                {
                    return Err(WriteError::TooLong(max));
                }
                digester.update(&chunk);
                pending.extend_from_slice(&chunk);
                if pending.len() >= IO_CHUNK {
                    if tx.send(pending.split().freeze()).await.is_err() {
                        return Ok(()); // the writer failed; its error is reported below
                    }
                    pending.reserve(IO_CHUNK);
                }
            }
            if !pending.is_empty() {
                let _ = tx.send(pending.split().freeze()).await;
            }
            Ok(())
        }
        .await;
        drop(tx);
        let disk = writer.await.map_err(|e| blocking_err(&what, e))?;
        outcome?;
        disk.map_err(|e| StorageError::io(&what, e))?;
        Ok(written)
    }

    async fn commit_upload(
        &self,
        id: &UploadId,
        len: u64,
        key: &BlobKey,
    ) -> Result<(), StorageError> {
        let from = self.upload_path(id);
        let dir = self.blob_dir(key);
        let to = self.blob_path(key);
        let blobs_root = self.root.join("blobs");
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let ctx = |p: &Path| p.display().to_string();
            let f = OpenOptions::new()
                .write(true)
                .open(&from)
                .map_err(|e| StorageError::io(ctx(&from), e))?;
            f.set_len(len)
                .map_err(|e| StorageError::io(ctx(&from), e))?;
            f.sync_all().map_err(|e| StorageError::io(ctx(&from), e))?;
            drop(f);
            fs::create_dir_all(&dir).map_err(|e| StorageError::io(ctx(&dir), e))?;
            fs::rename(&from, &to).map_err(|e| StorageError::io(ctx(&to), e))?;
            // The new name, and any directory created for it, must survive a power loss
            // before the database says the blob exists.
            let mut d = dir.as_path();
            loop {
                fsync_dir(d).map_err(|e| StorageError::io(ctx(d), e))?;
                if d == blobs_root {
                    break;
                }
                match d.parent() {
                    Some(p) => d = p,
                    None => break,
                }
            }
            if let Some(uploads) = from.parent() {
                fsync_dir(uploads).map_err(|e| StorageError::io(ctx(uploads), e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| blocking_err("commit upload", e))?
    }

    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream, StorageError> {
        let path = self.upload_path(id);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| StorageError::io(path.display().to_string(), e))?;
        Ok(Box::pin(ReaderStream::with_capacity(
            file.take(len),
            IO_CHUNK,
        )))
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(path.display().to_string(), e)),
        }
    }

    async fn read_blob(
        &self,
        key: &BlobKey,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StorageError> {
        let path = self.blob_path(key);
        let what = path.display().to_string();
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| StorageError::io(&what, e))?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| StorageError::io(&what, e))?;
        }
        Ok(Box::pin(ReaderStream::with_capacity(
            file.take(len),
            IO_CHUNK,
        )))
    }

    async fn delete_blob(&self, key: &BlobKey) -> Result<(), StorageError> {
        let path = self.blob_path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(path.display().to_string(), e)),
        }
        // Leave no empty digest directory behind; another generation may still be there.
        let _ = tokio::fs::remove_dir(self.blob_dir(key)).await;
        Ok(())
    }

    async fn list_blobs(&self) -> Result<Vec<StoredObject<BlobKey>>, StorageError> {
        let root = self.root.join("blobs");
        let what = root.display().to_string();
        tokio::task::spawn_blocking(move || walk_blobs(&root))
            .await
            .map_err(|e| blocking_err(&what, e))?
            .map_err(|e| StorageError::io(&what, e))
    }

    async fn list_uploads(&self) -> Result<Vec<StoredObject<UploadId>>, StorageError> {
        let root = self.root.join("uploads");
        let what = root.display().to_string();
        tokio::task::spawn_blocking(move || -> io::Result<Vec<StoredObject<UploadId>>> {
            let mut out = Vec::new();
            for e in read_dir_sorted(&root)? {
                let Some(key) = UploadId::parse(&e.file_name().to_string_lossy()) else {
                    continue;
                };
                let meta = e.metadata()?;
                out.push(StoredObject {
                    key,
                    size: meta.len(),
                    modified_ms: modified_ms(&meta),
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| blocking_err(&what, e))?
        .map_err(|e| StorageError::io(&what, e))
    }

    async fn blob_size(&self, key: &BlobKey) -> Result<u64, StorageError> {
        let path = self.blob_path(key);
        tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .map_err(|e| StorageError::io(path.display().to_string(), e))
    }
}
