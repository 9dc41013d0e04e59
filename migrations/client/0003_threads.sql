-- Referral threads: one row per package this facility sent or received
-- (verified), with what the list of threads needs from its document, and
-- the threads this facility closed (local bookkeeping, never sent).
CREATE TABLE thread_packages (
    package_id TEXT NOT NULL,
    direction TEXT NOT NULL,          -- sent / received
    thread_id TEXT NOT NULL,
    in_reply_to TEXT,
    kind TEXT NOT NULL,
    counterparts TEXT NOT NULL,       -- JSON [{"facility_id": ..., "name": ...}]
    envelope_id TEXT NOT NULL,
    created_at TEXT NOT NULL,         -- the signed manifest's creation time
    recorded_at TEXT NOT NULL,        -- when this facility sent or received it
    patient_name TEXT,
    patient_kana TEXT,
    title TEXT,
    purpose TEXT,
    PRIMARY KEY (package_id, direction)
);
CREATE INDEX thread_packages_thread ON thread_packages (thread_id, created_at);
CREATE TABLE thread_closures (
    thread_id TEXT PRIMARY KEY,
    closed_by TEXT NOT NULL,
    closed_at TEXT NOT NULL,
    note TEXT
);
-- Packages recorded before threads existed (in `sent` / `received` only)
-- are copied in by src/client/threads.rs (BACKFILL) whenever threads are read.
