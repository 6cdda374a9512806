//! Embedded migrations, one list per dialect with the same versions and the same meaning. They
//! are additive (expand now, contract in a later release), so two adjacent versions can share a
//! database during a rolling upgrade: a node starts on a database that a newer node migrated
//! (migrations it does not know are ignored) unless `schema_info.min_reader` says the schema
//! has moved past what it can read.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};

use crate::{Dialect, MetaError, Result};

type Migrations = &'static [(i64, &'static str, &'static str)];

const SQLITE: Migrations = &[
    (
        1,
        "registry",
        include_str!("../migrations/sqlite/0001_registry.sql"),
    ),
    (
        2,
        "gc_jobs",
        include_str!("../migrations/sqlite/0002_gc_jobs.sql"),
    ),
    (
        3,
        "auth",
        include_str!("../migrations/sqlite/0003_auth.sql"),
    ),
    (
        4,
        "schema_info",
        include_str!("../migrations/sqlite/0004_schema_info.sql"),
    ),
    (
        5,
        "hardening",
        include_str!("../migrations/sqlite/0005_hardening.sql"),
    ),
    (
        6,
        "events",
        include_str!("../migrations/sqlite/0006_events.sql"),
    ),
];

const POSTGRES: Migrations = &[
    (
        1,
        "registry",
        include_str!("../migrations/postgres/0001_registry.sql"),
    ),
    (
        2,
        "gc_jobs",
        include_str!("../migrations/postgres/0002_gc_jobs.sql"),
    ),
    (
        3,
        "auth",
        include_str!("../migrations/postgres/0003_auth.sql"),
    ),
    (
        4,
        "schema_info",
        include_str!("../migrations/postgres/0004_schema_info.sql"),
    ),
    (
        5,
        "hardening",
        include_str!("../migrations/postgres/0005_hardening.sql"),
    ),
    (
        6,
        "events",
        include_str!("../migrations/postgres/0006_events.sql"),
    ),
];

fn migrations(dialect: Dialect) -> Migrations {
    match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    }
}

/// The newest schema version this build knows.
pub fn known_version(dialect: Dialect) -> i64 {
    migrations(dialect).last().map(|m| m.0).unwrap_or(0)
}

pub fn migrator(dialect: Dialect) -> Migrator {
    let mut m = Migrator::with_migrations(
        migrations(dialect)
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    (*name).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    // A newer node may have applied migrations this one does not know; whether this node can
    // still work with the schema is `min_reader`'s to say, checked in `migrate`.
    m.set_ignore_missing(true);
    m
}

/// Applies this build's migrations (concurrent starts are safe: sqlx takes a lock on
/// PostgreSQL, and SQLite has one writer), then refuses a schema that has moved past what this
/// build can read.
pub async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<()> {
    migrator(dialect).run(pool).await?;
    let min_reader: i64 =
        sqlx::query_scalar("SELECT value FROM schema_info WHERE key = 'min_reader'")
            .fetch_one(pool)
            .await?;
    let known = known_version(dialect);
    if min_reader > known {
        return Err(MetaError::Incompatible(format!(
            "the database schema needs a node that knows migration {min_reader} or later; this \
             build knows up to {known}: upgrade this node"
        )));
    }
    Ok(())
}
