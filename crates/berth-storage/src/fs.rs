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
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::buffers::Recycler;
use crate::{BlobKey, BlobStore, ByteStream, StorageError, StoredObject, UploadId, WriteError};

/// Size of the buffers handed to the disk writer and of blob reads. 64 KiB reads halve the
/// pull rate on this class of machine; with the next piece read while the current one is sent,
/// 512 KiB pulls as fast as 1 MiB did and halves the memory each transfer holds
/// (docs/benchmarks.md).
const IO_CHUNK: usize = 512 << 10;
/// Buffers in flight between the hashing side and the disk writer. Writes land in the page
/// cache (the fdatasync comes at the end), so a short queue keeps the writer busy.
const WRITE_QUEUE: usize = 2;

/// Streams `len` bytes of `file` from its current position in pieces of up to `IO_CHUNK`.
/// Each piece is read on a blocking thread straight into a recycled buffer and handed to the
/// consumer without a copy, and the next piece is read while the consumer sends this one. No
/// thread is held while the client is slow to take bytes, so a slow client ties up nothing but
/// its two or three buffers. A file shorter than `len` ends the stream early.
fn read_stream(file: File, len: u64) -> ByteStream {
    type Piece = (File, Vec<u8>, io::Result<()>);

    fn read_piece(mut file: File, mut buf: Vec<u8>) -> Piece {
        let mut got = 0;
        let r = loop {
            if got == buf.len() {
                break Ok(());
            }
            match std::io::Read::read(&mut file, &mut buf[got..]) {
                Ok(0) => {
                    // The file ends here (scrub asks for one byte more than the blob's size
                    // to find files that are too long): what there is, then the end.
                    buf.truncate(got);
                    break Ok(());
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        (file, buf, r)
    }

    struct State {
        /// Bytes not yet asked of the disk.
        left: u64,
        spare: Recycler,
        next: Option<tokio::task::JoinHandle<Piece>>,
        /// The length asked of the piece being read.
        wanted: usize,
    }

    impl State {
        fn start(&mut self, file: File) {
            if self.left == 0 {
                return;
            }
            let n = self.left.min(IO_CHUNK as u64) as usize;
            self.left -= n as u64;
            self.wanted = n;
            let buf = self.spare.take(n);
            self.next = Some(tokio::task::spawn_blocking(move || read_piece(file, buf)));
        }
    }

    let mut state = State {
        left: len,
        spare: Recycler::default(),
        next: None,
        wanted: 0,
    };
    state.start(file);
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        let piece = st.next.take()?.await;
        match piece {
            Ok((file, buf, Ok(()))) => {
                if st.wanted > buf.len() {
                    st.left = 0; // the file ended early
                } else {
                    // Read ahead while this piece goes to the client.
                    st.start(file);
                }
                if buf.is_empty() {
                    return None;
                }
                let bytes = st.spare.bytes(buf);
                Some((Ok(bytes), st))
            }
            Ok((_, _, Err(e))) => Some((Err(e), st)),
            Err(e) => Some((Err(io::Error::other(e)), st)),
        }
    }))
}

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

        // Full buffers go to the writer; it hands each back once written, so an upload
        // cycles through a few buffers instead of allocating one per MiB.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let spare = Recycler::default();
        let writer = {
            let spare = spare.clone();
            tokio::task::spawn_blocking(move || -> io::Result<()> {
                let mut f = file;
                while let Some(buf) = rx.blocking_recv() {
                    f.write_all(&buf)?;
                    spare.give(buf);
                }
                f.sync_data()
            })
        };

        let mut written: u64 = 0;
        let mut pending = Vec::new();
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
                // Buffers are filled to exactly IO_CHUNK, never grown (a reallocation would
                // copy the whole buffer).
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    if pending.capacity() == 0 {
                        pending = spare.take(0);
                        pending.reserve_exact(IO_CHUNK);
                    }
                    let room = IO_CHUNK - pending.len();
                    let (now, later) = rest.split_at(room.min(rest.len()));
                    pending.extend_from_slice(now);
                    rest = later;
                    if pending.len() == IO_CHUNK
                        && tx.send(std::mem::take(&mut pending)).await.is_err()
                    {
                        return Ok(()); // the writer failed; its error is reported below
                    }
                }
            }
            if !pending.is_empty() {
                let _ = tx.send(std::mem::take(&mut pending)).await;
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
        let file = tokio::task::spawn_blocking(move || -> io::Result<File> {
            let mut f = File::open(&path)?;
            if offset > 0 {
                f.seek(SeekFrom::Start(offset))?;
            }
            Ok(f)
        })
        .await
        .map_err(|e| blocking_err(&what, e))?
        .map_err(|e| StorageError::io(&what, e))?;
        Ok(read_stream(file, len))
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(mut s: ByteStream) -> (Vec<u8>, usize) {
        let (mut all, mut pieces) = (Vec::new(), 0);
        while let Some(piece) = s.next().await {
            let piece = piece.unwrap();
            assert!(!piece.is_empty() && piece.len() <= IO_CHUNK);
            all.extend_from_slice(&piece);
            pieces += 1;
        }
        (all, pieces)
    }

    fn file_of(dir: &Path, data: &[u8]) -> File {
        let path = dir.join("f");
        std::fs::write(&path, data).unwrap();
        File::open(path).unwrap()
    }

    #[tokio::test]
    async fn reads_stream_every_byte_across_pieces_and_stop_at_the_end_of_a_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..IO_CHUNK * 2 + 1000).map(|i| (i % 251) as u8).collect();

        let (all, pieces) =
            collect(read_stream(file_of(dir.path(), &data), data.len() as u64)).await;
        assert_eq!(all, data);
        assert_eq!(pieces, 3);

        // From an offset, a length that ends inside a piece.
        let mut f = file_of(dir.path(), &data);
        f.seek(SeekFrom::Start(7)).unwrap();
        let (all, _) = collect(read_stream(f, IO_CHUNK as u64 + 3)).await;
        assert_eq!(all, data[7..7 + IO_CHUNK + 3]);

        // More asked than the file holds (scrub asks for one byte more): what there is.
        let (all, _) = collect(read_stream(
            file_of(dir.path(), &data),
            data.len() as u64 + 1,
        ))
        .await;
        assert_eq!(all, data);

        let (all, pieces) = collect(read_stream(file_of(dir.path(), b""), 10)).await;
        assert!(all.is_empty() && pieces == 0);
    }
}
