//! Password hashing (argon2id, about 19 MiB and tens of milliseconds per check, so behind a
//! concurrency limit and a bounded queue) and robot secrets (256 random bits, stored as a
//! SHA-256: with that much entropy a fast hash is as safe as a slow one).
//!
//! The queue: at most `auth.hash_concurrency` checks run at once and at most `auth.hash_queue`
//! wait, in two classes by the [`Standing`] of the address they come from. Checks from clean
//! addresses (no failed or shed login within the throttle's window) are served first. When the
//! queue is full, the suspect check that has waited longest is shed (its caller gets `Busy`,
//! answered 429 with `Retry-After`, and the shed counts against its address); with only clean
//! checks waiting, a suspect newcomer is refused at once and a clean one sheds the oldest clean
//! check. So a flood of guesses, whose addresses turn suspect at their first failure or shed,
//! delays a real first login by at most the clean checks ahead of it, and cannot shed it.
//! Credentials verified a moment ago never reach the queue (the auth service caches them).

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

/// Where a password check comes from, as the failed-login throttle sees its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No failed or shed login from the address within the throttle's window (and checks that
    /// are not logins: new passwords, the admin's bootstrap).
    Clean,
    /// Some failed or shed login from the address within the window.
    Suspect,
}

struct Queue {
    running: usize,
    /// Served before any suspect waiter.
    clean: VecDeque<oneshot::Sender<Permit>>,
    suspect: VecDeque<oneshot::Sender<Permit>>,
}

impl Queue {
    fn waiting(&self) -> usize {
        self.clean.len() + self.suspect.len()
    }
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
        while let Some(next) = q.clean.pop_front().or_else(|| q.suspect.pop_front()) {
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
    async fn permit(self: &Arc<Self>, standing: Standing) -> Result<Permit, SecretError> {
        let rx = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.running < self.limit {
                q.running += 1;
                return Ok(Permit(self.clone()));
            }
            if q.waiting() >= self.max_waiting {
                // Shed the suspect check that has waited longest (its receiver sees the channel
                // close); with none waiting, a suspect newcomer is the one refused, and a clean
                // one takes the place of the oldest clean check.
                if q.suspect.pop_front().is_none() {
                    match standing {
                        Standing::Suspect => return Err(SecretError::Busy),
                        Standing::Clean => drop(q.clean.pop_front()),
                    }
                }
            }
            let (tx, rx) = oneshot::channel();
            match standing {
                Standing::Clean => q.clean.push_back(tx),
                Standing::Suspect => q.suspect.push_back(tx),
            }
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
                    clean: VecDeque::new(),
                    suspect: VecDeque::new(),
                }),
            }),
            verified: Arc::default(),
            dummy: Arc::default(),
        }
    }

    /// An argon2id PHC string for `password`; queued as a clean check.
    pub async fn hash(&self, password: &str) -> Result<String, SecretError> {
        let _permit = self.shared.permit(Standing::Clean).await?;
        hash_blocking(password.to_owned()).await
    }

    /// How many password verifications ran so far.
    pub fn verifications(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Whether `password` matches the PHC string `phc`. A malformed hash never matches.
    /// `Busy` when the check was shed from a full queue, or refused by it (`standing` says
    /// which waiters it goes ahead of and which it may displace).
    pub async fn verify(
        &self,
        password: &str,
        phc: &str,
        standing: Standing,
    ) -> Result<bool, SecretError> {
        let _permit = self.shared.permit(standing).await?;
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
    pub async fn verify_nothing(
        &self,
        password: &str,
        standing: Standing,
    ) -> Result<(), SecretError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let secret = new_secret()?;
                hash_blocking(secret).await
            })
            .await?;
        self.verify(password, dummy, standing).await.map(|_| ())
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
        assert!(
            h.verify("correct horse", &phc, Standing::Clean)
                .await
                .unwrap()
        );
        assert!(
            !h.verify("correct horsf", &phc, Standing::Clean)
                .await
                .unwrap()
        );
        assert!(
            !h.verify("x", "not a hash", Standing::Suspect)
                .await
                .unwrap()
        );
        assert_ne!(phc, h.hash("correct horse").await.unwrap(), "salted");
        let before = h.verifications();
        h.verify_nothing("anything", Standing::Clean).await.unwrap();
        assert_eq!(h.verifications(), before + 1);
    }

    #[tokio::test]
    async fn a_full_queue_sheds_its_oldest_waiter() {
        let h = PasswordHashing::new(1, 2);
        let running = h.shared.permit(Standing::Clean).await.unwrap();
        let mut waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = h.shared.clone();
                tokio::spawn(async move { s.permit(Standing::Clean).await.map(drop) })
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
        assert_eq!((q.running, q.waiting()), (0, 0));
    }

    /// Runs every task that can run (the test runtime has one thread).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    type Served = Arc<Mutex<Vec<&'static str>>>;

    /// Queues a check named `name` (after those queued before it); it records in `served` when
    /// it runs.
    async fn queue_check(
        h: &PasswordHashing,
        served: &Served,
        name: &'static str,
        standing: Standing,
    ) -> tokio::task::JoinHandle<Result<(), SecretError>> {
        let (s, served) = (h.shared.clone(), served.clone());
        let task = tokio::spawn(async move {
            let permit = s.permit(standing).await?;
            served.lock().unwrap().push(name);
            drop(permit);
            Ok(())
        });
        settle().await;
        task
    }

    #[tokio::test]
    async fn clean_checks_go_first_and_suspect_ones_are_shed_first() {
        let h = PasswordHashing::new(1, 3);
        let served = Served::default();
        let queue = |name, standing| queue_check(&h, &served, name, standing);
        let busy = |r: Result<Result<(), SecretError>, tokio::task::JoinError>| {
            matches!(r.expect("the task ends"), Err(SecretError::Busy))
        };

        // A queue full of suspect checks: a clean arrival sheds the oldest of them and is
        // served before the others.
        let running = h.shared.permit(Standing::Clean).await.unwrap();
        let s1 = queue("s1", Standing::Suspect).await;
        let s2 = queue("s2", Standing::Suspect).await;
        let s3 = queue("s3", Standing::Suspect).await;
        let c1 = queue("c1", Standing::Clean).await;
        assert!(s1.is_finished(), "the oldest suspect check is shed at once");
        assert!(busy(s1.await));
        drop(running);
        for t in [s2, s3, c1] {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(*served.lock().unwrap(), ["c1", "s2", "s3"]);
        served.lock().unwrap().clear();

        // Suspect checks are shed before clean ones, however recent.
        let running = h.shared.permit(Standing::Clean).await.unwrap();
        let c2 = queue("c2", Standing::Clean).await;
        let s4 = queue("s4", Standing::Suspect).await;
        let s5 = queue("s5", Standing::Suspect).await;
        let c3 = queue("c3", Standing::Clean).await;
        assert!(busy(s4.await), "the oldest suspect check is shed first");
        let c4 = queue("c4", Standing::Clean).await;
        assert!(busy(s5.await), "then the next suspect one");

        // Only clean checks wait: a suspect newcomer is refused at once, without displacing
        // any; a clean one sheds the oldest clean check.
        let s6 = queue("s6", Standing::Suspect).await;
        assert!(s6.is_finished(), "refused without waiting");
        assert!(busy(s6.await));
        let c5 = queue("c5", Standing::Clean).await;
        assert!(
            busy(c2.await),
            "the oldest clean check makes room for a clean one"
        );
        drop(running);
        for t in [c3, c4, c5] {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(*served.lock().unwrap(), ["c3", "c4", "c5"]);
        let q = h.shared.queue.lock().unwrap();
        assert_eq!((q.running, q.waiting()), (0, 0));
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
