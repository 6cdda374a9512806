-- Issue 16. The events outbox: each change that is announced (an artifact pushed or deleted, a
-- tag set or removed, a repository deleted; later issues add theirs) writes its event in the
-- transaction that makes the change, so an event exists exactly when its change committed.
-- Consumers (webhooks, event-triggered replication) read it in order from their position.
CREATE TABLE events (
    -- AUTOINCREMENT: ids are never reused, even once every event was purged (a plain rowid
    -- would start again after the largest left, behind the consumers' positions).
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The transaction that wrote it: PostgreSQL's transaction id; 0 on SQLite, whose writers
    -- take turns, so ids are already in commit order. Events are read in (tx, id) order.
    tx          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    repository  TEXT NOT NULL,
    digest      TEXT,
    tag         TEXT,
    actor       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);
CREATE INDEX events_order ON events(tx, id);
CREATE INDEX events_created ON events(created_at);

-- Where each consumer is in the stream, and which node holds it: one node at a time hands a
-- consumer its events, under a lease that another node takes over when it runs out.
CREATE TABLE event_consumers (
    name        TEXT PRIMARY KEY,
    after_tx    INTEGER NOT NULL,
    after_id    INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    updated_at  INTEGER NOT NULL
);
