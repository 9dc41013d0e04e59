-- renkei client local store (SQLite, PROFILE/store.db).
CREATE TABLE sent (
    envelope_id TEXT PRIMARY KEY,
    package_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    in_reply_to TEXT,
    kind TEXT NOT NULL,
    recipients TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE received (
    envelope_id TEXT PRIMARY KEY,
    package_id TEXT,
    thread_id TEXT,
    in_reply_to TEXT,
    kind TEXT,
    sender TEXT NOT NULL,
    sender_name TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    location TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE receipts (
    envelope_id TEXT NOT NULL,
    log_index BIGINT NOT NULL,
    purpose TEXT NOT NULL,
    signer TEXT NOT NULL,
    body TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (envelope_id, log_index)
);
