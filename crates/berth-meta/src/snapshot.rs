//! Copies of the metadata, table by table, from one MetaStore into another of either dialect.
//!
//! - [`MetaStore::gc_snapshot`]: a private copy of what garbage collection reads and writes, for
//!   dry runs: the real run's code runs on the copy, so a dry run reports exactly what a run
//!   would do (cascades across passes included) and never holds the database's write lock. The
//!   copy is a SQLite file, whatever the dialect of the store it copies; manifest payloads and
//!   upload hash states are not copied (GC never reads them). Reading the source takes no lock
//!   that blocks a writer.
//! - [`MetaStore::migrate_metadata_into`] (`berth migrate`): every row of every table, with the
//!   same ids, in ONE transaction of the target, so the target's metadata is all or nothing. The
//!   tables, their columns and the foreign keys that order them are read from the two schemas
//!   (`sqlite_master` and `PRAGMA table_info`; `information_schema` and `pg_constraint`), so a
//!   table a later migration adds is copied without a change here. The tables that must not be
//!   copied are named in [`NOT_MIGRATED`], each with its reason. Values are read and bound as the
//!   *target* column's type (SQLite's INTEGER 0/1 becomes a PostgreSQL boolean where the target
//!   has one, BLOB becomes BYTEA), and PostgreSQL's identity sequences are moved past the copied
//!   ids, so the target's next row gets the next id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use futures_util::TryStreamExt;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::{Dialect, MetaError, MetaStore, Result};

/// How a column's values are read from the source and bound for the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Real,
    Bool,
    Text,
    Bytes,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    fn read(row: &AnyRow, i: usize, kind: Kind) -> Result<Value> {
        Ok(match kind {
            Kind::Int => Value::Int(row.try_get(i)?),
            Kind::Real => Value::Real(row.try_get(i)?),
            // SQLite has no booleans: they are 0 and 1 in an INTEGER column.
            Kind::Bool => Value::Bool(match row.try_get::<Option<bool>, _>(i) {
                Ok(b) => b,
                Err(_) => row.try_get::<Option<i64>, _>(i)?.map(|n| n != 0),
            }),
            Kind::Text => Value::Text(row.try_get(i)?),
            Kind::Bytes => Value::Bytes(row.try_get(i)?),
        })
    }

    /// Roughly the memory the value holds, to bound a batch.
    fn weight(&self) -> usize {
        match self {
            Value::Text(Some(s)) => s.len(),
            Value::Bytes(Some(b)) => b.len(),
            _ => 8,
        }
    }
}

/// A column copied: its name, how its values travel, and on PostgreSQL the type a parameter is
/// cast to where binding text alone would not do (`jsonb`, `uuid`, ...).
#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
    cast: Option<String>,
}

/// A table to copy: the columns copied, and constants for target columns that are not.
#[derive(Debug, Clone)]
struct TableSpec {
    name: String,
    columns: Vec<Column>,
    constants: Vec<(String, String)>,
}

/// An identifier, quoted for both dialects.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl TableSpec {
    fn select_sql(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| ident(&c.name)).collect();
        format!("SELECT {} FROM {}", cols.join(", "), ident(&self.name))
    }

    fn read_row(&self, row: &AnyRow) -> Result<Vec<Value>> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| Value::read(row, i, c.kind))
            .collect()
    }
}

/// Rows per INSERT statement, fewer for wide tables: both dialects' parameter limits
/// (SQLite 32,766, PostgreSQL 65,535) stay far away.
const ROWS_PER_INSERT: usize = 200;
const PARAMS_PER_INSERT: usize = 10_000;

/// Inserts `rows` into `table` within `tx`, many rows per statement.
async fn insert_rows(
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
    table: &TableSpec,
    rows: &[Vec<Value>],
) -> Result<()> {
    let n = table.columns.len();
    let per_insert = ROWS_PER_INSERT.min(PARAMS_PER_INSERT / n.max(1)).max(1);
    let mut names: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    names.extend(table.constants.iter().map(|c| ident(&c.0)));
    for chunk in rows.chunks(per_insert) {
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            ident(&table.name),
            names.join(", ")
        );
        for r in 0..chunk.len() {
            if r > 0 {
                sql.push(',');
            }
            let mut params: Vec<String> = table
                .columns
                .iter()
                .enumerate()
                .map(|(k, c)| match (&c.cast, dialect) {
                    (Some(t), Dialect::Postgres) => format!("CAST(${} AS {t})", r * n + k + 1),
                    _ => format!("${}", r * n + k + 1),
                })
                .collect();
            params.extend(table.constants.iter().map(|c| c.1.clone()));
            sql.push_str(&format!("({})", params.join(",")));
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            for v in row {
                q = match v {
                    Value::Int(i) => q.bind(*i),
                    Value::Real(x) => q.bind(*x),
                    Value::Bool(b) => q.bind(*b),
                    Value::Text(t) => q.bind(t.clone()),
                    Value::Bytes(b) => q.bind(b.clone()),
                };
            }
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

// ---- the GC dry-run snapshot ----

/// The columns of [`SNAPSHOT_TABLES`].
#[derive(Clone, Copy)]
enum Col {
    Int,
    Text,
}

/// A table of the snapshot: its name, the columns copied, and constants for the columns not
/// copied.
struct SnapshotTable {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    constants: &'static [(&'static str, &'static str)],
}

impl SnapshotTable {
    fn spec(&self) -> TableSpec {
        TableSpec {
            name: self.name.to_owned(),
            columns: self
                .columns
                .iter()
                .map(|(name, col)| Column {
                    name: (*name).to_owned(),
                    kind: match col {
                        Col::Int => Kind::Int,
                        Col::Text => Kind::Text,
                    },
                    cast: None,
                })
                .collect(),
            constants: self
                .constants
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        }
    }
}

use Col::{Int, Text};

/// In an order that satisfies the foreign keys.
const SNAPSHOT_TABLES: &[SnapshotTable] = &[
    SnapshotTable {
        name: "projects",
        columns: &[("id", Int), ("name", Text), ("created_at", Int)],
        constants: &[],
    },
    SnapshotTable {
        name: "repositories",
        columns: &[
            ("id", Int),
            ("project_id", Int),
            ("name", Text),
            ("created_at", Int),
        ],
        constants: &[],
    },
    SnapshotTable {
        name: "blobs",
        columns: &[
            ("digest", Text),
            ("generation", Text),
            ("size", Int),
            ("state", Text),
            ("lease_until", Int),
            ("created_at", Int),
            ("touched_at", Int),
        ],
        constants: &[],
    },
    SnapshotTable {
        name: "repo_blobs",
        columns: &[("repo_id", Int), ("digest", Text), ("linked_at", Int)],
        constants: &[],
    },
    SnapshotTable {
        name: "uploads",
        columns: &[
            ("id", Text),
            ("repo_id", Int),
            ("offset", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        constants: &[("hash_state", "X''")],
    },
    SnapshotTable {
        name: "manifests",
        columns: &[
            ("repo_id", Int),
            ("digest", Text),
            ("media_type", Text),
            ("artifact_type", Text),
            ("size", Int),
            ("subject", Text),
            ("config_digest", Text),
            ("created_at", Int),
            ("untagged_at", Int),
            ("pushed_by", Text),
        ],
        constants: &[("payload", "X''")],
    },
    SnapshotTable {
        name: "manifest_refs",
        columns: &[("repo_id", Int), ("manifest", Text), ("blob", Text)],
        constants: &[],
    },
    SnapshotTable {
        name: "manifest_children",
        columns: &[("repo_id", Int), ("parent", Text), ("child", Text)],
        constants: &[],
    },
    SnapshotTable {
        name: "tags",
        columns: &[
            ("repo_id", Int),
            ("name", Text),
            ("digest", Text),
            ("updated_at", Int),
        ],
        constants: &[],
    },
    SnapshotTable {
        name: "gc_review",
        columns: &[("kind", Text), ("key", Text), ("review_after", Int)],
        constants: &[],
    },
];

/// Rows per transaction of the snapshot.
const SNAPSHOT_ROWS_PER_TX: usize = 10_000;

impl MetaStore {
    /// Copies what garbage collection works on into a new SQLite store at `path` (which must
    /// not exist) and returns it.
    pub async fn gc_snapshot(&self, path: &Path) -> Result<MetaStore> {
        let copy = MetaStore::open_sqlite(path).await?;
        for table in SNAPSHOT_TABLES.iter().map(SnapshotTable::spec) {
            let mut rows = sqlx::query(AssertSqlSafe(table.select_sql())).fetch(&self.read);
            let mut pending: Vec<Vec<Value>> = Vec::with_capacity(SNAPSHOT_ROWS_PER_TX);
            while let Some(row) = rows.try_next().await? {
                pending.push(table.read_row(&row)?);
                if pending.len() >= SNAPSHOT_ROWS_PER_TX {
                    copy.insert_in_own_tx(&table, &pending).await?;
                    pending.clear();
                }
            }
            copy.insert_in_own_tx(&table, &pending).await?;
        }
        Ok(copy)
    }

    async fn insert_in_own_tx(&self, table: &TableSpec, rows: &[Vec<Value>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        insert_rows(&mut tx, self.dialect, table, rows).await?;
        tx.commit().await?;
        Ok(())
    }
}

// ---- berth migrate ----

/// Tables `berth migrate` does not copy, each with the reason its report gives.
pub const NOT_MIGRATED: &[(&str, &str)] = &[
    (
        "uploads",
        "uploads in progress are dropped: their staged bytes are not copied, clients push again",
    ),
    ("schema_info", "the target's own migrations write it"),
    (
        "_sqlx_migrations",
        "the target's own migrations record themselves",
    ),
];

/// A table as a schema describes it.
#[derive(Debug, Clone, Default)]
struct TableInfo {
    /// Columns in their order: name, how values travel, the PostgreSQL cast, and whether the
    /// column takes its default from a sequence (identity or serial).
    columns: Vec<(String, Kind, Option<String>, bool)>,
    /// Tables this one's foreign keys point at.
    parents: BTreeSet<String>,
}

/// The SQLite type affinity of a declared column type (sqlite.org/datatype3.html, 3.1).
fn sqlite_kind(declared: &str) -> Kind {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        Kind::Int
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        Kind::Text
    } else if t.contains("BLOB") || t.is_empty() {
        Kind::Bytes
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        Kind::Real
    } else if t.contains("BOOL") {
        Kind::Bool
    } else {
        Kind::Int
    }
}

/// How a PostgreSQL column's values are bound (`information_schema.columns.data_type`), and
/// the cast a text parameter needs for the types bound as text.
fn postgres_kind(data_type: &str, udt_name: &str) -> (Kind, Option<String>) {
    match data_type {
        "bigint" | "integer" | "smallint" => (Kind::Int, None),
        "boolean" => (Kind::Bool, None),
        "bytea" => (Kind::Bytes, None),
        "real" | "double precision" => (Kind::Real, None),
        "text" | "character varying" | "character" => (Kind::Text, None),
        _ => (Kind::Text, Some(ident(udt_name))),
    }
}

impl MetaStore {
    /// Why `berth migrate` leaves `table` out, or None when it copies it.
    pub fn not_migrated(table: &str) -> Option<&'static str> {
        NOT_MIGRATED
            .iter()
            .find(|(name, _)| *name == table)
            .map(|(_, why)| *why)
    }

    /// The tables `berth migrate` leaves out, each with the reason its report gives.
    pub fn tables_not_migrated() -> &'static [(&'static str, &'static str)] {
        NOT_MIGRATED
    }

    /// Every table of this store's schema (its own and the migration bookkeeping), by name.
    async fn schema_tables(&self) -> Result<BTreeMap<String, TableInfo>> {
        let mut tables: BTreeMap<String, TableInfo> = BTreeMap::new();
        match self.dialect {
            Dialect::Sqlite => {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                )
                .fetch_all(&self.read)
                .await?;
                for name in names {
                    let mut info = TableInfo::default();
                    let cols =
                        sqlx::query("SELECT name, type FROM pragma_table_info($1) ORDER BY cid")
                            .bind(&name)
                            .fetch_all(&self.read)
                            .await?;
                    for c in cols {
                        let col: String = c.try_get(0)?;
                        let declared: String = c.try_get(1)?;
                        info.columns
                            .push((col, sqlite_kind(&declared), None, false));
                    }
                    let parents: Vec<String> =
                        sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list($1)")
                            .bind(&name)
                            .fetch_all(&self.read)
                            .await?;
                    info.parents.extend(parents);
                    tables.insert(name, info);
                }
            }
            Dialect::Postgres => {
                let cols = sqlx::query(
                    "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.udt_name::text,
                            (c.is_identity = 'YES' OR COALESCE(c.column_default, '') LIKE 'nextval(%')
                     FROM information_schema.columns c
                     JOIN information_schema.tables t
                       ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                     WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
                     ORDER BY c.table_name, c.ordinal_position",
                )
                .fetch_all(&self.read)
                .await?;
                for c in cols {
                    let table: String = c.try_get(0)?;
                    let (kind, cast) =
                        postgres_kind(&c.try_get::<String, _>(2)?, &c.try_get::<String, _>(3)?);
                    tables.entry(table).or_default().columns.push((
                        c.try_get(1)?,
                        kind,
                        cast,
                        c.try_get(4)?,
                    ));
                }
                let fks = sqlx::query(
                    "SELECT cl.relname::text, ref.relname::text
                     FROM pg_constraint co
                     JOIN pg_class cl ON cl.oid = co.conrelid
                     JOIN pg_class ref ON ref.oid = co.confrelid
                     JOIN pg_namespace n ON n.oid = cl.relnamespace
                     WHERE co.contype = 'f' AND n.nspname = current_schema()",
                )
                .fetch_all(&self.read)
                .await?;
                for fk in fks {
                    let table: String = fk.try_get(0)?;
                    if let Some(info) = tables.get_mut(&table) {
                        info.parents.insert(fk.try_get(1)?);
                    }
                }
            }
        }
        Ok(tables)
    }

    /// The number of rows of every table of the schema, by name (migration bookkeeping
    /// included: see [`MetaStore::not_migrated`]).
    pub async fn table_row_counts(&self) -> Result<Vec<(String, u64)>> {
        let mut counts = Vec::new();
        for name in self.schema_tables().await?.into_keys() {
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {}",
                ident(&name)
            )))
            .fetch_one(&self.read)
            .await?;
            counts.push((name, n as u64));
        }
        Ok(counts)
    }

    /// What a migration from this store into `target` copies: every table of this schema but
    /// [`NOT_MIGRATED`], parents before children, each column bound as the target's type; and
    /// the target's sequence-fed columns of those tables.
    async fn migration_plan(
        &self,
        target: &MetaStore,
    ) -> Result<(Vec<TableSpec>, Vec<(String, String)>)> {
        let source = self.schema_tables().await?;
        let dest = target.schema_tables().await?;
        let mut specs = BTreeMap::new();
        let mut parents = BTreeMap::new();
        let mut serial = Vec::new();
        for (name, info) in &source {
            if MetaStore::not_migrated(name).is_some() {
                continue;
            }
            let to = dest.get(name).ok_or_else(|| {
                MetaError::Incompatible(format!(
                    "the target database has no table {name}: the source and the target must be \
                     at the same schema version (run the same berth on both)"
                ))
            })?;
            let mut columns = Vec::new();
            for (col, _, _, _) in &info.columns {
                let (_, kind, cast, _) =
                    to.columns.iter().find(|c| &c.0 == col).ok_or_else(|| {
                        MetaError::Incompatible(format!(
                            "the target's table {name} has no column {col}: the source and the \
                             target must be at the same schema version"
                        ))
                    })?;
                columns.push(Column {
                    name: col.clone(),
                    kind: *kind,
                    cast: cast.clone(),
                });
            }
            serial.extend(
                to.columns
                    .iter()
                    .filter(|c| c.3)
                    .map(|c| (name.clone(), c.0.clone())),
            );
            let mut up: BTreeSet<String> = info.parents.union(&to.parents).cloned().collect();
            up.retain(|p| p != name && MetaStore::not_migrated(p).is_none());
            parents.insert(name.clone(), up);
            specs.insert(
                name.clone(),
                TableSpec {
                    name: name.clone(),
                    columns,
                    constants: vec![],
                },
            );
        }
        // Parents first; among the tables that are ready, by name, so the order is stable.
        let mut order = Vec::new();
        while !parents.is_empty() {
            let ready: Vec<String> = parents
                .iter()
                .filter(|(_, up)| up.iter().all(|p| !parents.contains_key(p)))
                .map(|(name, _)| name.clone())
                .collect();
            if ready.is_empty() {
                return Err(MetaError::Incompatible(format!(
                    "the foreign keys of tables {:?} form a cycle: no insertion order satisfies them",
                    parents.keys().collect::<Vec<_>>()
                )));
            }
            for name in ready {
                parents.remove(&name);
                order.extend(specs.remove(&name));
            }
        }
        Ok((order, serial))
    }

    /// Copies every row of every table (but [`NOT_MIGRATED`]) into `target`, whose tables must
    /// be empty, with the same ids, in one transaction of the target: an interruption leaves the
    /// target's metadata as it was. `progress` hears each table's name and its rows copied so
    /// far, after every batch. Returns the rows copied per table, in the order copied.
    pub async fn migrate_metadata_into(
        &self,
        target: &MetaStore,
        progress: &mut (dyn FnMut(&str, u64) + Send),
    ) -> Result<Vec<(String, u64)>> {
        /// Rows are inserted in batches of at most this many rows or bytes (a manifest
        /// payload may be 4 MiB).
        const BATCH_ROWS: usize = 1_000;
        const BATCH_BYTES: usize = 8 << 20;
        let (plan, serial) = self.migration_plan(target).await?;
        let mut tx = target.begin_write().await?;
        let mut copied = Vec::with_capacity(plan.len());
        for table in &plan {
            let mut n = 0u64;
            let mut pending: Vec<Vec<Value>> = Vec::new();
            let mut bytes = 0;
            let mut rows = sqlx::query(AssertSqlSafe(table.select_sql())).fetch(&self.read);
            while let Some(row) = rows.try_next().await? {
                let values = table.read_row(&row)?;
                bytes += values.iter().map(Value::weight).sum::<usize>();
                pending.push(values);
                if pending.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
                    insert_rows(&mut tx, target.dialect, table, &pending).await?;
                    n += pending.len() as u64;
                    pending.clear();
                    bytes = 0;
                    progress(&table.name, n);
                }
            }
            insert_rows(&mut tx, target.dialect, table, &pending).await?;
            n += pending.len() as u64;
            progress(&table.name, n);
            copied.push((table.name.clone(), n));
        }
        // Rows were inserted with their ids, which moves no sequence: the next row would get
        // id 1 and collide. Each sequence continues after the largest id copied.
        if target.dialect == Dialect::Postgres {
            for (table, column) in &serial {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({}), 0) + 1, false) FROM {}",
                    ident(column),
                    ident(table)
                )))
                .bind(table)
                .bind(column)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    //! The migration copy, from SQLite into SQLite and, with TEST_POSTGRES_URL, into
    //! PostgreSQL: every row arrives identical, the ids continue after the largest copied, and
    //! an interrupted copy leaves the target empty for the next run.

    use super::*;
    use crate::tests::test_postgres_url;
    use crate::{AuditEvent, NewManifest, now_ms};
    use berth_core::access::{Actions, Role};
    use berth_core::{Digest, RepoName};

    const GEN: &str = "2b0c3d6e-1a1f-4c55-9a43-3b3c2d1e0f00";

    /// The tables [`filled_source`] writes rows into (a table added later is compared too,
    /// with whatever rows the source gets).
    const FILLED: &[&str] = &[
        "audit_events",
        "blobs",
        "gc_review",
        "jobs",
        "manifest_children",
        "manifest_refs",
        "manifests",
        "members",
        "projects",
        "repo_blobs",
        "repositories",
        "robot_permissions",
        "robots",
        "schedules",
        "tags",
        "token_keys",
        "users",
    ];

    /// A source registry with a row in every table, and an upload in progress.
    async fn filled_source(dir: &Path) -> MetaStore {
        let m = MetaStore::open_sqlite(&dir.join("source.db"))
            .await
            .unwrap();
        let alice = m
            .create_user("alice", Some("$argon2id$v=19$alice"), "local", false)
            .await
            .unwrap();
        m.create_user("admin", Some("$argon2id$v=19$admin"), "local", true)
            .await
            .unwrap();
        let team = m
            .create_project("team", false, Some(&alice.name))
            .await
            .unwrap();
        m.create_project("public", true, None).await.unwrap();
        m.set_member(team.id, "group", "cn=devs,dc=example", Role::Developer)
            .await
            .unwrap();
        m.create_robot(
            "robot$ci",
            &[7u8; 32],
            "CI",
            Some(now_ms() + 86_400_000),
            "admin",
            &[("team".to_owned(), Actions::ALL)],
        )
        .await
        .unwrap();
        m.add_token_key("k1", &[1u8; 32]).await.unwrap();
        let event = |action: &str| AuditEvent {
            id: 0,
            at: now_ms(),
            actor: "alice".into(),
            actor_kind: "user".into(),
            action: action.into(),
            resource: "team/app".into(),
            source: "127.0.0.1".into(),
            result: "success".into(),
            detail: String::new(),
            count: 1,
        };
        m.insert_audit(&[event("push"), event("login"), event("delete")])
            .await
            .unwrap();
        let repo = m
            .ensure_repo(&RepoName::parse("team/app").unwrap())
            .await
            .unwrap();
        let mut blobs = Vec::new();
        for content in ["config", "layer"] {
            let id = format!("upload-{content}");
            m.create_upload(&id, repo, b"state").await.unwrap();
            let digest = Digest::sha256_of(content.as_bytes());
            m.commit_blob(&id, repo, &digest, Some((GEN, content.len() as u64)))
                .await
                .unwrap();
            blobs.push((digest, content.len() as u64));
        }
        // v2 moves from the second manifest to the third: GC state, an untagged manifest and
        // the review its untagging queued.
        for (tag, payload) in [
            ("v1", "{\"a\":1}"),
            ("v2", "{\"a\":2}"),
            ("v2", "{\"a\":3}"),
        ] {
            let manifest = NewManifest {
                digest: Digest::sha256_of(payload.as_bytes()),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                artifact_type: None,
                payload: payload.as_bytes().to_vec(),
                subject: None,
                config_digest: Some(blobs[0].0.clone()),
                annotations: None,
                blobs: blobs.clone(),
                children: vec![],
                pushed_by: Some("alice".into()),
                from_upstream: false,
                sparse: false,
            };
            m.put_manifest(repo, &manifest, &[tag]).await.unwrap();
        }
        // An index over v1.
        let child = Digest::sha256_of(b"{\"a\":1}");
        let index = NewManifest {
            digest: Digest::sha256_of(b"index"),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            artifact_type: None,
            payload: b"index".to_vec(),
            subject: None,
            config_digest: None,
            annotations: Some("{\"org.example\":\"x\"}".into()),
            blobs: vec![],
            children: vec![(child, 7)],
            pushed_by: None,
            from_upstream: false,
            sparse: false,
        };
        m.put_manifest(repo, &index, &["multi"]).await.unwrap();
        // Jobs history and schedules.
        let job = m
            .start_inline_job(
                "gc",
                &serde_json::json!({"dry_run": false}),
                "node-1",
                60_000,
            )
            .await
            .unwrap();
        m.complete_job(job, "node-1", &serde_json::json!({"blobs_deleted": 0}))
            .await
            .unwrap();
        m.enqueue_job("scrub", &serde_json::json!({}), true)
            .await
            .unwrap();
        m.upsert_schedule("gc", "gc", "*/10 * * * *", now_ms() + 600_000)
            .await
            .unwrap();
        // An upload in progress, which is not copied.
        m.create_upload("in-progress", repo, b"half").await.unwrap();
        m
    }

    /// Every row of `table`, read as `plan` reads it, in a stable order.
    async fn dump(m: &MetaStore, table: &TableSpec) -> Vec<Vec<Value>> {
        let order: Vec<String> = (1..=table.columns.len()).map(|i| i.to_string()).collect();
        let sql = format!("{} ORDER BY {}", table.select_sql(), order.join(", "));
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&m.read)
            .await
            .unwrap();
        rows.iter().map(|r| table.read_row(r).unwrap()).collect()
    }

    async fn counts(m: &MetaStore) -> BTreeMap<String, u64> {
        m.table_row_counts().await.unwrap().into_iter().collect()
    }

    async fn assert_identical(source: &MetaStore, target: &MetaStore) {
        let (plan, _) = source.migration_plan(target).await.unwrap();
        for table in &plan {
            let rows = dump(source, table).await;
            assert_eq!(
                rows,
                dump(target, table).await,
                "table {} differs after the copy",
                table.name
            );
        }
    }

    async fn copies_every_row_and_ids_continue(target: MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let source = filled_source(dir.path()).await;
        let mut heard = Vec::new();
        let copied = source
            .migrate_metadata_into(&target, &mut |t, n| heard.push((t.to_owned(), n)))
            .await
            .unwrap();

        // Every table of the schema but the ones named is copied, parents before children.
        let source_counts = counts(&source).await;
        let copied_names: BTreeSet<&str> = copied.iter().map(|(t, _)| t.as_str()).collect();
        for (table, n) in &source_counts {
            match MetaStore::not_migrated(table) {
                Some(_) => assert!(!copied_names.contains(table.as_str()), "{table} copied"),
                None => assert!(copied.contains(&(table.clone(), *n)), "{table}: {copied:?}"),
            }
        }
        for table in FILLED {
            assert!(
                source_counts[*table] > 0,
                "the source has no row in {table}"
            );
        }
        let position = |t: &str| copied.iter().position(|(n, _)| n == t).unwrap();
        assert!(position("projects") < position("repositories"));
        assert!(position("repositories") < position("tags"));
        assert!(position("robots") < position("robot_permissions"));
        assert_eq!(
            heard.last().map(|h| h.0.as_str()),
            copied.last().map(|c| c.0.as_str())
        );
        assert_identical(&source, &target).await;
        let untagged: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM manifests WHERE untagged_at IS NOT NULL")
                .fetch_one(&target.read)
                .await
                .unwrap();
        assert_eq!(
            untagged, 1,
            "the untagged time of the manifest v2 left is kept"
        );
        let target_counts = counts(&target).await;
        assert_eq!(
            target_counts["uploads"], 0,
            "uploads in progress are dropped"
        );
        assert_eq!(source_counts["uploads"], 1);

        // The target reads what the source wrote, through the ordinary queries.
        assert_eq!(
            target.token_keys().await.unwrap(),
            source.token_keys().await.unwrap()
        );
        let alice = target.user_by_name("alice").await.unwrap().unwrap();
        assert_eq!(alice.password_hash.as_deref(), Some("$argon2id$v=19$alice"));
        let robot = target.robot_by_name("robot$ci").await.unwrap().unwrap();
        assert_eq!(
            robot,
            source.robot_by_name("robot$ci").await.unwrap().unwrap()
        );

        // New rows get ids after the largest copied (PostgreSQL's identity sequences were moved).
        let bob = target
            .create_user("bob", Some("$argon2id$bob"), "local", false)
            .await
            .unwrap();
        assert!(bob.id > alice.id.max(2), "{} after {}", bob.id, alice.id);
        let p = target.create_project("third", false, None).await.unwrap();
        assert_eq!(p.id, 3);
        let r = target
            .ensure_repo(&RepoName::parse("third/x").unwrap())
            .await
            .unwrap();
        assert_eq!(r, 2);
        target
            .create_robot("robot$two", &[1; 32], "", None, "admin", &[])
            .await
            .unwrap();
        let job = target
            .enqueue_job("scrub", &serde_json::json!({}), true)
            .await
            .unwrap();
        assert_eq!(job, 3);
        let event = AuditEvent {
            id: 0,
            at: now_ms(),
            actor: "bob".into(),
            actor_kind: "user".into(),
            action: "login".into(),
            resource: String::new(),
            source: "127.0.0.1".into(),
            result: "success".into(),
            detail: String::new(),
            count: 1,
        };
        target.insert_audit(&[event]).await.unwrap();
        let newest = target
            .query_audit(&crate::AuditFilter {
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(newest[0].id, 4);
    }

    async fn an_interrupted_copy_leaves_nothing(target: MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let source = filled_source(dir.path()).await;
        // Stopped after its first table, as a kill would stop it: the transaction is dropped.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut stop = Some(stop);
        let mut tables = 0;
        let mut on_progress = |_: &str, _: u64| {
            tables += 1;
            if tables == 3
                && let Some(s) = stop.take()
            {
                let _ = s.send(());
            }
        };
        let copy = source.migrate_metadata_into(&target, &mut on_progress);
        tokio::select! {
            result = copy => panic!("the copy finished before it was stopped: {result:?}"),
            _ = stopped => {}
        }
        let (plan, _) = source.migration_plan(&target).await.unwrap();
        // The rollback of a dropped transaction runs when its connection is next used; every
        // table reads empty at once, whatever the connection.
        for (table, n) in counts(&target).await {
            if plan.iter().any(|t| t.name == table) {
                assert_eq!(n, 0, "{table} holds rows of the interrupted copy");
            }
        }
        source
            .migrate_metadata_into(&target, &mut |_, _| {})
            .await
            .unwrap();
        assert_identical(&source, &target).await;
    }

    async fn sqlite_target(dir: &tempfile::TempDir) -> MetaStore {
        MetaStore::open_sqlite(&dir.path().join("target.db"))
            .await
            .unwrap()
    }

    async fn postgres_target() -> Option<MetaStore> {
        let url = test_postgres_url()?;
        let opts = MetaStore::test_postgres_options(&url).await.unwrap();
        Some(MetaStore::open_postgres(&opts).await.unwrap())
    }

    #[tokio::test]
    async fn migration_copies_every_row_and_ids_continue_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        copies_every_row_and_ids_continue(sqlite_target(&dir).await).await;
    }

    #[tokio::test]
    async fn migration_copies_every_row_and_ids_continue_postgres() {
        if let Some(target) = postgres_target().await {
            copies_every_row_and_ids_continue(target).await;
        }
    }

    #[tokio::test]
    async fn an_interrupted_migration_leaves_nothing_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        an_interrupted_copy_leaves_nothing(sqlite_target(&dir).await).await;
    }

    #[tokio::test]
    async fn an_interrupted_migration_leaves_nothing_postgres() {
        if let Some(target) = postgres_target().await {
            an_interrupted_copy_leaves_nothing(target).await;
        }
    }

    #[test]
    fn column_types_map_to_bindings() {
        assert_eq!(sqlite_kind("INTEGER"), Kind::Int);
        assert_eq!(sqlite_kind("BLOB"), Kind::Bytes);
        assert_eq!(sqlite_kind("TEXT"), Kind::Text);
        assert_eq!(postgres_kind("bigint", "int8"), (Kind::Int, None));
        assert_eq!(postgres_kind("bytea", "bytea"), (Kind::Bytes, None));
        assert_eq!(postgres_kind("boolean", "bool"), (Kind::Bool, None));
        assert_eq!(
            postgres_kind("jsonb", "jsonb"),
            (Kind::Text, Some("\"jsonb\"".into()))
        );
    }
}
