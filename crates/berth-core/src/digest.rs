//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the streaming hasher behind uploads,
//! whose state can be exported and restored so a chunked upload can continue in another
//! request, after a restart, or on another node.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm the registry accepts (OCI image-spec registered algorithms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form <algorithm>:<encoded>")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (sha256 and sha512 are)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} must have {1} lowercase hex characters after the algorithm")]
    BadEncoding(String, usize),
}

/// A validated digest. `Digest::parse` is the only way to get one from outside input, so the
/// hex part can be used in storage paths without further checks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_owned()))?;
        // The image-spec grammar allows other algorithm names; they are well-formed but
        // unsupported, which callers report differently from garbage.
        let alg_ok = !alg.is_empty()
            && alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        if !alg_ok || hex.is_empty() {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        let algorithm = Algorithm::parse(alg)
            .ok_or_else(|| DigestError::UnsupportedAlgorithm(alg.to_owned()))?;
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadEncoding(s.to_owned(), algorithm.hex_len()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The digest of a byte string, with the given algorithm.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut d = Digester::new(algorithm);
        d.update(bytes);
        d.finish()
    }

    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part, safe as a path component.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// For decoding a stored digest (`#[sqlx(try_from = "String")]` in berth-meta's rows).
impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

/// A running hash over an upload.
#[derive(Clone)]
pub enum Digester {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// The exported state of a [`Digester`] was not produced by this version or is corrupt.
#[derive(Debug, thiserror::Error)]
#[error("stored hash state is unreadable")]
pub struct HashStateError;

impl Digester {
    pub fn new(algorithm: Algorithm) -> Digester {
        match algorithm {
            Algorithm::Sha256 => Digester::Sha256(Sha256::new()),
            Algorithm::Sha512 => Digester::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Digester::Sha256(_) => Algorithm::Sha256,
            Digester::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Digester::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Digester::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }

    /// The hash state as bytes: one algorithm byte, then the hasher's own serialization.
    pub fn export(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        match self {
            Digester::Sha256(h) => {
                out.push(1);
                out.extend_from_slice(h.serialize().as_slice());
            }
            Digester::Sha512(h) => {
                out.push(2);
                out.extend_from_slice(h.serialize().as_slice());
            }
        }
        out
    }

    pub fn restore(state: &[u8]) -> Result<Digester, HashStateError> {
        let (tag, rest) = state.split_first().ok_or(HashStateError)?;
        // sha2's serialized state is the chaining value, then the count of whole blocks
        // (little-endian), then the buffer. A count whose length in bits does not fit the
        // hash's length field cannot come from a real upload, and would overflow in finish().
        let counter = |from: usize, len: usize| {
            rest.get(from..from + len).map(|b| {
                let mut n = [0u8; 16];
                n[..len].copy_from_slice(b);
                u128::from_le_bytes(n)
            })
        };
        let too_long = match tag {
            1 => counter(32, 8).is_none_or(|blocks| blocks >= 1 << 55),
            2 => counter(64, 16).is_none_or(|blocks| blocks >= 1 << 118),
            _ => true,
        };
        if too_long {
            return Err(HashStateError);
        }
        match tag {
            1 => {
                let s = SerializedState::<Sha256>::try_from(rest).map_err(|_| HashStateError)?;
                Ok(Digester::Sha256(
                    Sha256::deserialize(&s).map_err(|_| HashStateError)?,
                ))
            }
            2 => {
                let s = SerializedState::<Sha512>::try_from(rest).map_err(|_| HashStateError)?;
                Ok(Digester::Sha512(
                    Sha512::deserialize(&s).map_err(|_| HashStateError)?,
                ))
            }
            _ => Err(HashStateError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// Found by the `reference` fuzz target: a state whose block counter is so large that the
    /// message length in bits overflows made `finish()` panic (debug) or give a wrong digest
    /// (release). `restore` refuses such a state.
    #[test]
    fn restore_refuses_block_counters_that_overflow() {
        let mut sha256 = vec![1u8];
        sha256.extend([0u8; 39]);
        sha256.push(4);
        sha256.extend([0u8; 64]);
        assert_eq!(sha256.len(), 105);
        assert!(Digester::restore(&sha256).is_err());
        let mut sha512 = vec![2u8];
        sha512.extend([0u8; 78]);
        sha512.push(0x40);
        sha512.extend([0u8; 129]);
        assert_eq!(sha512.len(), 209);
        assert!(Digester::restore(&sha512).is_err());
        // The counter sits where restore reads it: after 3 whole blocks it says 3.
        let mut d = Digester::new(Algorithm::Sha256);
        d.update(&[0u8; 64 * 3 + 5]);
        let state = d.export();
        assert_eq!(state[1 + 32..1 + 40], 3u64.to_le_bytes());
        let mut d = Digester::new(Algorithm::Sha512);
        d.update(&[0u8; 128 * 2 + 5]);
        let state = d.export();
        assert_eq!(state[1 + 64..1 + 80], 2u128.to_le_bytes());
        // A real state still restores and finishes.
        let mut d = Digester::new(Algorithm::Sha256);
        d.update(&[7u8; 1000]);
        let state = d.export();
        assert_eq!(
            Digester::restore(&state).unwrap().finish(),
            Digest::sha256_of(&[7u8; 1000])
        );
    }

    #[test]
    fn parses_and_prints_sha256() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn refuses_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../../../etc/passwd",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e"),
            Err(DigestError::UnsupportedAlgorithm("md5".into()))
        );
    }

    #[test]
    fn sha512_round_trip() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert!(d.to_string().starts_with("sha512:ddaf35a1"));
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }

    proptest! {
        #[test]
        fn exported_state_continues_the_hash(a in proptest::collection::vec(any::<u8>(), 0..300),
                                             b in proptest::collection::vec(any::<u8>(), 0..300),
                                             sha512 in any::<bool>()) {
            let alg = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
            let mut first = Digester::new(alg);
            first.update(&a);
            let mut resumed = Digester::restore(&first.export()).unwrap();
            resumed.update(&b);
            let whole = Digest::of(alg, &[a.clone(), b.clone()].concat());
            prop_assert_eq!(resumed.finish(), whole);
        }

        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = Digest::parse(&s);
        }

        #[test]
        fn restore_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Digester::restore(&bytes);
        }
    }
}
