//! The filesystem BlobStore of the embedded mode.
//!
//! Layout under the root: `uploads/<upload-id>` for bytes in flight and
//! `blobs/<alg>/<first two hex>/<hex>/<generation>` for committed blobs. Durability follows
//! DESIGN.md: an append is fdatasync'ed before the caller records the new offset, and a commit
//! fsyncs the file, renames it into place and fsyncs the directories before the caller writes
//! the blob row. Disk writes run on a blocking thread fed through a small bounded channel, so
//! hashing on the async side overlaps with the disk and memory per upload stays bounded. Upload
//! bytes go to the disk directly (`O_DIRECT`) in aligned 512 KiB pieces where the filesystem
//! allows it, and through the page cache otherwise (see `open_direct`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use berth_core::Digester;
use futures_util::StreamExt;

use crate::buffers::{AlignedBuf, DIRECT_ALIGN, Recycler};
use crate::{BlobKey, BlobStore, ByteStream, StorageError, StoredObject, UploadId, WriteError};

/// Size of blob reads. 64 KiB reads halve the pull rate on this class of machine. What keeps
/// a stream fast is reading ahead: with 512 KiB pieces and three in flight, a single stream
/// reaches about 0.9 of the benchmark's minimal file server (1 MiB pieces), against 0.66 with
/// one 1 MiB piece ahead (docs/benchmarks.md).
const READ_CHUNK: usize = 512 << 10;
/// Pieces being read (or read and waiting) while the consumer sends the one it has: a stream
/// holds at most this many plus the one in the socket's hands, 2 MiB.
const READ_AHEAD: usize = 3;
/// Size of the buffers handed to the disk writer. The writer has one write in flight, and the
/// size of that write sets the disk's rate: `dd oflag=direct` on the benchmark machine wrote
/// 1.2 GB/s in 256 KiB writes, 1.6 in 512 KiB ones and 2.0 in 1 MiB ones (medians of 5). Yet
/// berth pushed as fast with 512 KiB pieces as with 1 MiB ones (two alternating rounds of five
/// 512 MiB pushes each, within the noise), and 1 MiB pieces held 0.9 MiB more at the peak.
const IO_CHUNK: usize = 512 << 10;
/// Buffers an upload owns: one filling while the writer writes the other, 1 MiB per upload.
/// A third would only let the receiving side run further ahead of a disk it cannot outrun.
const WRITE_BUFFERS: usize = 2;
/// Pieces at least this large (and aligned) are written directly to the disk; smaller ones,
/// the head and tail of an append and whole small blobs, go through the page cache.
const DIRECT_MIN: usize = 64 << 10;

/// Streams `len` bytes of `file` from `offset` in pieces of up to `READ_CHUNK`. Each piece is
/// read (positionally, so pieces can be read side by side) on a blocking thread straight into
/// a recycled buffer and handed to the consumer without a copy, and up to `READ_AHEAD` further
/// pieces are read while the consumer sends this one. No thread is held while the client is
/// slow to take bytes, so a slow client ties up nothing but a few buffers. A file shorter than
/// `offset + len` ends the stream early.
fn read_stream(file: File, offset: u64, len: u64) -> ByteStream {
    use std::collections::VecDeque;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    type Piece = (Vec<u8>, io::Result<()>);

    /// Fills `buf` from `at`; at the end of the file, truncates it to what there was.
    fn read_piece(file: &File, mut buf: Vec<u8>, at: u64) -> Piece {
        let mut got = 0;
        let r = loop {
            if got == buf.len() {
                break Ok(());
            }
            match file.read_at(&mut buf[got..], at + got as u64) {
                Ok(0) => {
                    buf.truncate(got);
                    break Ok(());
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        (buf, r)
    }

    struct State {
        file: Arc<File>,
        /// Where the next piece to ask for starts, and where the stream ends.
        pos: u64,
        end: u64,
        spare: Recycler,
        /// Pieces being read, in order, with the length asked of each.
        inflight: VecDeque<(usize, tokio::task::JoinHandle<Piece>)>,
    }

    impl State {
        fn fill(&mut self) {
            while self.inflight.len() < READ_AHEAD && self.pos < self.end {
                let n = (self.end - self.pos).min(READ_CHUNK as u64) as usize;
                let (file, buf, at) = (self.file.clone(), self.spare.take(n), self.pos);
                self.pos += n as u64;
                let job = tokio::task::spawn_blocking(move || read_piece(&file, buf, at));
                self.inflight.push_back((n, job));
            }
        }

        fn stop(&mut self) {
            self.pos = self.end;
            self.inflight.clear();
        }
    }

    let mut state = State {
        file: Arc::new(file),
        pos: offset,
        end: offset.saturating_add(len),
        spare: Recycler::default(),
        inflight: VecDeque::new(),
    };
    state.fill();
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        let (wanted, job) = st.inflight.pop_front()?;
        match job.await {
            Ok((buf, Ok(()))) => {
                if buf.len() < wanted {
                    st.stop(); // the file ended early
                } else {
                    st.fill();
                }
                if buf.is_empty() {
                    return None;
                }
                let bytes = st.spare.bytes(buf);
                Some((Ok(bytes), st))
            }
            Ok((_, Err(e))) => {
                st.stop();
                Some((Err(e), st))
            }
            Err(e) => {
                st.stop();
                Some((Err(io::Error::other(e)), st))
            }
        }
    }))
}

#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
    /// Whether large upload pieces are written with `O_DIRECT` (see `open_direct`); cleared
    /// for good the first time the filesystem refuses such a write.
    direct: Arc<AtomicBool>,
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
        Ok(FsBlobStore {
            root,
            direct: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Whether large upload pieces are written with `O_DIRECT` (on by default; see
    /// `open_direct`). Off, every write goes through the page cache.
    pub fn with_direct_writes(self, on: bool) -> FsBlobStore {
        self.direct.store(on, Ordering::Relaxed);
        self
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

    /// Writes `body` into the upload from `offset`, feeding `digester`; with `durable`, the
    /// bytes are flushed to the disk before it returns.
    async fn write_upload(
        &self,
        id: &UploadId,
        offset: u64,
        mut body: ByteStream,
        digester: &mut Digester,
        max_len: Option<u64>,
        durable: bool,
    ) -> Result<u64, WriteError> {
        let path = self.upload_path(id);
        let what = path.display().to_string();
        let try_direct = self.direct.load(Ordering::Relaxed);
        let (file, direct) =
            tokio::task::spawn_blocking(move || -> io::Result<(File, Option<File>)> {
                let f = OpenOptions::new().write(true).open(&path)?;
                // Bytes past the recorded offset belong to a write that never committed.
                f.set_len(offset)?;
                Ok((f, if try_direct { open_direct(&path) } else { None }))
            })
            .await
            .map_err(|e| blocking_err(&what, e))?
            .map_err(|e| StorageError::io(&what, e))?;

        // Full buffers go to the writer; it hands each back once written, so an upload
        // cycles through `WRITE_BUFFERS` buffers instead of allocating one per piece.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AlignedBuf>(WRITE_BUFFERS);
        let (back_tx, mut back_rx) = tokio::sync::mpsc::unbounded_channel::<AlignedBuf>();
        let writer = {
            let direct_ok = self.direct.clone();
            let what = what.clone();
            tokio::task::spawn_blocking(move || -> io::Result<()> {
                let mut direct = direct;
                let mut pos = offset;
                while let Some(buf) = rx.blocking_recv() {
                    let bytes = buf.as_slice();
                    let mut written = false;
                    if let Some(d) = &direct
                        && bytes.len() >= DIRECT_MIN
                        && bytes.len().is_multiple_of(DIRECT_ALIGN)
                        && pos.is_multiple_of(DIRECT_ALIGN as u64)
                    {
                        match d.write_all_at(bytes, pos) {
                            Ok(()) => written = true,
                            // The filesystem takes O_DIRECT opens but not these writes (an
                            // alignment it wants larger, say): the page cache it is, from here
                            // on. Rewriting the piece through it is harmless.
                            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                                tracing::info!(file = %what, error = %e, "direct writes refused; writing through the page cache");
                                direct_ok.store(false, Ordering::Relaxed);
                                direct = None;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    if !written {
                        file.write_all_at(bytes, pos)?;
                    }
                    pos += bytes.len() as u64;
                    let _ = back_tx.send(buf);
                }
                // One flush covers the inode whichever descriptor wrote: the page-cache bytes,
                // the size and the extents, and the disk's own cache.
                if durable { file.sync_data() } else { Ok(()) }
            })
        };

        let mut written: u64 = 0;
        let mut pending: Option<AlignedBuf> = None;
        // Every buffer of an upload has one size: `IO_CHUNK`, or a small blob's own length.
        let capacity = max_len.map_or(IO_CHUNK, |m| (m as usize).clamp(1, IO_CHUNK));
        let mut live = 0; // buffers this upload has allocated, up to WRITE_BUFFERS
        // How full the pending buffer gets: all of it, except that the first piece of an
        // append that starts off a boundary ends at the next one, so the pieces after it sit
        // at aligned file offsets and can go straight to the disk.
        let mut limit = 0;
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
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let buf = match &mut pending {
                        Some(b) => b,
                        None => {
                            let at = offset + written - rest.len() as u64;
                            let to_boundary = IO_CHUNK - (at % IO_CHUNK as u64) as usize;
                            limit = capacity.min(to_boundary);
                            let mut b = match back_rx.try_recv() {
                                Ok(b) => b,
                                Err(_) if live < WRITE_BUFFERS => {
                                    live += 1;
                                    AlignedBuf::new(capacity)
                                }
                                // Every buffer is with the writer: wait for one back.
                                Err(_) => match back_rx.recv().await {
                                    Some(b) => b,
                                    None => return Ok(()), // the writer failed; see below
                                },
                            };
                            b.clear();
                            pending.insert(b)
                        }
                    };
                    let n = buf.push(&rest[..rest.len().min(limit - buf.len())]);
                    rest = &rest[n..];
                    if buf.len() == limit
                        && let Some(full) = pending.take()
                        && tx.send(full).await.is_err()
                    {
                        return Ok(()); // the writer failed; its error is reported below
                    }
                }
            }
            if let Some(last) = pending.take().filter(|b| !b.is_empty()) {
                let _ = tx.send(last).await;
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
}

/// A second descriptor of the upload file for direct (`O_DIRECT`) writes, or `None` where the
/// filesystem refuses them. Large pieces bypass the page cache: the kernel does not copy them
/// (a copy that ran at a quarter of the SHA-256 rate on the benchmark machine, whose memory
/// the hypervisor backs only when first touched) and a push storm does not evict the blobs
/// being pulled. The flush at the end is still needed, for the size and the disk's cache.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
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

/// Creates `dir` and whichever of its ancestors below `root` are missing, and returns the
/// directories this call created (outermost first), whose parents must be flushed for the new
/// entries to last. One that appears meanwhile (another commit creating it) counts as created
/// here too, so this commit flushes its parent rather than trust the other one to have done
/// so already.
fn create_dirs(dir: &Path, root: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut missing = Vec::new();
    let mut d = dir;
    while d != root && !d.is_dir() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    missing.reverse();
    for m in &missing {
        match fs::create_dir(m) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StorageError::io(m.display().to_string(), e)),
        }
    }
    Ok(missing)
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
        body: ByteStream,
        digester: &mut Digester,
        max_len: Option<u64>,
    ) -> Result<u64, WriteError> {
        self.write_upload(id, offset, body, digester, max_len, true)
            .await
    }

    async fn write_whole_upload(
        &self,
        id: &UploadId,
        body: ByteStream,
        digester: &mut Digester,
        max_len: Option<u64>,
    ) -> Result<u64, WriteError> {
        self.write_upload(id, 0, body, digester, max_len, false)
            .await
    }

    /// Makes the first `len` bytes of the upload the blob `key`. The file is renamed first and
    /// flushed after, together with the directories: on a journaling filesystem the flush of
    /// the data, the new name and any new directory is then one journal commit, where flushing
    /// the file before the rename cost a commit of its own (and an `ftruncate` to the same
    /// size one more). Until the flushes return, the blob has no row: a crash in between
    /// leaves at worst an unknown generation file, which scrub removes.
    ///
    /// Directory flushes cost about as much as a commit each, so only those that hold a new
    /// entry are flushed: the blob's directory and the parent of each directory created for it
    /// (not every level up to the root, nor `uploads/`). This relies on what the journaling
    /// filesystems a registry runs on (ext4, XFS, btrfs) guarantee: a rename is one atomic
    /// journal entry, and a flush commits every metadata change made before it, so a parent
    /// directory another commit created a moment earlier is durable with this one's flush.
    /// Should an old upload name ever come back, it is a second name for the blob's bytes
    /// that scrub removes as an orphan upload.
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
            // Bytes past `len` are from a write that never committed.
            let size = f
                .metadata()
                .map_err(|e| StorageError::io(ctx(&from), e))?
                .len();
            if size != len {
                f.set_len(len)
                    .map_err(|e| StorageError::io(ctx(&from), e))?;
            }
            let created = create_dirs(&dir, &blobs_root)?;
            fs::rename(&from, &to).map_err(|e| StorageError::io(ctx(&to), e))?;
            // The bytes and the size, then the new name and every directory created for it,
            // must survive a power loss before the database says the blob exists: the
            // directory that holds the new name, and the parent of each new directory.
            f.sync_data().map_err(|e| StorageError::io(ctx(&to), e))?;
            drop(f);
            fsync_dir(&dir).map_err(|e| StorageError::io(ctx(&dir), e))?;
            for d in &created {
                if let Some(parent) = d.parent()
                    && parent != dir
                {
                    fsync_dir(parent).map_err(|e| StorageError::io(ctx(parent), e))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| blocking_err("commit upload", e))?
    }

    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream, StorageError> {
        let path = self.upload_path(id);
        let what = path.display().to_string();
        let file = tokio::task::spawn_blocking(move || File::open(&path))
            .await
            .map_err(|e| blocking_err(&what, e))?
            .map_err(|e| StorageError::io(&what, e))?;
        Ok(read_stream(file, 0, len))
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
        let file = tokio::task::spawn_blocking(move || File::open(&path))
            .await
            .map_err(|e| blocking_err(&what, e))?
            .map_err(|e| StorageError::io(&what, e))?;
        Ok(read_stream(file, offset, len))
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
            assert!(!piece.is_empty() && piece.len() <= READ_CHUNK);
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
        let data: Vec<u8> = (0..READ_CHUNK * 2 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();

        let (all, pieces) = collect(read_stream(
            file_of(dir.path(), &data),
            0,
            data.len() as u64,
        ))
        .await;
        assert_eq!(all, data);
        assert_eq!(pieces, 3);

        // From an offset, a length that ends inside a piece.
        let f = file_of(dir.path(), &data);
        let (all, _) = collect(read_stream(f, 7, READ_CHUNK as u64 + 3)).await;
        assert_eq!(all, data[7..7 + READ_CHUNK + 3]);

        // More asked than the file holds (scrub asks for one byte more): what there is.
        let (all, _) = collect(read_stream(
            file_of(dir.path(), &data),
            0,
            data.len() as u64 + 1,
        ))
        .await;
        assert_eq!(all, data);

        let (all, pieces) = collect(read_stream(file_of(dir.path(), b""), 0, 10)).await;
        assert!(all.is_empty() && pieces == 0);
    }

    fn pieces_of(data: &[u8], piece: usize) -> ByteStream {
        let pieces: Vec<io::Result<bytes::Bytes>> = data
            .chunks(piece)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures_util::stream::iter(pieces))
    }

    /// Appends that start on and off the alignment boundaries, of sizes below, at and past the
    /// write pieces, arrive whole whether large pieces go to the disk directly or through the
    /// page cache, and the bytes past a committed offset (a write that never committed) go.
    #[tokio::test]
    async fn appends_keep_every_byte_with_and_without_direct_writes() {
        let sizes = [
            1000,
            300_000,
            2 * IO_CHUNK + 5,
            DIRECT_ALIGN * 20,
            70_000,
            IO_CHUNK,
            3,
        ];
        let total: usize = sizes.iter().sum();
        let data: Vec<u8> = (0..total).map(|i| (i * 7 % 253) as u8).collect();
        for direct in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let store = FsBlobStore::open(tmp.path())
                .unwrap()
                .with_direct_writes(direct);
            let id = UploadId::new();
            store.create_upload(&id).await.unwrap();
            let mut digester = Digester::new(berth_core::Algorithm::Sha256);
            let mut offset = 0u64;
            for (i, size) in sizes.iter().enumerate() {
                let part = &data[offset as usize..offset as usize + size];
                let n = store
                    .append_upload(
                        &id,
                        offset,
                        pieces_of(part, 10_007 + i),
                        &mut digester,
                        None,
                    )
                    .await
                    .unwrap();
                assert_eq!(n, *size as u64);
                offset += n;
            }
            // An append that fails leaves bytes past the offset; the next one drops them.
            let garbage = vec![0xAAu8; IO_CHUNK + 17];
            let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
                Ok(bytes::Bytes::from(garbage)),
                Err(io::Error::other("client went away")),
            ]));
            let mut scratch = Digester::new(berth_core::Algorithm::Sha256);
            assert!(
                store
                    .append_upload(&id, offset, failing, &mut scratch, None)
                    .await
                    .is_err()
            );
            let (all, _) = collect(store.read_upload(&id, offset + 1).await.unwrap()).await;
            assert!(
                all.len() > data.len(),
                "the failed append left bytes behind"
            );
            let tail = vec![9u8; 5000];
            store
                .append_upload(&id, offset, pieces_of(&tail, 4096), &mut digester, None)
                .await
                .unwrap();
            let mut expected = data.clone();
            expected.extend_from_slice(&tail);
            let (all, _) = collect(
                store
                    .read_upload(&id, expected.len() as u64 + 1)
                    .await
                    .unwrap(),
            )
            .await;
            assert!(all == expected, "direct writes {direct}: content differs");
            assert_eq!(
                digester.finish(),
                berth_core::Digest::of(berth_core::Algorithm::Sha256, &expected)
            );
        }
    }

    #[test]
    fn creates_missing_directories_and_names_only_those() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("blobs");
        fs::create_dir(&root).unwrap();
        let dir = root.join("sha256").join("ab").join("abcd");
        let created = create_dirs(&dir, &root).unwrap();
        assert_eq!(
            created,
            vec![root.join("sha256"), root.join("sha256/ab"), dir.clone()]
        );
        assert!(dir.is_dir());
        // A sibling under the same prefix creates only its own directory.
        let sibling = root.join("sha256").join("ab").join("abef");
        assert_eq!(create_dirs(&sibling, &root).unwrap(), vec![sibling.clone()]);
        assert_eq!(create_dirs(&sibling, &root).unwrap(), Vec::<PathBuf>::new());
    }
}
