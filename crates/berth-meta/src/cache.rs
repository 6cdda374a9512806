//! An in-memory read cache for the hot pull path: repository ids, tag → digest, and manifest
//! payloads by (repository, digest). A manifest GET by tag needs no database round trip when
//! warm.
//!
//! Correctness rules:
//! - this process's writers remove what they change after their transaction commits;
//! - a reader fills an entry only if no write happened since it started its query (a global
//!   generation counter), so a read racing a write can never install a stale value;
//! - writes by another process (`berth gc` beside the server) are noticed through SQLite's
//!   `PRAGMA data_version`, polled every `POLL`, which flushes the whole cache.
//!
//! The cache is bounded by the total payload bytes it holds; when full it starts over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_core::Digest;
use sqlx::SqlitePool;

use crate::ManifestRow;

/// How often another process's writes are looked for.
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// Payload bytes held at most.
const MAX_BYTES: usize = 64 << 20;
/// Entries held at most (tags and repositories are small but unbounded in number).
const MAX_ENTRIES: usize = 200_000;

#[derive(Default)]
struct Inner {
    repos: HashMap<String, i64>,
    tags: HashMap<(i64, String), Digest>,
    manifests: HashMap<(i64, Digest), Arc<ManifestRow>>,
    bytes: usize,
}

impl Inner {
    fn full(&self) -> bool {
        self.bytes > MAX_BYTES
            || self.repos.len() + self.tags.len() + self.manifests.len() > MAX_ENTRIES
    }
}

#[derive(Default)]
pub(crate) struct ReadCache {
    inner: RwLock<Inner>,
    generation: AtomicU64,
}

impl ReadCache {
    /// The generation a reader must quote when it fills an entry.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn fill(&self, generation: u64, f: impl FnOnce(&mut Inner)) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        // Checked under the lock: a writer bumps the generation before it takes the lock to
        // invalidate, so a fill after an invalidation always sees the new generation.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if inner.full() {
            *inner = Inner::default();
        }
        f(&mut inner);
    }

    fn change(&self, f: impl FnOnce(&mut Inner)) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut inner) = self.inner.write() {
            f(&mut inner);
        }
    }

    pub fn repo(&self, name: &str) -> Option<i64> {
        self.inner.read().ok()?.repos.get(name).copied()
    }

    pub fn fill_repo(&self, generation: u64, name: &str, id: i64) {
        self.fill(generation, |i| {
            i.repos.insert(name.to_owned(), id);
        });
    }

    pub fn tag(&self, repo: i64, tag: &str) -> Option<Digest> {
        self.inner
            .read()
            .ok()?
            .tags
            .get(&(repo, tag.to_owned()))
            .cloned()
    }

    pub fn fill_tag(&self, generation: u64, repo: i64, tag: &str, digest: &Digest) {
        self.fill(generation, |i| {
            i.tags.insert((repo, tag.to_owned()), digest.clone());
        });
    }

    pub fn manifest(&self, repo: i64, digest: &Digest) -> Option<Arc<ManifestRow>> {
        self.inner
            .read()
            .ok()?
            .manifests
            .get(&(repo, digest.clone()))
            .cloned()
    }

    pub fn fill_manifest(&self, generation: u64, repo: i64, row: Arc<ManifestRow>) {
        self.fill(generation, |i| {
            i.bytes += row.payload.len();
            i.manifests.insert((repo, row.digest.clone()), row);
        });
    }

    /// A tag was written or deleted.
    pub fn forget_tag(&self, repo: i64, tag: &str) {
        self.change(|i| {
            i.tags.remove(&(repo, tag.to_owned()));
        });
    }

    /// Manifests were deleted (possibly with dependents and their tags): start over.
    pub fn clear(&self) {
        self.change(|i| *i = Inner::default());
    }
}

/// Flushes the cache whenever another connection (another process) commits a write.
/// `initial` is the connection's data_version read before the cache served anything.
pub(crate) fn watch_other_writers(cache: Arc<ReadCache>, pool: SqlitePool, initial: i64) {
    tokio::spawn(async move {
        let mut last = initial;
        loop {
            tokio::time::sleep(POLL).await;
            if pool.is_closed() {
                return;
            }
            // data_version changes when a connection other than this one commits; this
            // process writes through this very connection (the pool holds one), so only
            // other processes move it.
            let Ok(v) = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                .fetch_one(&pool)
                .await
            else {
                continue;
            };
            if v != last {
                tracing::debug!("another process wrote to the database: read cache flushed");
                cache.clear();
                last = v;
            }
        }
    });
}
