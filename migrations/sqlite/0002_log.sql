-- The receipt transparency log: entries (leaves), stored complete-subtree
-- hashes keyed by (level, index), and signed checkpoints.
CREATE TABLE log_entries (
    idx BIGINT PRIMARY KEY,
    entry TEXT NOT NULL
);
CREATE TABLE log_nodes (
    level BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE log_checkpoints (
    size BIGINT PRIMARY KEY,
    note TEXT NOT NULL
);
ALTER TABLE receipts ADD COLUMN log_index BIGINT;
