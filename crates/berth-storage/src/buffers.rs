//! Recycled I/O buffers for one transfer. Blob bytes move in pieces of about 1 MiB; allocating a
//! fresh piece for each would cost page faults on every MiB (the allocator maps such blocks
//! afresh, see `tune_malloc` in the binary) and unmapping from another thread. A transfer
//! instead keeps the few buffers it has in flight and reuses each once its bytes are written
//! (upload) or sent (download): memory per transfer stays at those few buffers, and they are
//! freed when it ends.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// The spare buffers of one transfer.
#[derive(Clone, Default)]
pub(crate) struct Recycler {
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Spare buffers a transfer keeps at most (more than it can have in flight).
const KEEP: usize = 4;

impl Recycler {
    /// A buffer of length `len` (its contents are whatever it held before: callers overwrite
    /// them).
    pub fn take(&self, len: usize) -> Vec<u8> {
        let spare = self.spare.lock().ok().and_then(|mut s| s.pop());
        let mut buf = spare.unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        } else {
            buf.truncate(len);
        }
        buf
    }

    /// Gives a buffer back for reuse.
    pub fn give(&self, buf: Vec<u8>) {
        if let Ok(mut s) = self.spare.lock()
            && s.len() < KEEP
        {
            s.push(buf);
        }
    }

    /// `buf` as `Bytes` that return to this recycler when the last reference drops.
    pub fn bytes(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            buf,
            home: self.clone(),
        })
    }
}

struct Lent {
    buf: Vec<u8>,
    home: Recycler,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.home.give(std::mem::take(&mut self.buf));
    }
}

/// Alignment of the buffers and file offsets of direct (`O_DIRECT`) writes: a multiple of
/// every disk's logical block size (512 or 4096 bytes) and of the page size.
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// A fixed-capacity byte buffer whose first byte sits at a `DIRECT_ALIGN` boundary, as direct
/// writes require. It is carved out of an ordinary `Vec` one alignment larger, so no unsafe
/// allocation code is needed; the slack costs 4 KiB per buffer.
pub(crate) struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
    capacity: usize,
}

impl AlignedBuf {
    pub fn new(capacity: usize) -> AlignedBuf {
        let storage = vec![0u8; capacity + DIRECT_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf {
            storage,
            start,
            len: 0,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends as much of `bytes` as fits; returns how much that was.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.capacity - self.len);
        let at = self.start + self.len;
        self.storage[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_buffer_starts_on_the_boundary_and_stops_at_its_capacity() {
        for cap in [1, 4096, 10_000] {
            let mut b = AlignedBuf::new(cap);
            assert_eq!(b.as_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
            let data: Vec<u8> = (0..cap + 7).map(|i| i as u8).collect();
            assert_eq!(b.push(&data[..3]), 3.min(cap));
            let pushed = b.push(&data[3.min(cap)..]);
            assert_eq!(b.len(), cap);
            assert_eq!(pushed, cap - 3.min(cap));
            assert_eq!(b.as_slice(), &data[..cap]);
            assert_eq!(b.push(b"x"), 0);
            b.clear();
            assert!(b.is_empty());
            assert_eq!(b.as_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
        }
    }

    #[test]
    fn a_buffer_comes_back_when_its_bytes_are_dropped() {
        let r = Recycler::default();
        let mut buf = r.take(8);
        buf.copy_from_slice(b"abcdefgh");
        let ptr = buf.as_ptr();
        let b = r.bytes(buf);
        assert_eq!(&b[..], b"abcdefgh");
        let part = b.slice(2..4);
        drop(b);
        assert!(r.spare.lock().unwrap().is_empty(), "a slice still holds it");
        drop(part);
        let again = r.take(4);
        assert_eq!(again.as_ptr(), ptr, "the same allocation is reused");
        assert_eq!(again.len(), 4);
    }

    #[test]
    fn at_most_a_few_spares_are_kept() {
        let r = Recycler::default();
        for _ in 0..10 {
            r.give(vec![0; 16]);
        }
        assert_eq!(r.spare.lock().unwrap().len(), KEEP);
    }
}
