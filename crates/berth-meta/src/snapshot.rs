//! A private copy of what garbage collection reads and writes, for dry runs: the real run's
//! code runs on the copy, so a dry run reports exactly what a run would do (cascades across
//! passes included) and never holds the database's write lock. The copy is a SQLite file,
//! whatever the dialect of the store it copies; manifest payloads and upload hash states are not
//! copied (GC never reads them). Reading the source takes no lock that blocks a writer.

use std::path::Path;

use futures_util::TryStreamExt;
use sqlx::Row;

use crate::{MetaStore, Result};

#[derive(Clone, Copy)]
enum Col {
    Int,
    OptInt,
    Text,
    OptText,
}

/// A table to copy: its name, the columns copied, and constants for the columns not copied.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    constants: &'static [(&'static str, &'static str)],
}

use Col::*;

/// In an order that satisfies the foreign keys.
const TABLES: &[Table] = &[
    Table {
        name: "projects",
        columns: &[("id", Int), ("name", Text), ("created_at", Int)],
        constants: &[],
    },
    Table {
        name: "repositories",
        columns: &[
            ("id", Int),
            ("project_id", Int),
            ("name", Text),
            ("created_at", Int),
        ],
        constants: &[],
    },
    Table {
        name: "blobs",
        columns: &[
            ("digest", Text),
            ("generation", Text),
            ("size", Int),
            ("state", Text),
            ("lease_until", OptInt),
            ("created_at", Int),
            ("touched_at", Int),
        ],
        constants: &[],
    },
    Table {
        name: "repo_blobs",
        columns: &[("repo_id", Int), ("digest", Text), ("linked_at", Int)],
        constants: &[],
    },
    Table {
        name: "uploads",
        columns: &[
            ("id", Text),
            ("repo_id", Int),
            ("\"offset\"", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        constants: &[("hash_state", "X''")],
    },
    Table {
        name: "manifests",
        columns: &[
            ("repo_id", Int),
            ("digest", Text),
            ("media_type", Text),
            ("artifact_type", OptText),
            ("size", Int),
            ("subject", OptText),
            ("config_digest", OptText),
            ("created_at", Int),
            ("untagged_at", OptInt),
            ("pushed_by", OptText),
        ],
        constants: &[("payload", "X''")],
    },
    Table {
        name: "manifest_refs",
        columns: &[("repo_id", Int), ("manifest", Text), ("blob", Text)],
        constants: &[],
    },
    Table {
        name: "manifest_children",
        columns: &[("repo_id", Int), ("parent", Text), ("child", Text)],
        constants: &[],
    },
    Table {
        name: "tags",
        columns: &[
            ("repo_id", Int),
            ("name", Text),
            ("digest", Text),
            ("updated_at", Int),
        ],
        constants: &[],
    },
    Table {
        name: "gc_review",
        columns: &[("kind", Text), ("key", Text), ("review_after", Int)],
        constants: &[],
    },
];

/// Rows per INSERT statement (SQLite allows 32,766 parameters).
const ROWS_PER_INSERT: usize = 200;
/// Rows per transaction of the copy.
const ROWS_PER_TX: usize = 10_000;

enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl MetaStore {
    /// Copies what garbage collection works on into a new SQLite store at `path` (which must
    /// not exist) and returns it.
    pub async fn gc_snapshot(&self, path: &Path) -> Result<MetaStore> {
        let copy = MetaStore::open_sqlite(path).await?;
        for table in TABLES {
            let cols: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
            let select = format!("SELECT {} FROM {}", cols.join(", "), table.name);
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&self.read);
            let mut pending: Vec<Vec<Value>> = Vec::with_capacity(ROWS_PER_TX);
            while let Some(row) = rows.try_next().await? {
                let mut values = Vec::with_capacity(table.columns.len());
                for (i, (_, kind)) in table.columns.iter().enumerate() {
                    values.push(match kind {
                        Int => Value::Int(Some(row.try_get::<i64, _>(i)?)),
                        OptInt => Value::Int(row.try_get::<Option<i64>, _>(i)?),
                        Text => Value::Text(Some(row.try_get::<String, _>(i)?)),
                        OptText => Value::Text(row.try_get::<Option<String>, _>(i)?),
                    });
                }
                pending.push(values);
                if pending.len() >= ROWS_PER_TX {
                    copy.insert_rows(table, &pending).await?;
                    pending.clear();
                }
            }
            copy.insert_rows(table, &pending).await?;
        }
        Ok(copy)
    }

    async fn insert_rows(&self, table: &Table, rows: &[Vec<Value>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let mut names: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
        names.extend(table.constants.iter().map(|c| c.0));
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let n = table.columns.len();
            let mut sql = format!("INSERT INTO {} ({}) VALUES ", table.name, names.join(", "));
            for (r, _) in chunk.iter().enumerate() {
                if r > 0 {
                    sql.push(',');
                }
                let mut params: Vec<String> = (1..=n).map(|k| format!("${}", r * n + k)).collect();
                params.extend(table.constants.iter().map(|c| c.1.to_owned()));
                sql.push_str(&format!("({})", params.join(",")));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                for v in row {
                    q = match v {
                        Value::Int(i) => q.bind(*i),
                        Value::Text(t) => q.bind(t.clone()),
                    };
                }
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
