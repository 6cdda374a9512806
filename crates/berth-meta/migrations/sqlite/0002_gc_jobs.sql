-- Garbage collection's work queue and the durable job queue.

-- Whatever drops a reference queues the object for review in the same transaction.
-- kind 'manifest': key is '<repo_id>@<digest>'; kind 'blob': key is the digest.
CREATE TABLE gc_review (
    kind          TEXT NOT NULL CHECK (kind IN ('manifest', 'blob')),
    key           TEXT NOT NULL,
    review_after  INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX gc_review_due ON gc_review(review_after);

CREATE INDEX blobs_deleting ON blobs(lease_until) WHERE state = 'deleting';

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    run_after    INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  INTEGER,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    result       TEXT,
    error        TEXT
);
CREATE INDEX jobs_claim ON jobs(state, run_after);
CREATE INDEX jobs_kind ON jobs(kind, id);

CREATE TABLE schedules (
    name      TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    cron      TEXT NOT NULL,
    payload   TEXT NOT NULL DEFAULT '{}',
    next_run  INTEGER NOT NULL
);
