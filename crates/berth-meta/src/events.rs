//! The events outbox: what changed, written in the transaction that changes it, and handed on
//! in order to each consumer (webhooks, event-triggered replication) from its own position.
//!
//! Order: events are read in `(tx, id)` order. On SQLite writers take turns, `tx` is 0 and ids
//! are in commit order. On PostgreSQL an id is taken at insert but becomes visible at commit,
//! so a transaction that commits late can show an event with a smaller id than one already
//! handed on; reading by id alone would skip it. `tx` is the writing transaction's id, and a
//! reader sees only events of transactions older than the oldest one still running
//! (`pg_snapshot_xmin`): every transaction that can still add an event then has a larger `tx`
//! than any event read. The price is that events wait for the oldest running transaction.
//!
//! Transaction ids belong to one PostgreSQL server: a dump restored onto another server starts
//! again below the stored ones. A node that opens such a database renumbers the stored events
//! in their order, with `tx` 0, and moves each consumer's position with them
//! ([`rebase_after_restore`]), before it serves.
//!
//! Delivery is at least once: a consumer's position moves after its events were handed on, so
//! a node that dies mid-way leaves them to the node that takes over its lease.

use serde_json::Value;
use sqlx::AnyConnection;

use crate::{Dialect, MetaStore, Result, now_ms};

/// What happened. `as_str` is the name stored and shown (`artifact.pushed`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A manifest was stored in a repository (not one that was already there).
    ArtifactPushed,
    /// A manifest was stored by the pull-through cache from its upstream.
    ArtifactCached,
    /// A manifest was deleted, by a client or by garbage collection (its tags went with it).
    ArtifactDeleted,
    /// A tag was created or moved to another digest (`detail.previous`).
    TagSet,
    /// A tag was deleted; its manifest stays.
    TagDeleted,
    /// A repository was deleted with everything in it.
    RepositoryDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::ArtifactPushed,
        EventKind::ArtifactCached,
        EventKind::ArtifactDeleted,
        EventKind::TagSet,
        EventKind::TagDeleted,
        EventKind::RepositoryDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ArtifactPushed => "artifact.pushed",
            EventKind::ArtifactCached => "artifact.cached",
            EventKind::ArtifactDeleted => "artifact.deleted",
            EventKind::TagSet => "tag.set",
            EventKind::TagDeleted => "tag.deleted",
            EventKind::RepositoryDeleted => "repository.deleted",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A place in the event stream: after this event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventPosition {
    pub tx: i64,
    pub id: i64,
}

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Event {
    pub id: i64,
    pub tx: i64,
    pub kind: String,
    pub repository: String,
    pub digest: Option<String>,
    pub tag: Option<String>,
    /// Who made the change: a user or robot name, [`GC`] for garbage collection, [`PROXY`]
    /// for the pull-through cache, empty for an anonymous caller.
    pub actor: String,
    /// JSON: what else the kind says (media type and size of a pushed artifact, the previous
    /// digest of a moved tag, the tags a deleted artifact had).
    pub detail: String,
    pub created_at: i64,
}

impl Event {
    pub fn position(&self) -> EventPosition {
        EventPosition {
            tx: self.tx,
            id: self.id,
        }
    }
}

/// The actor of changes made by garbage collection.
pub const GC: &str = "gc";
/// The actor of changes made by the pull-through cache (what it stores, what it evicts).
pub const PROXY: &str = "proxy";

/// An event to write, inside the transaction of its change.
pub(crate) struct NewEvent<'a> {
    pub kind: EventKind,
    pub repo_id: i64,
    pub digest: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub actor: &'a str,
    pub detail: Value,
}

/// Writes `e` in the caller's transaction. The repository is named by its id and stored by
/// name (the event outlives the repository); write it before the repository row goes.
pub(crate) async fn record(
    conn: &mut AnyConnection,
    e: NewEvent<'_>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let sql = match crate::dialect_of(conn) {
        Dialect::Sqlite => {
            "INSERT INTO events (tx, kind, repository, digest, tag, actor, detail, created_at)
             SELECT 0, $1, name, $3, $4, $5, $6, $7 FROM repositories WHERE id = $2"
        }
        Dialect::Postgres => {
            "INSERT INTO events (tx, kind, repository, digest, tag, actor, detail, created_at)
             SELECT CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT), $1, name, $3, $4, $5, $6, $7
             FROM repositories WHERE id = $2"
        }
    };
    sqlx::query(sql)
        .bind(e.kind.as_str())
        .bind(e.repo_id)
        .bind(e.digest)
        .bind(e.tag)
        .bind(e.actor)
        .bind(e.detail.to_string())
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

impl MetaStore {
    /// Up to `limit` events after `after`, in order; on PostgreSQL only those that no running
    /// transaction can precede (see the module's documentation).
    pub async fn events_after(&self, after: EventPosition, limit: u32) -> Result<Vec<Event>> {
        let sql = match self.dialect {
            Dialect::Sqlite => {
                "SELECT id, tx, kind, repository, digest, tag, actor, detail, created_at FROM events
                 WHERE tx > $1 OR (tx = $1 AND id > $2) ORDER BY tx, id LIMIT $3"
            }
            Dialect::Postgres => {
                "SELECT id, tx, kind, repository, digest, tag, actor, detail, created_at FROM events
                 WHERE (tx > $1 OR (tx = $1 AND id > $2))
                   AND tx < CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT)
                 ORDER BY tx, id LIMIT $3"
            }
        };
        Ok(sqlx::query_as(sql)
            .bind(after.tx)
            .bind(after.id)
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?)
    }

    /// Takes (or renews) the lease of consumer `name` for `owner` and returns its position;
    /// `None` while another owner's lease runs. A consumer seen for the first time starts at
    /// the end of the stream: it is handed what happens from now on.
    pub async fn claim_event_consumer(
        &self,
        name: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<EventPosition>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // The end of what can be read now: an event of an older transaction still running
        // comes after it, and is handed on.
        let end_sql = match self.dialect {
            Dialect::Sqlite => "SELECT tx, id FROM events ORDER BY tx DESC, id DESC LIMIT 1",
            Dialect::Postgres => {
                "SELECT tx, id FROM events
                 WHERE tx < CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT)
                 ORDER BY tx DESC, id DESC LIMIT 1"
            }
        };
        let end: Option<(i64, i64)> = sqlx::query_as(end_sql).fetch_optional(&mut *tx).await?;
        let (end_tx, end_id) = end.unwrap_or((0, 0));
        sqlx::query(
            "INSERT INTO event_consumers (name, after_tx, after_id, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(end_tx)
        .bind(end_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let position: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE event_consumers SET lease_owner = $2, lease_until = $3
             WHERE name = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $4)
             RETURNING after_tx, after_id",
        )
        .bind(name)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(position.map(|(tx, id)| EventPosition { tx, id }))
    }

    /// Moves consumer `name` past `to`, if `owner` still holds its lease (false otherwise:
    /// another node took over, and will hand the same events on again).
    pub async fn advance_event_consumer(
        &self,
        name: &str,
        owner: &str,
        to: EventPosition,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE event_consumers SET after_tx = $3, after_id = $4, updated_at = $5
             WHERE name = $1 AND lease_owner = $2
               AND (after_tx < $3 OR (after_tx = $3 AND after_id <= $4))",
        )
        .bind(name)
        .bind(owner)
        .bind(to.tx)
        .bind(to.id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Gives up `owner`'s lease of consumer `name` (at shutdown), so another node takes it
    /// over at once.
    pub async fn release_event_consumer(&self, name: &str, owner: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE event_consumers SET lease_owner = NULL, lease_until = NULL
             WHERE name = $1 AND lease_owner = $2",
        )
        .bind(name)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes up to `limit` events written before `before` that every consumer has passed.
    pub async fn purge_events(&self, before: i64, limit: u32) -> Result<u64> {
        self.write_batch(
            "DELETE FROM events WHERE id IN (
                 SELECT e.id FROM events e WHERE e.created_at < $1
                   AND NOT EXISTS (SELECT 1 FROM event_consumers c
                                   WHERE c.after_tx < e.tx OR (c.after_tx = e.tx AND c.after_id < e.id))
                 ORDER BY e.id LIMIT $2)",
            before,
            limit,
        )
        .await
    }
}

/// After a restore onto another PostgreSQL server (stored transaction ids at or above the
/// server's next one), renumbers the events in their stream order after the largest id, with
/// `tx` 0, and moves each consumer to the same place in the new numbering. Nodes serve only
/// after this ran, so every event it finds was written before the restore; an advisory lock
/// makes nodes that start together do it once. Returns how many events were renumbered.
pub(crate) async fn rebase_after_restore(pool: &sqlx::AnyPool) -> Result<u64> {
    let mut tx = crate::begin_on(pool, Dialect::Postgres).await?;
    sqlx::query("SELECT 1 FROM pg_advisory_xact_lock(hashtext('berth events rebase'))")
        .execute(&mut *tx)
        .await?;
    let restored: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE tx >= CAST(CAST(pg_snapshot_xmax(pg_current_snapshot()) AS TEXT) AS BIGINT))
             OR EXISTS (SELECT 1 FROM event_consumers WHERE after_tx >= CAST(CAST(pg_snapshot_xmax(pg_current_snapshot()) AS TEXT) AS BIGINT))",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !restored {
        return Ok(0);
    }
    let base: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    // A consumer has passed exactly the events at or before its position: it goes after as
    // many in the new numbering.
    sqlx::query(
        "UPDATE event_consumers c SET after_tx = 0, after_id = $1 + (
             SELECT COUNT(*) FROM events e
             WHERE e.tx < c.after_tx OR (e.tx = c.after_tx AND e.id <= c.after_id))",
    )
    .bind(base)
    .execute(&mut *tx)
    .await?;
    let n = sqlx::query(
        "UPDATE events e SET id = $1 + r.n, tx = 0
         FROM (SELECT id, row_number() OVER (ORDER BY tx, id) AS n FROM events) r
         WHERE e.id = r.id",
    )
    .bind(base)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("SELECT setval(pg_get_serial_sequence('events', 'id'), $1 + $2)")
        .bind(base)
        .bind(n as i64)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::warn!(
        events = n,
        "the events' transaction ids are ahead of this PostgreSQL server's (a restore onto \
         another server?): renumbered them in their order"
    );
    Ok(n)
}
