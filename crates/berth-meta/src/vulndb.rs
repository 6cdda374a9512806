//! The vulnerability database: advisories indexed by the `(ecosystem, name)` of every package
//! they name, in versions.
//!
//! Where it lives: on PostgreSQL, in the registry's database, shared by every node. In the
//! embedded mode, in a SQLite file of its own beside the registry's (`vulndb.db` in the data
//! directory), because an import writes hundreds of megabytes and SQLite has one writer per
//! file: in the registry's file it would hold up every push for the length of the import;
//! beside it, pushes never wait on it, the registry's file (and its backups) stays small, and
//! the vulnerability data, which can always be imported again, can be deleted on its own.
//!
//! Versions: every row carries the version that added it (`added_in`) and the version that
//! removed it (`removed_in`, empty while current). An import writes version `published + 1`
//! in batches of small transactions, and one last transaction publishes it (with the list of
//! changed packages): a match reads `published` once and sees exactly the rows of that
//! version, before, during and after an import. An import that dies leaves rows of a version
//! that was never published; the next import removes them first. One import at a time holds
//! the lease in `vuln_state` (`import_lock`), renewed while it writes.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, AssertSqlSafe, ConnectOptions, Row};

use crate::{Dialect, MetaError, MetaStore, Result, begin_on, now_ms};

/// The schema, for both dialects (portable SQL; `CREATE ... IF NOT EXISTS` so that every node
/// may run it at start).
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS vuln_state (key TEXT PRIMARY KEY, value BIGINT NOT NULL, \
     holder TEXT, until_ms BIGINT)",
    "INSERT INTO vuln_state (key, value) VALUES ('schema', 1), ('published', 0), \
     ('import_lock', 0), ('checked_at', 0) ON CONFLICT (key) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS vuln_versions (version BIGINT PRIMARY KEY, \
     published_at BIGINT NOT NULL, source TEXT NOT NULL, sha256 TEXT NOT NULL, \
     feeds TEXT NOT NULL, added BIGINT NOT NULL, changed BIGINT NOT NULL, \
     withdrawn BIGINT NOT NULL, records BIGINT NOT NULL, packages BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS vuln_records (feed TEXT NOT NULL, key TEXT NOT NULL, \
     added_in BIGINT NOT NULL, removed_in BIGINT, hash TEXT NOT NULL, body TEXT NOT NULL, \
     info TEXT NOT NULL, \
     PRIMARY KEY (feed, key, added_in))",
    // Partial: nearly every row is current (removed_in empty); the index serves the few that
    // are not (pruning, cleaning up after a dead import, the list of changes), and a planner
    // cannot take it for `removed_in IS NULL`, which would visit every current row.
    "CREATE INDEX IF NOT EXISTS vuln_records_removed ON vuln_records (removed_in) \
     WHERE removed_in IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS vuln_packages (ecosystem TEXT NOT NULL, name TEXT NOT NULL, \
     feed TEXT NOT NULL, key TEXT NOT NULL, added_in BIGINT NOT NULL, removed_in BIGINT, \
     PRIMARY KEY (ecosystem, name, feed, key, added_in))",
    "CREATE INDEX IF NOT EXISTS vuln_packages_record ON vuln_packages (feed, key)",
    // A lookup's rows come from this index alone (no visit to the table for removed_in).
    "CREATE INDEX IF NOT EXISTS vuln_packages_lookup ON vuln_packages \
     (ecosystem, name, added_in, removed_in, feed, key)",
    "CREATE INDEX IF NOT EXISTS vuln_packages_added ON vuln_packages (added_in)",
    "CREATE INDEX IF NOT EXISTS vuln_packages_removed ON vuln_packages (removed_in) \
     WHERE removed_in IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS vuln_changes (version BIGINT NOT NULL, ecosystem TEXT NOT NULL, \
     name TEXT NOT NULL, PRIMARY KEY (version, ecosystem, name))",
];

/// How many versions' change lists are kept (the scan jobs re-match from them; a scan that
/// last matched an older version matches everything again).
const CHANGES_KEPT: i64 = 100;

/// Rows of one statement of a batched write (sqlx-sqlite looks each placeholder up by name in a
/// list, so a statement costs the square of its placeholders: 100 rows of 5 or 6 stay cheap).
const ROWS_PER_STATEMENT: usize = 100;

/// The vulnerability database's store.
#[derive(Clone)]
pub struct VulnStore {
    dialect: Dialect,
    read: AnyPool,
    write: AnyPool,
}

/// A published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VulnVersion {
    pub version: i64,
    /// Milliseconds since the epoch.
    pub published_at: i64,
    /// What was imported (a path, a URL, or several, comma-separated).
    pub source: String,
    /// SHA-256 of the imported file(s), hex (empty for directories).
    pub sha256: String,
    /// The feeds this import replaced.
    pub feeds: Vec<String>,
    pub added: i64,
    pub changed: i64,
    pub withdrawn: i64,
    /// Records in the database at this version.
    pub records: i64,
    /// Distinct packages whose records changed (see [`VulnStore::changes`]).
    pub packages: i64,
}

/// What an import is writing: the version it will publish, under the import lease.
#[derive(Debug)]
pub struct VulnLease {
    holder: String,
    pub base: i64,
    pub version: i64,
}

/// One record to write.
#[derive(Debug, Clone)]
pub struct VulnRecordWrite {
    pub feed: String,
    pub key: String,
    /// Hex digest of `body` and `info`: an unchanged record is not written again.
    pub hash: String,
    /// What matching reads, as JSON (ids, packages and ranges, ratings).
    pub body: String,
    /// What a report shows beside it, as JSON (summary, description, links): read only for
    /// the records that matched.
    pub info: String,
    /// The `(ecosystem, name)` of every package it names.
    pub packages: Vec<(String, String)>,
    /// Whether the feed has a current row for this key, which this one replaces (a new key
    /// skips the look for it).
    pub replaces: bool,
}

/// What a publish records beside the rows.
#[derive(Debug, Clone, Default)]
pub struct VulnImportInfo {
    pub source: String,
    pub sha256: String,
    pub feeds: Vec<String>,
    pub added: i64,
    pub changed: i64,
    pub withdrawn: i64,
}

/// A record as a lookup finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VulnRecord {
    pub feed: String,
    pub key: String,
    /// The advisory as JSON.
    pub body: String,
}

/// Records per feed at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VulnFeed {
    pub feed: String,
    pub records: i64,
}

/// A row is visible at version `$v` (the bind number is given).
fn visible(alias: &str, v: usize) -> String {
    format!(
        "{alias}.added_in <= ${v} AND ({alias}.removed_in IS NULL OR {alias}.removed_in > ${v})"
    )
}

impl MetaStore {
    /// The vulnerability database of this registry: on PostgreSQL, tables in this database;
    /// on SQLite, the file at `sqlite_path` (created if needed).
    pub async fn vuln_store(&self, sqlite_path: &Path) -> Result<VulnStore> {
        let store = match self.dialect {
            Dialect::Postgres => VulnStore {
                dialect: Dialect::Postgres,
                read: self.read.clone(),
                write: self.write.clone(),
            },
            Dialect::Sqlite => VulnStore::open_sqlite(sqlite_path).await?,
        };
        store.ensure_schema().await?;
        Ok(store)
    }
}

impl VulnStore {
    async fn open_sqlite(path: &Path) -> Result<VulnStore> {
        let url = |read_only: bool| {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(!read_only)
                .read_only(read_only)
                .to_url_lossy()
        };
        // NORMAL, not FULL: a crash may lose the last transactions of an import, which is
        // never published then (the next import starts over); a published version is
        // durable once the WAL is checkpointed, and can always be imported again.
        let pragmas = |write: bool| -> &'static str {
            if write {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA busy_timeout = 10000; PRAGMA cache_size = -8192;"
            } else {
                // Matches read thousands of records at random: through a map of the file
                // (no read call per page; the pages are the OS's cache, not this process's).
                "PRAGMA busy_timeout = 10000; PRAGMA cache_size = -2048; \
                 PRAGMA mmap_size = 1073741824;"
            }
        };
        let pool = |write: bool, max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(if write { 1 } else { 0 })
                .idle_timeout(Duration::from_secs(60))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        sqlx::raw_sql(pragmas(write)).execute(conn).await?;
                        Ok(())
                    })
                })
        };
        let write = pool(true, 1)
            .connect_with(AnyConnectOptions::from_url(&url(false))?)
            .await?;
        // The schema before the readers open the file read-only.
        let store = VulnStore {
            dialect: Dialect::Sqlite,
            read: write.clone(),
            write: write.clone(),
        };
        store.ensure_schema().await?;
        let read = pool(false, 4)
            .connect_with(AnyConnectOptions::from_url(&url(true))?)
            .await?;
        Ok(VulnStore {
            dialect: Dialect::Sqlite,
            read,
            write,
        })
    }

    async fn ensure_schema(&self) -> Result<()> {
        let mut tx = begin_on(&self.write, self.dialect).await?;
        if self.dialect == Dialect::Postgres {
            // Two nodes starting at once must not both create the tables.
            sqlx::query("SELECT pg_advisory_xact_lock(7718001)")
                .execute(&mut *tx)
                .await?;
        }
        for sql in SCHEMA {
            sqlx::query(AssertSqlSafe(*sql)).execute(&mut *tx).await?;
        }
        let schema: i64 = sqlx::query_scalar("SELECT value FROM vuln_state WHERE key = 'schema'")
            .fetch_one(&mut *tx)
            .await?;
        if schema != 1 {
            return Err(MetaError::Incompatible(format!(
                "the vulnerability database has schema {schema}; this build knows 1: upgrade \
                 this node, or delete the vulnerability database and import it again"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The published version (0: nothing imported yet).
    pub async fn published_version(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT value FROM vuln_state WHERE key = 'published'")
                .fetch_one(&self.read)
                .await?,
        )
    }

    /// The published version's row, if anything was imported.
    pub async fn published(&self) -> Result<Option<VulnVersion>> {
        let v = self.published_version().await?;
        Ok(self.versions(1).await?.into_iter().find(|r| r.version == v))
    }

    /// The newest `limit` versions, newest first.
    pub async fn versions(&self, limit: i64) -> Result<Vec<VulnVersion>> {
        let rows = sqlx::query(
            "SELECT version, published_at, source, sha256, feeds, added, changed, withdrawn, \
             records, packages FROM vuln_versions ORDER BY version DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let feeds: String = r.try_get("feeds")?;
                Ok(VulnVersion {
                    version: r.try_get("version")?,
                    published_at: r.try_get("published_at")?,
                    source: r.try_get("source")?,
                    sha256: r.try_get("sha256")?,
                    feeds: serde_json::from_str(&feeds)
                        .map_err(|e| MetaError::Corrupt(format!("vuln_versions.feeds: {e}")))?,
                    added: r.try_get("added")?,
                    changed: r.try_get("changed")?,
                    withdrawn: r.try_get("withdrawn")?,
                    records: r.try_get("records")?,
                    packages: r.try_get("packages")?,
                })
            })
            .collect()
    }

    /// When an import last ran to its end, whether it changed anything or not (ms; 0: never).
    pub async fn checked_at(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT value FROM vuln_state WHERE key = 'checked_at'")
                .fetch_one(&self.read)
                .await?,
        )
    }

    /// Takes the import lease for `lease` (None: another import holds it), and removes what
    /// an import that died left behind.
    pub async fn begin_import(&self, holder: &str, lease: Duration) -> Result<Option<VulnLease>> {
        let now = now_ms();
        let mut tx = begin_on(&self.write, self.dialect).await?;
        let taken = sqlx::query(
            "UPDATE vuln_state SET holder = $1, until_ms = $2 WHERE key = 'import_lock' \
             AND (holder IS NULL OR until_ms < $3)",
        )
        .bind(holder)
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 0 {
            return Ok(None);
        }
        let base: i64 = sqlx::query_scalar("SELECT value FROM vuln_state WHERE key = 'published'")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        // Rows of a version that was never published: batches, so that no transaction is
        // long.
        for sql in [
            "DELETE FROM vuln_records WHERE added_in > $1",
            "DELETE FROM vuln_packages WHERE added_in > $1",
            "UPDATE vuln_records SET removed_in = NULL WHERE removed_in > $1",
            "UPDATE vuln_packages SET removed_in = NULL WHERE removed_in > $1",
            "DELETE FROM vuln_changes WHERE version > $1",
        ] {
            let mut tx = begin_on(&self.write, self.dialect).await?;
            sqlx::query(sql).bind(base).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Ok(Some(VulnLease {
            holder: holder.to_owned(),
            base,
            version: base + 1,
        }))
    }

    /// Extends the lease; an error when it was lost (another import took over after it
    /// expired), and the import must stop.
    pub async fn renew(&self, lease: &VulnLease, by: Duration) -> Result<()> {
        let mut tx = begin_on(&self.write, self.dialect).await?;
        let n = sqlx::query(
            "UPDATE vuln_state SET until_ms = $1 WHERE key = 'import_lock' AND holder = $2",
        )
        .bind(now_ms() + by.as_millis() as i64)
        .bind(&lease.holder)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if n == 0 {
            return Err(MetaError::Unreachable(
                "the import lease was lost to another import".into(),
            ));
        }
        Ok(())
    }

    /// Gives the lease up without publishing (the rows written are removed by the next
    /// import).
    pub async fn abandon(&self, lease: VulnLease) -> Result<()> {
        let mut tx = begin_on(&self.write, self.dialect).await?;
        sqlx::query(
            "UPDATE vuln_state SET holder = NULL, until_ms = NULL \
             WHERE key = 'import_lock' AND holder = $1",
        )
        .bind(&lease.holder)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The current records of a feed: key → hash.
    pub async fn live_hashes(&self, feed: &str) -> Result<HashMap<String, String>> {
        let rows = sqlx::query(
            "SELECT key, hash FROM vuln_records WHERE feed = $1 AND removed_in IS NULL",
        )
        .bind(feed)
        .fetch_all(&self.write)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("hash")?)))
            .collect()
    }

    /// Writes records of the lease's version in one transaction; a record that has a current
    /// row (same feed and key) replaces it.
    pub async fn write_records(
        &self,
        lease: &VulnLease,
        records: &[VulnRecordWrite],
    ) -> Result<()> {
        let mut tx = begin_on(&self.write, self.dialect).await?;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            retire(
                &mut tx,
                lease.version,
                chunk
                    .iter()
                    .filter(|r| r.replaces)
                    .map(|r| (&*r.feed, &*r.key)),
            )
            .await?;
            let sql = format!(
                "INSERT INTO vuln_records (feed, key, added_in, hash, body, info) VALUES {}",
                placeholders(chunk.len(), 6)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(&r.feed)
                    .bind(&r.key)
                    .bind(lease.version)
                    .bind(&r.hash)
                    .bind(&r.body)
                    .bind(&r.info);
            }
            q.execute(&mut *tx).await?;
            let packages: Vec<(&VulnRecordWrite, &(String, String))> = chunk
                .iter()
                .flat_map(|r| r.packages.iter().map(move |p| (r, p)))
                .collect();
            for part in packages.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO vuln_packages (ecosystem, name, feed, key, added_in) VALUES {} \
                     ON CONFLICT DO NOTHING",
                    placeholders(part.len(), 5)
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (r, (ecosystem, name)) in part {
                    q = q
                        .bind(ecosystem)
                        .bind(name)
                        .bind(&r.feed)
                        .bind(&r.key)
                        .bind(lease.version);
                }
                q.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Withdraws records of a feed at the lease's version.
    pub async fn withdraw(&self, lease: &VulnLease, feed: &str, keys: &[String]) -> Result<()> {
        let mut tx = begin_on(&self.write, self.dialect).await?;
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            retire(
                &mut tx,
                lease.version,
                chunk.iter().map(|k| (feed, k.as_str())),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Publishes the lease's version: records what changed, moves `published`, gives the
    /// lease up, then drops rows no version from the previous one on can see.
    pub async fn publish(&self, lease: VulnLease, info: &VulnImportInfo) -> Result<VulnVersion> {
        let v = lease.version;
        let mut tx = begin_on(&self.write, self.dialect).await?;
        let held = sqlx::query(
            "UPDATE vuln_state SET holder = NULL, until_ms = NULL \
             WHERE key = 'import_lock' AND holder = $1",
        )
        .bind(&lease.holder)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if held == 0 {
            return Err(MetaError::Unreachable(
                "the import lease was lost to another import; nothing was published".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO vuln_changes (version, ecosystem, name) SELECT DISTINCT $1, ecosystem, \
             name FROM vuln_packages WHERE added_in = $1 OR removed_in = $1",
        )
        .bind(v)
        .execute(&mut *tx)
        .await?;
        let packages: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM vuln_changes WHERE version = $1")
                .bind(v)
                .fetch_one(&mut *tx)
                .await?;
        let records: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM vuln_records r WHERE {}",
            visible("r", 1)
        )))
        .bind(v)
        .fetch_one(&mut *tx)
        .await?;
        let now = now_ms();
        let feeds = serde_json::to_string(&info.feeds)
            .map_err(|e| MetaError::Corrupt(format!("feeds: {e}")))?;
        sqlx::query(
            "INSERT INTO vuln_versions (version, published_at, source, sha256, feeds, added, \
             changed, withdrawn, records, packages) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(v)
        .bind(now)
        .bind(&info.source)
        .bind(&info.sha256)
        .bind(&feeds)
        .bind(info.added)
        .bind(info.changed)
        .bind(info.withdrawn)
        .bind(records)
        .bind(packages)
        .execute(&mut *tx)
        .await?;
        let moved =
            sqlx::query("UPDATE vuln_state SET value = $1 WHERE key = 'published' AND value = $2")
                .bind(v)
                .bind(lease.base)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if moved == 0 {
            return Err(MetaError::Corrupt(
                "vuln_state.published moved during an import that held the lease".into(),
            ));
        }
        sqlx::query("UPDATE vuln_state SET value = $1 WHERE key = 'checked_at'")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.prune(v).await?;
        Ok(VulnVersion {
            version: v,
            published_at: now,
            source: info.source.clone(),
            sha256: info.sha256.clone(),
            feeds: info.feeds.clone(),
            added: info.added,
            changed: info.changed,
            withdrawn: info.withdrawn,
            records,
            packages,
        })
    }

    /// Ends an import that changed nothing: the lease is given up and the check is recorded;
    /// no version is published.
    pub async fn unchanged(&self, lease: VulnLease) -> Result<()> {
        let mut tx = begin_on(&self.write, self.dialect).await?;
        sqlx::query(
            "UPDATE vuln_state SET holder = NULL, until_ms = NULL \
             WHERE key = 'import_lock' AND holder = $1",
        )
        .bind(&lease.holder)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE vuln_state SET value = $1 WHERE key = 'checked_at'")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops rows that neither version `v` nor `v - 1` can see (a match that read `v - 1`
    /// just before the publish still finds its rows), and change lists past
    /// [`CHANGES_KEPT`].
    async fn prune(&self, v: i64) -> Result<()> {
        for sql in [
            "DELETE FROM vuln_records WHERE removed_in IS NOT NULL AND removed_in < $1",
            "DELETE FROM vuln_packages WHERE removed_in IS NOT NULL AND removed_in < $1",
        ] {
            let mut tx = begin_on(&self.write, self.dialect).await?;
            sqlx::query(sql).bind(v).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        let mut tx = begin_on(&self.write, self.dialect).await?;
        sqlx::query("DELETE FROM vuln_changes WHERE version <= $1")
            .bind(v - CHANGES_KEPT)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The advisories (JSON) that name any of `names` in `ecosystem`, at version `v`: the name
    /// and the record (an advisory naming two of them comes once per name).
    pub async fn lookup(
        &self,
        v: i64,
        ecosystem: &str,
        names: &[String],
    ) -> Result<Vec<(String, VulnRecord)>> {
        let mut out = Vec::new();
        for chunk in names.chunks(ROWS_PER_STATEMENT) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT p.name, r.feed, r.key, r.body FROM vuln_packages p JOIN vuln_records r \
                 ON r.feed = p.feed AND r.key = p.key AND r.added_in = p.added_in \
                 WHERE p.ecosystem = $2 AND p.name IN ({list}) AND {}",
                visible("p", 1)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(v).bind(ecosystem);
            for n in chunk {
                q = q.bind(n);
            }
            for row in q.fetch_all(&self.read).await? {
                out.push((
                    row.try_get("name")?,
                    VulnRecord {
                        feed: row.try_get("feed")?,
                        key: row.try_get("key")?,
                        body: row.try_get("body")?,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// The `info` (summary, description, links; JSON) of records, by `(feed, key)`, at
    /// version `v`.
    pub async fn info(
        &self,
        v: i64,
        records: &[(String, String)],
    ) -> Result<Vec<((String, String), String)>> {
        let mut out = Vec::new();
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let cond = (0..chunk.len())
                .map(|i| format!("(r.feed = ${} AND r.key = ${})", 2 * i + 2, 2 * i + 3))
                .collect::<Vec<_>>()
                .join(" OR ");
            let sql = format!(
                "SELECT r.feed, r.key, r.info FROM vuln_records r WHERE ({cond}) AND {}",
                visible("r", 1)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(v);
            for (feed, key) in chunk {
                q = q.bind(feed).bind(key);
            }
            for row in q.fetch_all(&self.read).await? {
                out.push((
                    (row.try_get("feed")?, row.try_get("key")?),
                    row.try_get("info")?,
                ));
            }
        }
        Ok(out)
    }

    /// Whether version `v` has any record for `ecosystem` (a release with none is "not
    /// covered", not "no vulnerabilities").
    pub async fn covers(&self, v: i64, ecosystem: &str) -> Result<bool> {
        let sql = format!(
            "SELECT 1 FROM vuln_packages p WHERE p.ecosystem = $2 AND {} LIMIT 1",
            visible("p", 1)
        );
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(v)
            .bind(ecosystem)
            .fetch_optional(&self.read)
            .await?
            .is_some())
    }

    /// The `(ecosystem, name)` pairs whose records version `v` added, changed or withdrew.
    pub async fn changes(&self, v: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT ecosystem, name FROM vuln_changes WHERE version = $1 \
             ORDER BY ecosystem, name",
        )
        .bind(v)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("ecosystem")?, r.try_get("name")?)))
            .collect()
    }

    /// Records per feed at version `v`.
    pub async fn feeds(&self, v: i64) -> Result<Vec<VulnFeed>> {
        let sql = format!(
            "SELECT r.feed, COUNT(*) AS n FROM vuln_records r WHERE {} GROUP BY r.feed \
             ORDER BY r.feed",
            visible("r", 1)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(v)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(VulnFeed {
                    feed: r.try_get("feed")?,
                    records: r.try_get("n")?,
                })
            })
            .collect()
    }

    /// The distinct ecosystems with records at version `v`.
    pub async fn ecosystems(&self, v: i64) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT DISTINCT p.ecosystem FROM vuln_packages p WHERE {} ORDER BY p.ecosystem",
            visible("p", 1)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(v)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

/// `($1, $2, ...), ($k+1, ...)`: `rows` tuples of `width` placeholders.
fn placeholders(rows: usize, width: usize) -> String {
    let mut sql = String::new();
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * width + col + 1));
        }
        sql.push(')');
    }
    sql
}

/// Marks the current rows of `(feed, key)` pairs removed at version `v`.
async fn retire<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    v: i64,
    keys: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    let keys: Vec<(&str, &str)> = keys.collect();
    if keys.is_empty() {
        return Ok(());
    }
    for table in ["vuln_records", "vuln_packages"] {
        let cond = (0..keys.len())
            .map(|i| format!("(feed = ${} AND key = ${})", 2 * i + 2, 2 * i + 3))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql =
            format!("UPDATE {table} SET removed_in = $1 WHERE removed_in IS NULL AND ({cond})");
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(v);
        for (feed, key) in &keys {
            q = q.bind(*feed).bind(*key);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
