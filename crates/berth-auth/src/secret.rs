//! Password hashing (argon2id, about 19 MiB and tens of milliseconds per check, so behind a
//! concurrency limit and a bounded queue) and robot secrets (256 random bits, stored as a
//! SHA-256: with that much entropy a fast hash is as safe as a slow one).
//!
//! The queue: at most `auth.hash_concurrency` checks run at once and at most `auth.hash_queue`
//! wait. When the queue is full, the attempt that has waited longest is shed (its caller gets
//! `Busy`, answered 429 with `Retry-After`), so a flood of guesses from many addresses delays
//! a real first login by at most the queue's length, never by the flood's. Credentials
//! verified a moment ago never reach the queue (the auth service caches them).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The queue of password checks was full and this one was shed.
    #[error("too many password checks are waiting")]
    Busy,
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

struct Queue {
    running: usize,
    waiting: VecDeque<oneshot::Sender<Permit>>,
}

struct Shared {
    limit: usize,
    max_waiting: usize,
    queue: Mutex<Queue>,
}

/// The right to run one argon2 computation; dropping it hands the right to the next waiter.
struct Permit(Arc<Shared>);

impl Drop for Permit {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(next) = q.waiting.pop_front() {
            match next.send(Permit(self.0.clone())) {
                Ok(()) => return,
                // The waiter is gone (its request ended): the right stays with us, for the
                // next one. Forgotten, not dropped, since dropping it would come back here.
                Err(p) => std::mem::forget(p),
            }
        }
        q.running -= 1;
    }
}

impl Shared {
    async fn permit(self: &Arc<Self>) -> Result<Permit, SecretError> {
        let rx = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.running < self.limit {
                q.running += 1;
                return Ok(Permit(self.clone()));
            }
            if q.waiting.len() >= self.max_waiting {
                // Shed the attempt that has waited longest: its receiver sees the channel
                // close.
                q.waiting.pop_front();
            }
            let (tx, rx) = oneshot::channel();
            q.waiting.push_back(tx);
            rx
        };
        rx.await.map_err(|_| SecretError::Busy)
    }
}

/// Hashes and checks passwords on the blocking pool, `limit` at a time, `max_waiting` queued.
#[derive(Clone)]
pub struct PasswordHashing {
    shared: Arc<Shared>,
    /// Password verifications run so far (each costs one argon2 computation).
    verified: Arc<AtomicU64>,
    /// A hash of nothing anyone knows, which a check of a name without a password (an unknown
    /// user) verifies against, so that it costs what a wrong password costs.
    dummy: Arc<OnceCell<String>>,
}

impl PasswordHashing {
    pub fn new(limit: usize, max_waiting: usize) -> PasswordHashing {
        PasswordHashing {
            shared: Arc::new(Shared {
                limit: limit.max(1),
                max_waiting,
                queue: Mutex::new(Queue {
                    running: 0,
                    waiting: VecDeque::new(),
                }),
            }),
            verified: Arc::default(),
            dummy: Arc::default(),
        }
    }

    /// An argon2id PHC string for `password`.
    pub async fn hash(&self, password: &str) -> Result<String, SecretError> {
        let _permit = self.shared.permit().await?;
        hash_blocking(password.to_owned()).await
    }

    /// How many password verifications ran so far.
    pub fn verifications(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Whether `password` matches the PHC string `phc`. A malformed hash never matches.
    /// `Busy` when the check was shed from a full queue.
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, SecretError> {
        let _permit = self.shared.permit().await?;
        self.verified.fetch_add(1, Ordering::Relaxed);
        let password = password.to_owned();
        let phc = phc.to_owned();
        Ok(tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), phc.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false))
    }

    /// Spends one verification, as [`PasswordHashing::verify`] would, on a name that has no
    /// password here; never matches.
    pub async fn verify_nothing(&self, password: &str) -> Result<(), SecretError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let secret = new_secret()?;
                hash_blocking(secret).await
            })
            .await?;
        self.verify(password, dummy).await.map(|_| ())
    }
}

async fn hash_blocking(password: String) -> Result<String, SecretError> {
    let salt = random_bytes::<16>()?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| SecretError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| SecretError::Hash(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_round_trip() {
        let h = PasswordHashing::new(1, 4);
        let phc = h.hash("correct horse").await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify("correct horse", &phc).await.unwrap());
        assert!(!h.verify("correct horsf", &phc).await.unwrap());
        assert!(!h.verify("x", "not a hash").await.unwrap());
        assert_ne!(phc, h.hash("correct horse").await.unwrap(), "salted");
        let before = h.verifications();
        h.verify_nothing("anything").await.unwrap();
        assert_eq!(h.verifications(), before + 1);
    }

    #[tokio::test]
    async fn a_full_queue_sheds_its_oldest_waiter() {
        let h = PasswordHashing::new(1, 2);
        let running = h.shared.permit().await.unwrap();
        let mut waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = h.shared.clone();
                tokio::spawn(async move { s.permit().await.map(drop) })
            })
            .collect();
        // Let all three queue (in spawn order, on this single-threaded runtime).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        drop(running);
        let first = waiters.remove(0).await.unwrap();
        assert!(
            matches!(first, Err(SecretError::Busy)),
            "the oldest is shed"
        );
        for w in waiters {
            assert!(w.await.unwrap().is_ok());
        }
        // Everything was handed back.
        let q = h.shared.queue.lock().unwrap();
        assert_eq!((q.running, q.waiting.len()), (0, 0));
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
