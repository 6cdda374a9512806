-- The registry core: projects, repositories, deduplicated blobs with per-repository links,
-- upload sessions, manifests with their references, tags. Times are epoch milliseconds.
-- Text compares bytewise (SQLite's BINARY collation), like COLLATE "C" on PostgreSQL.

CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE INDEX repositories_project ON repositories(project_id);

-- One row per stored copy of a digest. Bytes live at blobs/<alg>/<ab>/<hex>/<generation>.
CREATE TABLE blobs (
    digest       TEXT NOT NULL,
    generation   TEXT NOT NULL,
    size         INTEGER NOT NULL,
    state        TEXT NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'deleting')),
    lease_until  INTEGER,
    created_at   INTEGER NOT NULL,
    touched_at   INTEGER NOT NULL,
    PRIMARY KEY (digest, generation)
);
CREATE UNIQUE INDEX blobs_one_live ON blobs(digest) WHERE state = 'live';

-- A blob is visible in a repository only after it was pushed or mounted there.
CREATE TABLE repo_blobs (
    repo_id    INTEGER NOT NULL REFERENCES repositories(id),
    digest     TEXT NOT NULL,
    linked_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    "offset"    INTEGER NOT NULL,
    hash_state  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX uploads_updated ON uploads(updated_at);

-- Payloads are the exact bytes pushed; the digest is of those bytes.
CREATE TABLE manifests (
    repo_id        INTEGER NOT NULL REFERENCES repositories(id),
    digest         TEXT NOT NULL,
    media_type     TEXT NOT NULL,
    artifact_type  TEXT,
    size           INTEGER NOT NULL,
    payload        BLOB NOT NULL,
    subject        TEXT,
    config_digest  TEXT,
    annotations    TEXT,
    created_at     INTEGER NOT NULL,
    untagged_at    INTEGER,
    pushed_by      TEXT,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repo_id, subject, digest) WHERE subject IS NOT NULL;

-- Layers and config of an image manifest.
CREATE TABLE manifest_refs (
    repo_id   INTEGER NOT NULL,
    manifest  TEXT NOT NULL,
    blob      TEXT NOT NULL,
    PRIMARY KEY (repo_id, manifest, blob)
);
CREATE INDEX manifest_refs_blob ON manifest_refs(blob);

-- Children of an image index.
CREATE TABLE manifest_children (
    repo_id  INTEGER NOT NULL,
    parent   TEXT NOT NULL,
    child    TEXT NOT NULL,
    PRIMARY KEY (repo_id, parent, child)
);
CREATE INDEX manifest_children_child ON manifest_children(repo_id, child);

CREATE TABLE tags (
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
);
CREATE INDEX tags_digest ON tags(repo_id, digest);
