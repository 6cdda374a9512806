//! Embedded migrations. They are additive (expand now, contract in a later release), so two
//! adjacent versions can share a database during a rolling upgrade.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

const SQLITE: &[(i64, &str, &str)] = &[
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
];

pub fn migrator() -> Migrator {
    Migrator::with_migrations(
        SQLITE
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
    )
}
