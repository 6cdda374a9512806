//! Password hashing (argon2id behind a concurrency limit, because one check needs about
//! 19 MiB and a CI fleet may log in at once) and robot secrets (256 random bits, stored as a
//! SHA-256: with that much entropy a fast hash is as safe as a slow one).

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(b)
}

/// A new robot secret or generated password: 256 bits, URL-safe base64 (43 characters).
pub fn new_secret() -> Result<String, SecretError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// What is stored for a robot secret.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(secret: &str, stored: &[u8]) -> bool {
    secret_hash(secret).ct_eq(stored).into()
}

/// Hashes and checks passwords on the blocking pool, at most `limit` at a time.
#[derive(Clone)]
pub struct PasswordHashing {
    permits: Arc<Semaphore>,
    /// Password verifications run so far (each costs one argon2 computation).
    verified: Arc<std::sync::atomic::AtomicU64>,
}

impl PasswordHashing {
    pub fn new(limit: usize) -> PasswordHashing {
        PasswordHashing {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            verified: Arc::default(),
        }
    }

    /// An argon2id PHC string for `password`.
    pub async fn hash(&self, password: &str) -> Result<String, SecretError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| SecretError::Hash(e.to_string()))?;
        let salt = random_bytes::<16>()?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .hash_password_with_salt(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| SecretError::Hash(e.to_string()))
        })
        .await
        .map_err(|e| SecretError::Hash(e.to_string()))?
    }

    /// How many password verifications ran so far.
    pub fn verifications(&self) -> u64 {
        self.verified.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `password` matches the PHC string `phc`. A malformed hash never matches.
    pub async fn verify(&self, password: &str, phc: &str) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        self.verified
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let password = password.to_owned();
        let phc = phc.to_owned();
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), phc.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_round_trip() {
        let h = PasswordHashing::new(1);
        let phc = h.hash("correct horse").await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify("correct horse", &phc).await);
        assert!(!h.verify("correct horsf", &phc).await);
        assert!(!h.verify("x", "not a hash").await);
        assert_ne!(phc, h.hash("correct horse").await.unwrap(), "salted");
    }

    #[test]
    fn secrets_are_long_and_hashed() {
        let s = new_secret().unwrap();
        assert_eq!(s.len(), 43);
        assert_ne!(s, new_secret().unwrap());
        let stored = secret_hash(&s);
        assert!(secret_matches(&s, &stored));
        assert!(!secret_matches("guess", &stored));
    }
}
