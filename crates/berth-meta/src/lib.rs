//! MetaStore: everything but blob bytes. Repositories, blob rows and their per-repository
//! links, upload sessions, manifests with their references, and tags, in SQLite (the embedded
//! mode). All SQL of the registry lives in this crate.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`. Writes go through a pool of one
//! connection and every read-then-write transaction starts with `BEGIN IMMEDIATE`, so a
//! decision taken on a read cannot be invalidated before its write commits, and no deferred
//! transaction ever fails to upgrade its lock (which a client would see as a 500).

mod auth;
mod cache;
mod gc;
mod jobs;
mod repos;
mod schema;
mod snapshot;

pub use auth::{
    ArtifactRow, AuditEvent, AuditFilter, CreateError, MemberRow, ProjectRow, RepoSummary,
    RobotRow, TagRow, UserRow,
};
pub use gc::{BlobReview, GcPolicy, ManifestReview, ReviewItem, StorageUsage, Sweep};
pub use jobs::{Job, JobState};
pub use repos::{ProjectDeletion, RepoDeletion, RepoRef};

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::{Digest, RepoName};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, AssertSqlSafe, ConnectOptions, Row, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Incompatible(String),
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Unreachable(String),
    /// A new repository would exceed `limits.repositories_per_project`.
    #[error(
        "project {project} holds its maximum of {limit} repositories (limits.repositories_per_project); \
         delete one or raise the limit"
    )]
    RepositoryLimit { project: String, limit: u64 },
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// What a database failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbCondition {
    /// The database cannot grow: the disk is full (SQLite `SQLITE_FULL`, PostgreSQL 53100).
    Full,
    /// The database is not serving now: unreachable, restarting, shutting down, out of
    /// connections, busy past the timeout. Retrying later can help.
    Unavailable,
    /// Anything else (a bug, a corrupt row).
    Other,
}

impl MetaError {
    /// What this failure means: a full disk, a database that is down for now, or a fault.
    pub fn condition(&self) -> DbCondition {
        let MetaError::Db(e) = self else {
            return match self {
                MetaError::Unreachable(_) => DbCondition::Unavailable,
                _ => DbCondition::Other,
            };
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DbCondition::Unavailable,
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // SQLite codes are numbers (the primary code is the low byte of an extended
                // one), PostgreSQL's are SQLSTATEs.
                if let Ok(n) = code.parse::<i32>() {
                    match n & 0xff {
                        13 => DbCondition::Full,           // SQLITE_FULL
                        5 | 6 => DbCondition::Unavailable, // SQLITE_BUSY, SQLITE_LOCKED
                        _ => DbCondition::Other,
                    }
                } else if code == "53100" {
                    DbCondition::Full // disk_full
                } else if code.starts_with("08") // connection exceptions
                    || code.starts_with("57P") // admin or crash shutdown, cannot connect now
                    || code == "57014" // statement timeout
                    || code == "53300" // too many connections
                    || code == "40001" // serialization failure
                    || code == "40P01"
                // deadlock detected
                {
                    DbCondition::Unavailable
                } else {
                    DbCondition::Other
                }
            }
            _ => DbCondition::Other,
        }
    }
}

/// Milliseconds since the epoch: the one time unit of the schema.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A live blob as a repository sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub digest: Digest,
    pub generation: String,
    pub size: u64,
    pub touched_at: i64,
    /// When the repository's link was written or last refreshed (0 when not asked through a
    /// repository).
    pub linked_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: String,
    pub repo_id: i64,
    pub offset: u64,
    pub hash_state: Vec<u8>,
    pub updated_at: i64,
}

/// A manifest to store, with what it references.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub payload: Vec<u8>,
    pub subject: Option<Digest>,
    pub config_digest: Option<Digest>,
    pub annotations: Option<String>,
    /// Blobs (config and distributable layers) with the sizes their descriptors claim.
    pub blobs: Vec<(Digest, u64)>,
    /// Child manifests of an index, with the sizes their descriptors claim.
    pub children: Vec<(Digest, u64)>,
    pub pushed_by: Option<String>,
    /// Cached from a proxy project's upstream: its blobs and children are fetched when asked
    /// for, so they need not exist yet.
    pub from_upstream: bool,
    /// A sparse manifest (distribution-spec): blobs and children that are not in the
    /// repository are accepted; those that are must have the sizes their descriptors claim.
    pub sparse: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub payload: bytes::Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerRow {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: u64,
    pub annotations: Option<String>,
}

/// Why a manifest could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PutManifestError {
    #[error("blob {0} is not in this repository")]
    MissingBlob(Digest),
    #[error("manifest {0} is not in this repository")]
    MissingManifest(Digest),
    #[error("descriptor of {digest} says {claimed} bytes but the stored content has {actual}")]
    SizeMismatch {
        digest: Digest,
        claimed: u64,
        actual: u64,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<sqlx::Error> for PutManifestError {
    fn from(e: sqlx::Error) -> Self {
        PutManifestError::Meta(MetaError::Db(e))
    }
}

/// What deleting a manifest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Deleted, with this many manifests in all (referrers and orphaned children included).
    Deleted(usize),
    NotFound,
    /// An index of the repository still lists it: these parents.
    Listed(Vec<String>),
}

/// What committing an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// This upload's bytes became the live generation.
    Stored,
    /// A live generation already existed (deduplicated); the upload's bytes are not needed.
    AlreadyLive { generation: String },
    /// No live generation exists and the caller offered none: nothing was changed.
    NotLive,
}

/// The SQL engine behind a [`MetaStore`]. Queries are written once, in the subset both
/// understand (`$n` parameters, `ON CONFLICT`, `RETURNING`); the few places that differ match
/// on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The statement for this dialect, where the two differ.
    pub(crate) fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database[?sslmode=...]`
    pub url: String,
    /// The connection that LISTENs for other nodes' cache invalidations (a session, so not
    /// through PgBouncer in transaction mode). None: `url`.
    pub listen_url: Option<String>,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    /// PostgreSQL's `statement_timeout` for every statement of this node.
    pub statement_timeout: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            listen_url: None,
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// The key of the transaction-scoped advisory lock every PostgreSQL write transaction takes
/// first (`pg_advisory_xact_lock`), so writes are serialized as SQLite's single writer
/// serializes them (see `begin_on`). ASCII "berth-wr".
const PG_WRITE_LOCK: i64 = 0x6265_7274_682d_7772;

#[derive(Clone)]
pub struct MetaStore {
    dialect: Dialect,
    read: AnyPool,
    write: AnyPool,
    cache: std::sync::Arc<cache::ReadCache>,
    auth_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    committer: tokio::sync::mpsc::Sender<CommitRequest>,
    /// `limits.repositories_per_project` (0: none).
    repo_limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn parse_digest(s: &str) -> Result<Digest> {
    Digest::from_str(s).map_err(|e| MetaError::Corrupt(format!("{s:?}: {e}")))
}

/// Begins a transaction that may read and then write. SQLite: `BEGIN IMMEDIATE` takes the
/// database's write lock at once. PostgreSQL: one transaction-scoped advisory lock, taken
/// first, that every write transaction of every node takes, so a decision made on a read
/// cannot be invalidated by another writer before this transaction commits: the same
/// guarantee, and therefore the same code, on both dialects. Reads never take it. The lock is
/// released at commit or rollback, and by the server when a node's connection dies, and it is
/// transaction-scoped, so it works behind PgBouncer in transaction mode.
pub(crate) async fn begin_on(
    pool: &AnyPool,
    dialect: Dialect,
) -> Result<Transaction<'static, Any>, sqlx::Error> {
    match dialect {
        Dialect::Sqlite => match pool.begin_with("BEGIN IMMEDIATE").await {
            // A COMMIT that failed (SQLITE_FULL rolls the transaction back by itself) leaves
            // sqlx counting a transaction that SQLite no longer has, and every later BEGIN on
            // that connection fails: close it, so the pool opens a fresh one, and begin there.
            Err(sqlx::Error::InvalidSavePointStatement) => {
                tracing::warn!("closing a database connection left inside a failed transaction");
                pool.acquire().await?.close().await?;
                pool.begin_with("BEGIN IMMEDIATE").await
            }
            other => other,
        },
        Dialect::Postgres => {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(PG_WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        now_ms(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl MetaStore {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub async fn open_sqlite(path: &Path) -> Result<MetaStore> {
        sqlx::any::install_default_drivers();
        let url = |read_only: bool| {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(!read_only)
                .read_only(read_only)
                .to_url_lossy()
        };
        // The URL carries the file and the mode; the pragmas are set on every connection.
        // Each connection keeps a small page cache (SQLite's default is 2 MiB per connection):
        // pages it misses come from the OS page cache at the cost of a pread, the B-trees'
        // upper levels stay cached, and the hot read path is served from the registry's own
        // cache. The writer's 1 MiB holds the upper levels of every table and index at 100,000
        // manifests.
        let write_pragmas = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                             PRAGMA cache_size = -1024;";
        let read_pragmas = "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                            PRAGMA cache_size = -256;";
        let options = |pragmas: &'static str| {
            AnyPoolOptions::new().after_connect(move |conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(pragmas).execute(conn).await?;
                    Ok(())
                })
            })
        };
        let write = options(write_pragmas)
            .max_connections(1)
            .min_connections(1)
            .connect_with(AnyConnectOptions::from_url(&url(false))?)
            .await?;
        schema::migrate(&write, Dialect::Sqlite).await?;
        // SQLite reads take CPU, not waits (the file sits in the page cache): two readers a
        // core keep the cores busy, and each more reader is one more thread, page cache and
        // set of prepared statements. A reader idle for a minute is closed.
        let readers = std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).clamp(2, 8));
        let read = options(read_pragmas)
            .max_connections(readers as u32)
            .min_connections(1)
            .idle_timeout(Duration::from_secs(60))
            .connect_with(AnyConnectOptions::from_url(&url(true))?)
            .await?;
        let cache = std::sync::Arc::new(cache::ReadCache::embedded());
        let version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&write)
            .await?;
        cache::watch_other_writers(cache.clone(), write.clone(), version);
        Ok(Self::assemble(
            Dialect::Sqlite,
            read,
            write,
            cache,
            Default::default(),
        ))
    }

    /// Connects to PostgreSQL and applies migrations. Fails at once, with the reason, when the
    /// server cannot be reached within the connect timeout.
    pub async fn open_postgres(opts: &PgOptions) -> Result<MetaStore> {
        sqlx::any::install_default_drivers();
        if !berth_core::config::is_postgres_url(&opts.url) {
            return Err(MetaError::Config(
                "database.url must be a postgres:// URL (leave it empty for SQLite)".into(),
            ));
        }
        let timeout_ms = opts.statement_timeout.as_millis();
        // A transaction left open by a node that hangs must not hold the write lock forever.
        let settings = format!(
            "SET statement_timeout = {timeout_ms}; SET idle_in_transaction_session_timeout = {};",
            timeout_ms.max(60_000)
        );
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(opts.connect_timeout)
                .after_connect({
                    let settings = settings.clone();
                    move |conn, _| {
                        let settings = settings.clone();
                        Box::pin(async move {
                            sqlx::raw_sql(AssertSqlSafe(settings)).execute(conn).await?;
                            Ok(())
                        })
                    }
                })
        };
        let connect = AnyConnectOptions::from_str(&opts.url)?;
        // Writes wait for one lock, so a few connections are enough for them; reads get the rest.
        let write_max = (opts.max_connections / 4).clamp(1, 8);
        let read_max = opts.max_connections.saturating_sub(write_max).max(1);
        let write = tokio::time::timeout(
            opts.connect_timeout,
            pool(write_max).connect_with(connect.clone()),
        )
        .await
        .map_err(|_| {
            MetaError::Unreachable(format!(
                "no answer within {:?} (database.connect_timeout): is PostgreSQL running and \
                 listening at that host and port?",
                opts.connect_timeout
            ))
        })??;
        let listen_url = match &opts.listen_url {
            Some(u) if !u.is_empty() => u.clone(),
            _ => opts.url.clone(),
        };
        // Migrations take a session-level lock (sqlx), which a pooler in transaction mode
        // would hand to another client: they run over the direct connection, listen_url.
        if listen_url == opts.url {
            schema::migrate(&write, Dialect::Postgres).await?;
        } else {
            let direct = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(opts.connect_timeout)
                .connect_with(AnyConnectOptions::from_str(&listen_url)?)
                .await?;
            let migrated = schema::migrate(&direct, Dialect::Postgres).await;
            direct.close().await;
            migrated?;
        }
        let read = pool(read_max).connect_with(connect).await?;
        let cache = std::sync::Arc::new(cache::ReadCache::shared());
        let auth_version = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        cache::listen_for_other_nodes(
            cache.clone(),
            auth_version.clone(),
            listen_url,
            opts.connect_timeout,
        )
        .await;
        Ok(Self::assemble(
            Dialect::Postgres,
            read,
            write,
            cache,
            auth_version,
        ))
    }

    /// For tests of this and other crates: a fresh, empty store. SQLite in `dir`; or, with
    /// `TEST_METASTORE=postgres`, a new schema of its own in the PostgreSQL at
    /// `TEST_POSTGRES_URL` (scripts/pg-test-server.sh prints one), so tests never see each
    /// other's rows. scripts/test.sh runs the tests once each way.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn open_for_tests(dir: &Path) -> Result<MetaStore> {
        match std::env::var("TEST_METASTORE").as_deref() {
            Ok("postgres") => {
                let url = std::env::var("TEST_POSTGRES_URL").map_err(|_| {
                    MetaError::Config("TEST_METASTORE=postgres needs TEST_POSTGRES_URL".into())
                })?;
                let opts = Self::test_postgres_options(&url).await?;
                Self::open_postgres(&opts).await
            }
            Ok("sqlite") | Ok("") | Err(_) => Self::open_sqlite(&dir.join("berth.db")).await,
            Ok(other) => Err(MetaError::Config(format!(
                "TEST_METASTORE={other:?}: use sqlite or postgres"
            ))),
        }
    }

    /// Creates an empty schema in the PostgreSQL at `admin_url` and returns options whose
    /// connections use it.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn test_postgres_options(admin_url: &str) -> Result<PgOptions> {
        use sqlx::Connection;
        let schema = format!("t_{}", unique_suffix());
        let mut conn = sqlx::postgres::PgConnection::connect(admin_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let mut opts = PgOptions::new(format!(
            "{admin_url}{sep}options=-c%20search_path%3D{schema}"
        ));
        opts.max_connections = 6;
        Ok(opts)
    }

    fn assemble(
        dialect: Dialect,
        read: AnyPool,
        write: AnyPool,
        cache: std::sync::Arc<cache::ReadCache>,
        auth_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> MetaStore {
        let (committer, queue) = tokio::sync::mpsc::channel(GROUP_COMMIT_MAX * 4);
        let repo_limit = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(group_committer(
            write.clone(),
            dialect,
            queue,
            repo_limit.clone(),
        ));
        MetaStore {
            dialect,
            read,
            write,
            cache,
            auth_version,
            committer,
            repo_limit,
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        begin_on(&self.write, self.dialect).await
    }

    /// Runs one statement of a batched maintenance loop (`$1`: a time, `$2`: the batch size)
    /// in a write transaction of its own and returns the rows it changed.
    pub(crate) async fn write_batch(&self, sql: &'static str, at: i64, limit: u32) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(sql)
            .bind(at)
            .bind(limit as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    /// Liveness of the database, for readiness probes.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    // ---- repositories ----

    pub async fn repo_id(&self, name: &RepoName) -> Result<Option<i64>> {
        if let Some(id) = self.cache.repo(name.as_str()) {
            return Ok(Some(id));
        }
        let generation = self.cache.generation();
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.read)
            .await?;
        if let Some(id) = id {
            self.cache.fill_repo(generation, name.as_str(), id);
        }
        Ok(id)
    }

    /// The repository's id, creating it (and its project) on first use.
    pub async fn ensure_repo(&self, name: &RepoName) -> Result<i64> {
        if let Some(id) = self.repo_id(name).await? {
            return Ok(id);
        }
        let mut tx = self.begin_write().await?;
        let id = repos::resolve(&mut tx, &RepoRef::from(name), self.repository_limit()).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Repository names after `last`, in bytewise order, at most `n`.
    pub async fn list_repos(&self, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        let rows = sqlx::query_scalar(
            "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    // ---- blobs ----

    /// The live blob `digest` if it is linked into repository `repo_id`.
    pub async fn blob_in_repo(&self, repo_id: i64, digest: &Digest) -> Result<Option<BlobRow>> {
        let row = sqlx::query(
            "SELECT b.generation, b.size, b.touched_at, rb.linked_at FROM repo_blobs rb
             JOIN blobs b ON b.digest = rb.digest AND b.state = 'live'
             WHERE rb.repo_id = $1 AND rb.digest = $2",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| BlobRow {
            digest: digest.clone(),
            generation: r.get(0),
            size: r.get::<i64, _>(1) as u64,
            touched_at: r.get(2),
            linked_at: r.get(3),
        }))
    }

    /// The live blob `digest`, whatever repository holds it.
    pub async fn live_blob(&self, digest: &Digest) -> Result<Option<BlobRow>> {
        let row = sqlx::query(
            "SELECT generation, size, touched_at FROM blobs WHERE digest = $1 AND state = 'live'",
        )
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| BlobRow {
            digest: digest.clone(),
            generation: r.get(0),
            size: r.get::<i64, _>(1) as u64,
            touched_at: r.get(2),
            linked_at: 0,
        }))
    }

    /// Names of the repositories that hold a link to `digest`.
    pub async fn repos_with_blob(&self, digest: &Digest) -> Result<Vec<String>> {
        let rows = sqlx::query_scalar(
            "SELECT r.name FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id
             WHERE rb.digest = $1 ORDER BY r.name",
        )
        .bind(digest.to_string())
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    /// Records that a client relied on a blob through a repository (HEAD, GET), so garbage
    /// collection keeps both the blob and the repository's link through the grace period.
    /// Callers only call this when the stored times are stale, so pulls do not write on every
    /// request. False when a sweep took the blob or the link first: the caller must then
    /// answer as if the blob did not exist (a client that saw 200 would skip its upload).
    pub async fn touch_blob(&self, repo_id: i64, digest: &Digest, now: i64) -> Result<bool> {
        let d = digest.to_string();
        let mut tx = self.begin_write().await?;
        let blob =
            sqlx::query("UPDATE blobs SET touched_at = $2 WHERE digest = $1 AND state = 'live'")
                .bind(&d)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let link =
            sqlx::query("UPDATE repo_blobs SET linked_at = $3 WHERE repo_id = $1 AND digest = $2")
                .bind(repo_id)
                .bind(&d)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if blob == 0 || link == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Links a live blob into a repository (a cross-repository mount). False if no live blob.
    pub async fn link_blob(&self, repo: impl Into<RepoRef>, digest: &Digest) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let live: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM blobs WHERE digest = $1 AND state = 'live'")
                .bind(digest.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        if live.is_none() {
            return Ok(false);
        }
        let repo_id = repos::resolve(&mut tx, &repo.into(), self.repository_limit()).await?;
        sqlx::query(
            "INSERT INTO repo_blobs (repo_id, digest, linked_at) VALUES ($1, $2, $3)
             ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE blobs SET touched_at = $2 WHERE digest = $1 AND state = 'live'")
            .bind(digest.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        gc::enqueue_blob(&mut tx, &digest.to_string(), now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a blob's link from a repository. False if it was not linked.
    pub async fn unlink_blob(&self, repo_id: i64, digest: &Digest) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM repo_blobs WHERE repo_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        gc::enqueue_blob(&mut tx, &digest.to_string(), now_ms()).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- uploads ----

    /// Records a new upload session of the repository (created by name if missing).
    pub async fn create_upload(
        &self,
        id: &str,
        repo: impl Into<RepoRef>,
        hash_state: &[u8],
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let repo_id = repos::resolve(&mut tx, &repo.into(), self.repository_limit()).await?;
        sqlx::query(
            "INSERT INTO uploads (id, repo_id, \"offset\", hash_state, created_at, updated_at)
             VALUES ($1, $2, 0, $3, $4, $4)",
        )
        .bind(id)
        .bind(repo_id)
        .bind(hash_state)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT repo_id, \"offset\", hash_state, updated_at FROM uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| UploadRow {
            id: id.to_owned(),
            repo_id: r.get(0),
            offset: r.get::<i64, _>(1) as u64,
            hash_state: r.get(2),
            updated_at: r.get(3),
        }))
    }

    /// Records a durable append: moves the session from `old_offset` to `new_offset`. False
    /// when the session is gone or another request moved it first (that request won).
    pub async fn advance_upload(
        &self,
        id: &str,
        old_offset: u64,
        new_offset: u64,
        hash_state: &[u8],
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE uploads SET \"offset\" = $3, hash_state = $4, updated_at = $5
             WHERE id = $1 AND \"offset\" = $2",
        )
        .bind(id)
        .bind(old_offset as i64)
        .bind(new_offset as i64)
        .bind(hash_state)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a finished upload: the blob (unless a live generation exists) and the
    /// repository's link, and ends the session. Concurrent calls are committed together in
    /// one transaction (group commit): with many small pushes in flight, one WAL fsync covers
    /// them all instead of one each.
    pub async fn commit_blob(
        &self,
        upload_id: &str,
        repo: impl Into<RepoRef>,
        digest: &Digest,
        stored: Option<(&str, u64)>,
    ) -> Result<CommitOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let req = CommitRequest {
            upload_id: upload_id.to_owned(),
            repo: repo.into(),
            digest: digest.clone(),
            stored: stored.map(|(g, s)| (g.to_owned(), s)),
            reply,
        };
        if self.committer.send(req).await.is_err() {
            return Err(MetaError::Corrupt("the blob committer has stopped".into()));
        }
        answer
            .await
            .map_err(|_| MetaError::Corrupt("the blob committer has stopped".into()))?
    }

    // ---- manifests and tags ----

    /// Stores a manifest and points `tags` at it, in one transaction that first checks every
    /// referenced blob and child manifest is present (and live) in the repository.
    pub async fn put_manifest(
        &self,
        repo: impl Into<RepoRef>,
        m: &NewManifest,
        tags: &[&str],
    ) -> Result<(), PutManifestError> {
        let now = now_ms();
        let digest = m.digest.to_string();
        let mut tx = self.begin_write().await?;
        let repo_id = repos::resolve(&mut tx, &repo.into(), self.repository_limit()).await?;
        let checked_blobs = if m.from_upstream {
            &[][..]
        } else {
            &m.blobs[..]
        };
        let checked_children = if m.from_upstream {
            &[][..]
        } else {
            &m.children[..]
        };
        for (blob, claimed) in checked_blobs {
            let size: Option<i64> = sqlx::query_scalar(
                "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest AND b.state = 'live'
                 WHERE rb.repo_id = $1 AND rb.digest = $2",
            )
            .bind(repo_id)
            .bind(blob.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if size.is_none() && m.sparse {
                continue;
            }
            check_reference(blob, *claimed, size, PutManifestError::MissingBlob)?;
        }
        for (child, claimed) in checked_children {
            let size: Option<i64> =
                sqlx::query_scalar("SELECT size FROM manifests WHERE repo_id = $1 AND digest = $2")
                    .bind(repo_id)
                    .bind(child.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if size.is_none() && m.sparse {
                continue;
            }
            check_reference(child, *claimed, size, PutManifestError::MissingManifest)?;
        }
        let inserted = sqlx::query(
            "INSERT INTO manifests (repo_id, digest, media_type, artifact_type, size, payload, subject,
                                    config_digest, annotations, created_at, untagged_at, pushed_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (repo_id, digest) DO NOTHING",
        )
        .bind(repo_id)
        .bind(&digest)
        .bind(&m.media_type)
        .bind(&m.artifact_type)
        .bind(m.payload.len() as i64)
        .bind(&m.payload)
        .bind(m.subject.as_ref().map(|d| d.to_string()))
        .bind(m.config_digest.as_ref().map(|d| d.to_string()))
        .bind(&m.annotations)
        .bind(now)
        .bind(if tags.is_empty() { Some(now) } else { None })
        .bind(&m.pushed_by)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted && tags.is_empty() {
            gc::enqueue_manifest(&mut tx, repo_id, &digest, now).await?;
        }
        if inserted {
            for (blob, _) in &m.blobs {
                sqlx::query("INSERT INTO manifest_refs (repo_id, manifest, blob) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(repo_id)
                    .bind(&digest)
                    .bind(blob.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            for (child, _) in &m.children {
                sqlx::query(
                    "INSERT INTO manifest_children (repo_id, parent, child) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(repo_id)
                .bind(&digest)
                .bind(child.to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        for &tag in tags {
            let previous: Option<String> =
                sqlx::query_scalar("SELECT digest FROM tags WHERE repo_id = $1 AND name = $2")
                    .bind(repo_id)
                    .bind(tag)
                    .fetch_optional(&mut *tx)
                    .await?;
            sqlx::query(
                "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(tag)
            .bind(&digest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE manifests SET untagged_at = NULL WHERE repo_id = $1 AND digest = $2",
            )
            .bind(repo_id)
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
            if let Some(prev) = previous.filter(|p| *p != digest) {
                mark_untagged_if_orphan(&mut tx, repo_id, &prev, now).await?;
                gc::enqueue_manifest(&mut tx, repo_id, &prev, now).await?;
            }
        }
        tx.commit().await?;
        for &tag in tags {
            self.cache.forget_tag(repo_id, tag);
        }
        Ok(())
    }

    pub async fn resolve_tag(&self, repo_id: i64, tag: &str) -> Result<Option<Digest>> {
        if let Some(d) = self.cache.tag(repo_id, tag) {
            return Ok(Some(d));
        }
        let generation = self.cache.generation();
        let d: Option<String> =
            sqlx::query_scalar("SELECT digest FROM tags WHERE repo_id = $1 AND name = $2")
                .bind(repo_id)
                .bind(tag)
                .fetch_optional(&self.read)
                .await?;
        let d = d.as_deref().map(parse_digest).transpose()?;
        if let Some(d) = &d {
            self.cache.fill_tag(generation, repo_id, tag, d);
        }
        Ok(d)
    }

    pub async fn get_manifest(
        &self,
        repo_id: i64,
        digest: &Digest,
    ) -> Result<Option<Arc<ManifestRow>>> {
        if let Some(row) = self.cache.manifest(repo_id, digest) {
            return Ok(Some(row));
        }
        let generation = self.cache.generation();
        let row = sqlx::query(
            "SELECT media_type, payload FROM manifests WHERE repo_id = $1 AND digest = $2",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let row = Arc::new(ManifestRow {
            digest: digest.clone(),
            media_type: r.get(0),
            payload: bytes::Bytes::from(r.get::<Vec<u8>, _>(1)),
        });
        self.cache.fill_manifest(generation, repo_id, row.clone());
        Ok(Some(row))
    }

    /// Deletes a manifest with everything that depends on it: its tags, its referrers, the
    /// cosign-style `sha256-<hex>.sig/.att/.sbom` tags of this repository, and the index
    /// children nothing else uses. Their blobs are queued for garbage collection. A manifest
    /// that an index of the repository still lists is refused (`Listed`).
    pub async fn delete_manifest(&self, repo_id: i64, digest: &Digest) -> Result<DeleteOutcome> {
        let d = digest.to_string();
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2")
                .bind(repo_id)
                .bind(&d)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Ok(DeleteOutcome::NotFound);
        }
        let parents: Vec<String> =
            sqlx::query_scalar("SELECT parent FROM manifest_children WHERE repo_id = $1 AND child = $2 ORDER BY parent")
                .bind(repo_id)
                .bind(&d)
                .fetch_all(&mut *tx)
                .await?;
        if !parents.is_empty() {
            return Ok(DeleteOutcome::Listed(parents));
        }
        let deleted = gc::delete_manifest_cascade(&mut tx, repo_id, &d, now_ms()).await?;
        self.cache.notify(&mut *tx, cache::NOTE_MANIFESTS).await?;
        tx.commit().await?;
        self.cache.clear();
        Ok(DeleteOutcome::Deleted(deleted))
    }

    /// Deletes a tag (the manifest stays). False if there was no such tag.
    pub async fn delete_tag(&self, repo_id: i64, tag: &str) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let digest: Option<String> = sqlx::query_scalar(
            "DELETE FROM tags WHERE repo_id = $1 AND name = $2 RETURNING digest",
        )
        .bind(repo_id)
        .bind(tag)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(d) = &digest {
            mark_untagged_if_orphan(&mut tx, repo_id, d, now).await?;
            gc::enqueue_manifest(&mut tx, repo_id, d, now).await?;
        }
        tx.commit().await?;
        self.cache.forget_tag(repo_id, tag);
        Ok(digest.is_some())
    }

    /// Deletes up to `limit` tags of the project's repositories last written before `before`
    /// (the age-based eviction of a pull-through cache), as tag deletes do: their manifests
    /// are queued for garbage collection. Returns how many went.
    pub async fn expire_project_tags(&self, project: &str, before: i64, limit: u32) -> Result<u64> {
        let old: Vec<(i64, String)> = sqlx::query_as(
            "SELECT t.repo_id, t.name FROM tags t
             JOIN repositories r ON r.id = t.repo_id
             JOIN projects p ON p.id = r.project_id
             WHERE p.name = $1 AND t.updated_at < $2 LIMIT $3",
        )
        .bind(project)
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        let mut n = 0;
        for (repo, tag) in old {
            if self.delete_tag(repo, &tag).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Tags of a repository after `last`, in bytewise order, at most `n`.
    pub async fn list_tags(&self, repo_id: i64, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        let rows = sqlx::query_scalar(
            "SELECT name FROM tags WHERE repo_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(repo_id)
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    /// Manifests of the repository whose `subject` is `subject`, ordered by digest, after
    /// `last`, optionally only those of one artifact type.
    pub async fn referrers(
        &self,
        repo_id: i64,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> Result<Vec<ReferrerRow>> {
        let rows = sqlx::query(
            "SELECT digest, media_type, artifact_type, size, annotations FROM manifests
             WHERE repo_id = $1 AND subject = $2 AND digest > $3
               AND ($4 IS NULL OR artifact_type = $4)
             ORDER BY digest LIMIT $5",
        )
        .bind(repo_id)
        .bind(subject.to_string())
        .bind(last.unwrap_or(""))
        .bind(artifact_type)
        .bind(n as i64)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(ReferrerRow {
                    digest: parse_digest(r.get::<&str, _>(0))?,
                    media_type: r.get(1),
                    artifact_type: r.get(2),
                    size: r.get::<i64, _>(3) as u64,
                    annotations: r.get(4),
                })
            })
            .collect()
    }
}

/// A manifest's reference must exist with the size its descriptor claims.
fn check_reference(
    digest: &Digest,
    claimed: u64,
    found: Option<i64>,
    missing: fn(Digest) -> PutManifestError,
) -> Result<(), PutManifestError> {
    match found {
        None => Err(missing(digest.clone())),
        Some(actual) if actual as u64 != claimed => Err(PutManifestError::SizeMismatch {
            digest: digest.clone(),
            claimed,
            actual: actual as u64,
        }),
        Some(_) => Ok(()),
    }
}

/// Marks a manifest as untagged (for the untagged-manifest policy) if no tag points at it.
async fn mark_untagged_if_orphan(
    tx: &mut Transaction<'static, Any>,
    repo_id: i64,
    digest: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE manifests SET untagged_at = $3
         WHERE repo_id = $1 AND digest = $2 AND untagged_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM tags WHERE repo_id = $1 AND digest = $2)",
    )
    .bind(repo_id)
    .bind(digest)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;

/// One `commit_blob` waiting for the group committer.
struct CommitRequest {
    upload_id: String,
    repo: RepoRef,
    digest: Digest,
    stored: Option<(String, u64)>,
    reply: tokio::sync::oneshot::Sender<Result<CommitOutcome>>,
}

/// Requests committed together at most.
const GROUP_COMMIT_MAX: usize = 64;

/// Commits queued `commit_blob` requests: each batch is whatever queued while the previous
/// one committed, in one transaction. If a batch fails, its requests are retried one by one
/// so each caller gets its own answer.
async fn group_committer(
    write: AnyPool,
    dialect: Dialect,
    mut rx: tokio::sync::mpsc::Receiver<CommitRequest>,
    repo_limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let limit = repo_limit.load(std::sync::atomic::Ordering::Relaxed);
        match commit_batch(&write, dialect, &batch, limit).await {
            Ok(outcomes) => {
                for (req, o) in batch.into_iter().zip(outcomes) {
                    let _ = req.reply.send(Ok(o));
                }
            }
            Err(_) if batch.len() > 1 => {
                for req in batch {
                    let r = commit_batch(&write, dialect, std::slice::from_ref(&req), limit)
                        .await
                        .map(|mut v| v.remove(0));
                    let _ = req.reply.send(r);
                }
            }
            Err(e) => {
                if let Some(req) = batch.pop() {
                    let _ = req.reply.send(Err(e));
                }
            }
        }
    }
}

async fn commit_batch(
    write: &AnyPool,
    dialect: Dialect,
    batch: &[CommitRequest],
    repo_limit: u64,
) -> Result<Vec<CommitOutcome>> {
    let now = now_ms();
    let mut tx = begin_on(write, dialect).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for req in batch {
        let repo_id = repos::resolve(&mut tx, &req.repo, repo_limit).await?;
        let d = req.digest.to_string();
        let existing: Option<String> =
            sqlx::query_scalar("SELECT generation FROM blobs WHERE digest = $1 AND state = 'live'")
                .bind(&d)
                .fetch_optional(&mut *tx)
                .await?;
        let outcome = match existing {
            Some(generation) => {
                sqlx::query(
                    "UPDATE blobs SET touched_at = $2 WHERE digest = $1 AND state = 'live'",
                )
                .bind(&d)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                CommitOutcome::AlreadyLive { generation }
            }
            None => match &req.stored {
                None => {
                    outcomes.push(CommitOutcome::NotLive);
                    continue;
                }
                Some((generation, size)) => {
                    sqlx::query(
                        "INSERT INTO blobs (digest, generation, size, state, created_at, touched_at)
                         VALUES ($1, $2, $3, 'live', $4, $4)",
                    )
                    .bind(&d)
                    .bind(generation)
                    .bind(*size as i64)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    CommitOutcome::Stored
                }
            },
        };
        sqlx::query(
            "INSERT INTO repo_blobs (repo_id, digest, linked_at) VALUES ($1, $2, $3)
             ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at",
        )
        .bind(repo_id)
        .bind(&d)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(&req.upload_id)
            .execute(&mut *tx)
            .await?;
        // A blob that no manifest ever references is collected after the grace period.
        gc::enqueue_blob(&mut tx, &d, now).await?;
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}
