-- Receipt bundles, the newest verified checkpoint, and evidence of relay misbehaviour.
CREATE TABLE bundles (
    envelope_id TEXT NOT NULL,
    log_index BIGINT NOT NULL,
    bundle TEXT NOT NULL,
    PRIMARY KEY (envelope_id, log_index)
);
CREATE TABLE checkpoints (
    origin TEXT NOT NULL,
    size BIGINT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (origin, size)
);
CREATE TABLE evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    found_at TEXT NOT NULL,
    what TEXT NOT NULL,
    checkpoint_a TEXT NOT NULL,
    checkpoint_b TEXT NOT NULL
);
