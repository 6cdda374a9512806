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

#[cfg(test)]
mod tests {
    use super::*;

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
