//! MetaStore: everything but blob bytes, in SQLite (the embedded mode) or PostgreSQL (scale
//! out). All SQL of the registry lives in this crate, one module per aggregate:
//! `repositories.rs`, `blobs.rs` (links, touches, the group commit of uploads), `uploads.rs`,
//! `manifests.rs` (push, read, the delete cascade, referrers), `tags.rs`, `auth.rs` (users,
//! projects, members, robots, token keys, the audit log), `jobs.rs`, `gc.rs` (the review
//! queue and sweeps); `schema.rs` runs the migrations, `cache.rs` is the read cache.
//!
//! Queries are written once for both dialects. SQLite runs in WAL mode with
//! `synchronous=FULL`; writes go through a pool of one connection and every read-then-write
//! transaction starts with `BEGIN IMMEDIATE`, so a decision taken on a read cannot be
//! invalidated before its write commits. PostgreSQL takes row locks where a decision depends
//! on a read (see `begin_on`). Tests run on both dialects in one `cargo test` (`tests.rs`).

mod auth;
mod blobs;
mod cache;
mod events;
mod gc;
mod jobs;
mod manifests;
mod repositories;
mod schema;
mod snapshot;
mod tag_reads;
mod tags;
mod uploads;
mod vulndb;

pub use auth::{
    AuditEvent, AuditFilter, CreateError, MemberRow, ProjectRow, RepoSummary, RobotRow, UserRow,
};
pub use blobs::{BlobRow, CommitOutcome};
pub use events::{Event, EventKind, EventPosition};
pub use gc::{BlobReview, GcPolicy, ManifestReview, ReviewItem, StorageUsage, Sweep};
pub use jobs::{Job, JobState};
pub use manifests::{
    ArtifactRow, DeleteOutcome, ManifestRow, NewManifest, PutManifestError, ReferrerRow,
};
pub use repositories::{ProjectDeletion, RepoDeletion, RepoRef};
pub use tags::TagRow;
pub use uploads::UploadRow;
pub use vulndb::{
    VulnFeed, VulnImportInfo, VulnLease, VulnRecord, VulnRecordWrite, VulnStore, VulnVersion,
};

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::Digest;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, AssertSqlSafe, ConnectOptions, Transaction};

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
    /// A write named a repository by id that was deleted meanwhile.
    #[error("repository {0} was deleted meanwhile")]
    RepositoryGone(i64),
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

/// A statement that locks the rows it reads on PostgreSQL (`FOR SHARE`, `FOR UPDATE`, `FOR
/// UPDATE SKIP LOCKED`): the same statement without the clause on SQLite, whose
/// `BEGIN IMMEDIATE` holds the database's one write lock already. Both arguments are literals.
macro_rules! locking {
    ($dialect:expr, $sql:literal, $lock:literal) => {
        $dialect.pick($sql, concat!($sql, " ", $lock))
    };
}
pub(crate) use locking;

/// The dialect of a connection (for code that gets a connection, not the store).
pub(crate) fn dialect_of(conn: &sqlx::AnyConnection) -> Dialect {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        Dialect::Sqlite
    } else {
        Dialect::Postgres
    }
}

/// How many times a write transaction that PostgreSQL aborted as a deadlock or serialization
/// failure is run again before the failure is returned (answered 503, retryable).
pub(crate) const WRITE_ATTEMPTS: usize = 3;

/// Runs a write transaction (`attempt`) again when PostgreSQL aborted it as a deadlock or a
/// serialization failure, up to [`WRITE_ATTEMPTS`] times in all.
pub(crate) async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Err(e) if e.is_retryable_conflict() && n < WRITE_ATTEMPTS => n += 1,
            other => return other,
        }
    }
}

impl MetaError {
    /// A transaction PostgreSQL aborted to break a deadlock (40P01) or a serialization failure
    /// (40001): running it again is safe and will most likely succeed.
    pub fn is_retryable_conflict(&self) -> bool {
        match self {
            MetaError::Db(sqlx::Error::Database(d)) => {
                matches!(d.code().as_deref(), Some("40P01") | Some("40001"))
            }
            _ => false,
        }
    }
}

/// A write transaction held open by a test ([`MetaStore::hold_repository_for_tests`]); it
/// rolls back when dropped.
#[cfg(any(test, feature = "test-util"))]
pub struct HeldWrite(#[allow(dead_code)] Transaction<'static, Any>);

#[derive(Clone)]
pub struct MetaStore {
    dialect: Dialect,
    read: AnyPool,
    write: AnyPool,
    cache: std::sync::Arc<cache::ReadCache>,
    auth_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    committer: tokio::sync::mpsc::Sender<blobs::CommitRequest>,
    /// `limits.repositories_per_project` (0: none).
    repo_limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// PostgreSQL: tag lookups in rounds (tags are not cached there).
    tag_reads: Option<std::sync::Arc<tag_reads::TagReads>>,
}

fn parse_digest(s: &str) -> Result<Digest> {
    Digest::from_str(s).map_err(|e| MetaError::Corrupt(format!("{s:?}: {e}")))
}

/// Begins a transaction that may read and then write.
///
/// SQLite: `BEGIN IMMEDIATE` takes the database's one write lock at once, so a decision made
/// on a read cannot be invalidated by another writer before this transaction commits.
///
/// PostgreSQL: READ COMMITTED, and no lock is taken here: writes to different repositories
/// never wait on each other. A statement whose decision depends on rows it read locks those
/// rows ([`locking!`]): `FOR SHARE` on what a write will reference (the blobs and child
/// manifests of a manifest push, a repository a write goes into), `FOR UPDATE` on what will be
/// deleted or changed (a manifest or blob under review, a tag being moved, a repository or
/// project being deleted), and the check then runs as a new statement, which sees everything
/// committed before the lock was granted. Queue claims use `FOR UPDATE SKIP LOCKED`, upload
/// offsets move by compare-and-set, and reads take no lock. The one wider lock is a
/// transaction-scoped advisory lock per job kind, so that two nodes queueing a GC at once
/// queue one (see `enqueue_job`). Locks are taken in digest order where a transaction takes
/// several, and a transaction PostgreSQL still aborts as a deadlock is run again
/// ([`WRITE_ATTEMPTS`]).
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
        Dialect::Postgres => pool.begin().await,
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
        // A transaction left open by a node that hangs must not hold its row locks forever.
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
        // Writes run side by side (row locks), reads are most of the traffic: a bit over a
        // third of the connections write, the rest read.
        let write_max = (opts.max_connections * 3 / 8).clamp(1, 16);
        let read_max = opts.max_connections.saturating_sub(write_max).max(1);
        // Tag lookups run in rounds on connections of their own (`tag_reads`), taken out of
        // the read connections: two when there are enough, else one.
        let tag_rounds = if read_max >= 6 { 2 } else { 1 };
        let read_max = read_max.saturating_sub(tag_rounds).max(1);
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
        events::rebase_after_restore(&write).await?;
        let read = pool(read_max).connect_with(connect.clone()).await?;
        let schema: Option<String> = sqlx::query_scalar("SELECT CAST(current_schema() AS TEXT)")
            .fetch_one(&read)
            .await?;
        let channel = cache::channel_for(schema.as_deref().unwrap_or("public"));
        let cache = std::sync::Arc::new(cache::ReadCache::shared(channel));
        let auth_version = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        cache::listen_for_other_nodes(
            cache.clone(),
            auth_version.clone(),
            listen_url,
            opts.connect_timeout,
        )
        .await;
        let mut store = Self::assemble(Dialect::Postgres, read, write, cache, auth_version);
        let connect = tag_reads::Connect {
            options: connect,
            settings,
            timeout: opts.connect_timeout,
        };
        store.tag_reads = Some(std::sync::Arc::new(tag_reads::TagReads::start(
            connect,
            tag_rounds as usize,
        )));
        Ok(store)
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

    /// Test hook: whether `digest` waits in the garbage collector's review queue.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn blob_review_queued_for_tests(&self, digest: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i64>(
                "SELECT 1 FROM gc_review WHERE kind = 'blob' AND key = $1",
            )
            .bind(digest)
            .fetch_optional(&self.read)
            .await?
            .is_some(),
        )
    }

    /// Test hook: a write transaction that holds repository `name` as its deletion does
    /// (its row, its tags and its manifests locked for update) until the returned guard is
    /// dropped, for tests that show what waits for it and what does not.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn hold_repository_for_tests(
        &self,
        name: &berth_core::RepoName,
    ) -> Result<HeldWrite> {
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(locking!(
            self.dialect,
            "SELECT id FROM repositories WHERE name = $1",
            "FOR UPDATE"
        ))
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await?;
        for sql in [
            locking!(
                self.dialect,
                "SELECT name FROM tags WHERE repo_id = $1",
                "FOR UPDATE"
            ),
            locking!(
                self.dialect,
                "SELECT digest FROM manifests WHERE repo_id = $1",
                "FOR UPDATE"
            ),
        ] {
            sqlx::query(sql).bind(id).fetch_all(&mut *tx).await?;
        }
        Ok(HeldWrite(tx))
    }

    fn assemble(
        dialect: Dialect,
        read: AnyPool,
        write: AnyPool,
        cache: std::sync::Arc<cache::ReadCache>,
        auth_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> MetaStore {
        let (committer, queue) = tokio::sync::mpsc::channel(blobs::GROUP_COMMIT_MAX * 4);
        let repo_limit = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(blobs::group_committer(
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
            tag_reads: None,
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
}

#[cfg(test)]
mod tests;
