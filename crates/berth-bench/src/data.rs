//! Test content: one large buffer of pseudo-random bytes, and blobs cut from it. Each blob
//! ends with 16 unique bytes, so a blob of any size gets a new digest for the cost of
//! hashing 16 bytes: the SHA-256 state after the shared part is computed once per size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::http::ReqBody;
use crate::stats::Rng;

/// Size of the pieces a body is handed to the connection in.
const PIECE: usize = 1 << 20;

/// A blob: a shared prefix and a unique 16-byte suffix.
#[derive(Clone)]
pub struct Blob {
    prefix: Bytes,
    suffix: Bytes,
    pub digest: String,
}

impl Blob {
    pub fn len(&self) -> u64 {
        (self.prefix.len() + self.suffix.len()) as u64
    }

    /// The bytes in `start..end`, as pieces of at most 1 MiB (no copies).
    pub fn range(&self, start: u64, end: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        let p = self.prefix.len() as u64;
        for (part, base) in [(&self.prefix, 0u64), (&self.suffix, p)] {
            let lo = start.max(base);
            let hi = end.min(base + part.len() as u64);
            if lo >= hi {
                continue;
            }
            let s = part.slice((lo - base) as usize..(hi - base) as usize);
            let mut off = 0;
            while off < s.len() {
                let n = PIECE.min(s.len() - off);
                out.push(s.slice(off..off + n));
                off += n;
            }
        }
        out
    }

    pub fn body(&self) -> ReqBody {
        ReqBody::from_chunks(self.range(0, self.len()))
    }

    pub fn body_range(&self, start: u64, end: u64) -> ReqBody {
        ReqBody::from_chunks(self.range(start, end))
    }

    /// The whole content in one buffer (for files written to disk).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len() as usize);
        v.extend_from_slice(&self.prefix);
        v.extend_from_slice(&self.suffix);
        v
    }
}

/// Makes blobs of one size, each with a fresh digest.
pub struct BlobMaker {
    prefix: Bytes,
    state: Sha256,
    nonce: u64,
    counter: Arc<AtomicU64>,
}

impl BlobMaker {
    /// Blobs of `size` bytes (at least 16) whose first `size - 16` bytes are taken from
    /// `pool` at `offset`.
    pub fn new(
        pool: &Bytes,
        offset: usize,
        size: usize,
        nonce: u64,
        counter: Arc<AtomicU64>,
    ) -> Self {
        assert!(size >= 16, "a blob has at least its 16 unique bytes");
        let prefix = pool.slice(offset..offset + size - 16);
        let mut state = Sha256::new();
        state.update(&prefix);
        Self {
            prefix,
            state,
            nonce,
            counter,
        }
    }

    pub fn make(&self) -> Blob {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut suffix = [0u8; 16];
        suffix[..8].copy_from_slice(&self.nonce.to_le_bytes());
        suffix[8..].copy_from_slice(&n.to_le_bytes());
        let mut h = self.state.clone();
        h.update(suffix);
        Blob {
            prefix: self.prefix.clone(),
            suffix: Bytes::copy_from_slice(&suffix),
            digest: format!("sha256:{}", hex::encode(h.finalize())),
        }
    }
}

/// `len` pseudo-random bytes (incompressible, so no layer can cheat by compressing).
pub fn random_pool(len: usize, seed: u64) -> Bytes {
    let mut v = vec![0u8; len];
    // Fill in parallel-friendly 1 MiB pieces, each from its own generator.
    for (i, chunk) in v.chunks_mut(PIECE).enumerate() {
        Rng::new(seed ^ (i as u64 + 1)).fill(chunk);
    }
    Bytes::from(v)
}

pub fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_have_their_own_digest_and_ranges_cover_them() {
        let pool = random_pool(3 << 20, 7);
        let maker = BlobMaker::new(&pool, 100, (2 << 20) + 5, 42, Arc::default());
        let a = maker.make();
        let b = maker.make();
        assert_ne!(a.digest, b.digest);
        assert_eq!(a.digest, sha256_hex(&a.to_vec()));
        let pieces = a.range(0, a.len());
        assert!(pieces.iter().all(|p| p.len() <= PIECE));
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(joined, a.to_vec());
        let mid: Vec<u8> = a
            .range(1000, a.len() - 3)
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect();
        assert_eq!(mid, a.to_vec()[1000..a.len() as usize - 3]);
    }
}
