-- Directory self-monitoring: how far this profile has scanned each log's
-- directory leaves, and every certificate for this facility's ID that it
-- did not publish (kept as evidence; reported until acknowledged).
CREATE TABLE directory_scan (
    origin TEXT PRIMARY KEY,
    next_index BIGINT NOT NULL,
    tree_size BIGINT NOT NULL,
    scanned_at TEXT NOT NULL
);
CREATE TABLE directory_alerts (
    origin TEXT NOT NULL,
    log_index BIGINT NOT NULL,
    entry TEXT NOT NULL,
    inclusion TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    found_at TEXT NOT NULL,
    acknowledged_at TEXT,
    PRIMARY KEY (origin, log_index)
);
