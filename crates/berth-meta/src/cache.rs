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
//! On PostgreSQL, with other nodes writing, tags are not cached at all (each lookup is answered
//! by a query that starts after it is asked, `tag_reads`, so a tag moved on one node is seen on
//! every node at once). Repository ids never change, and a manifest payload never changes for
//! its (repository, digest): the only stale entry possible is a manifest another node deleted,
//! so a transaction that deletes manifests sends `NOTIFY berth_cache` and every node's listener
//! flushes. While the listener
//! is not connected (at start, after a lost connection) the cache serves nothing, and it is
//! flushed before it serves again, so a notification missed during an outage cannot leave a
//! stale entry behind.
//!
//! The cache is bounded by the total payload bytes it holds; when full it starts over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_core::Digest;
use sqlx::AnyPool;

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

/// The channel of cache invalidations between nodes.
pub(crate) const CHANNEL: &str = "berth_cache";

/// The channel of the registry whose tables are in `schema`: [`CHANNEL`] for the usual
/// `public`, else one per schema, so registries that share a database in different schemas
/// (and tests, which take a schema each) do not flush each other's caches.
pub(crate) fn channel_for(schema: &str) -> String {
    if schema == "public" {
        CHANNEL.to_owned()
    } else {
        format!("{CHANNEL}_{schema}")
    }
}

/// Payloads sent on the channel.
pub(crate) const NOTE_MANIFESTS: &str = "manifests";
pub(crate) const NOTE_AUTH: &str = "auth";

pub(crate) struct ReadCache {
    inner: RwLock<Inner>,
    generation: AtomicU64,
    /// False while another node's writes could go unnoticed (PostgreSQL listener down).
    usable: AtomicBool,
    /// This store's name in the notifications it sends to other nodes (so that it skips its
    /// own, already applied when it committed), when there are other nodes (PostgreSQL). An
    /// embedded store is the only writer and also caches tags.
    node: Option<String>,
    /// The notification channel (PostgreSQL).
    channel: String,
}

impl ReadCache {
    /// A cache for the embedded mode: usable at once, tags included.
    pub fn embedded() -> ReadCache {
        ReadCache {
            inner: Default::default(),
            generation: AtomicU64::new(0),
            usable: AtomicBool::new(true),
            node: None,
            channel: String::new(),
        }
    }

    /// A cache shared with other nodes' writes: no tags, and unusable until the listener is up.
    pub fn shared(channel: String) -> ReadCache {
        ReadCache {
            inner: Default::default(),
            generation: AtomicU64::new(0),
            usable: AtomicBool::new(false),
            node: Some(node_name()),
            channel,
        }
    }

    /// Whether other nodes write too (PostgreSQL).
    pub fn has_peers(&self) -> bool {
        self.node.is_some()
    }

    fn caches_tags(&self) -> bool {
        !self.has_peers()
    }

    /// Tells the other nodes that `conn`'s transaction changed `what`, when it commits;
    /// nothing for an embedded store.
    pub async fn notify<'c, E>(&self, conn: E, what: &str) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        if let Some(node) = &self.node {
            sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
                .bind(&self.channel)
                .bind(format!("{what} {node}"))
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// Flushed on both edges: what was filled before an outage of the listener may be stale
    /// after it, and nothing is filled while it lasts.
    fn set_usable(&self, usable: bool) {
        self.clear();
        self.usable.store(usable, Ordering::Release);
    }

    /// The generation a reader must quote when it fills an entry.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn fill(&self, generation: u64, f: impl FnOnce(&mut Inner)) {
        if !self.usable.load(Ordering::Acquire) {
            return;
        }
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

    fn read(&self) -> Option<std::sync::RwLockReadGuard<'_, Inner>> {
        if !self.usable.load(Ordering::Acquire) {
            return None;
        }
        self.inner.read().ok()
    }

    pub fn repo(&self, name: &str) -> Option<i64> {
        self.read()?.repos.get(name).copied()
    }

    pub fn fill_repo(&self, generation: u64, name: &str, id: i64) {
        self.fill(generation, |i| {
            i.repos.insert(name.to_owned(), id);
        });
    }

    pub fn tag(&self, repo: i64, tag: &str) -> Option<Digest> {
        if !self.caches_tags() {
            return None;
        }
        self.read()?.tags.get(&(repo, tag.to_owned())).cloned()
    }

    pub fn fill_tag(&self, generation: u64, repo: i64, tag: &str, digest: &Digest) {
        if !self.caches_tags() {
            return;
        }
        self.fill(generation, |i| {
            i.tags.insert((repo, tag.to_owned()), digest.clone());
        });
    }

    pub fn manifest(&self, repo: i64, digest: &Digest) -> Option<Arc<ManifestRow>> {
        self.read()?.manifests.get(&(repo, digest.clone())).cloned()
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
pub(crate) fn watch_other_writers(cache: Arc<ReadCache>, pool: AnyPool, initial: i64) {
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

/// Follows other nodes' invalidations (PostgreSQL `LISTEN berth_cache`, see [`channel_for`]) for as long as the
/// process runs: manifests deleted elsewhere flush the cache, identity writes elsewhere bump
/// `auth_version` (which drops this node's credential and permission caches). The cache is
/// unusable while the listener is down and flushed whenever it reconnects. Returns once the
/// first connection is up, or after `connect_timeout` with the cache still unusable (the
/// listener keeps trying in the background).
pub(crate) async fn listen_for_other_nodes(
    cache: Arc<ReadCache>,
    auth_version: Arc<AtomicU64>,
    url: String,
    connect_timeout: Duration,
) {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut backoff = Duration::from_millis(100);
        loop {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(&cache.channel).await {
                        tracing::warn!(error = %e, "LISTEN for cache invalidations failed");
                    } else {
                        cache.set_usable(true);
                        // Identity caches may also have missed writes while we were away.
                        auth_version.fetch_add(1, Ordering::AcqRel);
                        backoff = Duration::from_millis(100);
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        // Ok(None) or an error: the connection was lost (and perhaps
                        // re-established, missing what was sent in between): start over.
                        while let Ok(Some(n)) = listener.try_recv().await {
                            let (what, from) =
                                n.payload().split_once(' ').unwrap_or((n.payload(), ""));
                            if Some(from) == cache.node.as_deref() {
                                continue;
                            }
                            match what {
                                NOTE_AUTH => {
                                    auth_version.fetch_add(1, Ordering::AcqRel);
                                }
                                _ => cache.clear(),
                            }
                        }
                        tracing::warn!(
                            "lost the cache-invalidation listener: cache off until it reconnects"
                        );
                    }
                    cache.set_usable(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for cache invalidations; retrying");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    let _ = tokio::time::timeout(connect_timeout, ready_rx).await;
}

/// A name for this store that no other store shares: process id, time and a random value.
fn node_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{}-{}-{random:016x}", std::process::id(), crate::now_ms())
}
