-- Durable receive: the outcome and its signed delivery receipt are recorded
-- before the receipt is posted; a receipt is posted again on every run until
-- the relay confirms it. A package being released keeps its staging folder
-- here until the final rename is done.
ALTER TABLE received ADD COLUMN receipt TEXT;
ALTER TABLE received ADD COLUMN receipt_confirmed_at TEXT;
ALTER TABLE received ADD COLUMN receipt_error TEXT;
ALTER TABLE received ADD COLUMN staging TEXT;
ALTER TABLE received ADD COLUMN summary TEXT;
ALTER TABLE received ADD COLUMN read_at TEXT;
UPDATE received SET receipt_confirmed_at = received_at;

-- Store-and-forward: every sealed envelope waits here until the relay
-- accepts it; the same signed submission is resubmitted, so the relay's
-- idempotent resubmission answers with the stored acceptance.
CREATE TABLE outbox (
    envelope_id TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    manifest TEXT NOT NULL,
    submission TEXT NOT NULL,
    size BIGINT NOT NULL,
    state TEXT NOT NULL,            -- queued / accepted / refused
    queued_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt_at TEXT,
    last_error TEXT,
    accepted_at TEXT,
    acceptance TEXT
);

-- Certificates from the directory, verified when fetched and again when
-- used, so a facility can seal for a known addressee while the relay is
-- unreachable.
CREATE TABLE directory (
    facility_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    certificate TEXT NOT NULL,
    fetched_at TEXT NOT NULL,
    used_at TEXT,
    favourite INTEGER NOT NULL DEFAULT 0
);
