-- What this database asks of the nodes that use it, for rolling upgrades. Migrations are
-- additive, so a node of the previous version keeps working on a database a newer node has
-- migrated. A migration that older nodes could not work with (the "contract" step of
-- expand/contract, a release after the expansion) raises min_reader to its own version, and a
-- node refuses to start while min_reader is above the newest migration it knows.
CREATE TABLE schema_info (
    key    TEXT COLLATE "C" PRIMARY KEY,
    value  BIGINT NOT NULL
);
INSERT INTO schema_info (key, value) VALUES ('min_reader', 1);
