-- Identity, projects' visibility and members, robot accounts, token signing keys and the
-- audit log. Times are epoch milliseconds.

ALTER TABLE projects ADD COLUMN public INTEGER NOT NULL DEFAULT 0;

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    -- argon2id PHC string; NULL for users who sign in through LDAP.
    password_hash  TEXT,
    source         TEXT NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'ldap')),
    admin          INTEGER NOT NULL DEFAULT 0,
    disabled       INTEGER NOT NULL DEFAULT 0,
    -- JSON array of lower-cased group DNs seen at the last LDAP login.
    ldap_groups    TEXT NOT NULL DEFAULT '[]',
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

-- A user (by name) or an LDAP group (by lower-cased DN) holding a role in a project.
CREATE TABLE members (
    project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'group')),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('guest', 'developer', 'maintainer', 'admin')),
    PRIMARY KEY (project_id, kind, name)
);
CREATE INDEX members_by_name ON members(kind, name);

CREATE TABLE robots (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    -- SHA-256 of the secret: secrets are 256 random bits, so a fast hash is enough.
    secret_hash  BLOB NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    expires_at   INTEGER,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE robot_permissions (
    robot_id  INTEGER NOT NULL REFERENCES robots(id) ON DELETE CASCADE,
    project   TEXT NOT NULL,
    actions   TEXT NOT NULL,
    PRIMARY KEY (robot_id, project)
);

-- HMAC keys that sign tokens. The newest signs; every key still listed verifies, so a key can
-- be rotated while tokens signed by the previous one are still in use.
CREATE TABLE token_keys (
    kid         TEXT PRIMARY KEY,
    secret      BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    actor_kind  TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    source      TEXT NOT NULL,
    result      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit_events(at);
CREATE INDEX audit_actor ON audit_events(actor, id);
CREATE INDEX audit_action ON audit_events(action, id);
