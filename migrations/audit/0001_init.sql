-- renkei auditor state (SQLite, PROFILE/audit.db): the log as this auditor
-- verified it, the checkpoints it accepted, and what it found.
CREATE TABLE entries (
    idx BIGINT PRIMARY KEY,
    entry TEXT NOT NULL,
    leaf_hash TEXT NOT NULL
);
CREATE TABLE checkpoints (
    size BIGINT PRIMARY KEY,
    note TEXT NOT NULL,
    verified_at TEXT NOT NULL
);
CREATE TABLE receipts (
    idx BIGINT PRIMARY KEY,
    envelope_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    signer TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX receipts_envelope ON receipts (envelope_id);
CREATE TABLE problems (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    found_at TEXT NOT NULL,
    leaf_index BIGINT,
    what TEXT NOT NULL
);
