-- Issue 15. All additive: a node of the previous version keeps working beside this one.

-- Pull events are aggregated: one row per caller, source address, artifact and minute, with
-- the number of pulls it stands for (every other event is one row, count 1).
ALTER TABLE audit_events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;

-- Garbage collection removes repositories that hold nothing; finding a repository's upload
-- sessions needs this.
CREATE INDEX uploads_repo ON uploads(repo_id);

-- Sparse manifests (distribution-spec): whether a project accepts a manifest whose blobs or an
-- index whose children are not in the repository. NULL: registry.sparse_manifests decides.
ALTER TABLE projects ADD COLUMN sparse_manifests INTEGER;
