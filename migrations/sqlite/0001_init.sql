-- renkei relay schema (SQLite). Keep in step with migrations/postgres.
CREATE TABLE directory (
    facility_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    cert_pem TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    published_at BIGINT NOT NULL
);
CREATE TABLE crl (
    id BIGINT PRIMARY KEY,
    crl_number TEXT NOT NULL,
    pem TEXT NOT NULL,
    published_at BIGINT NOT NULL
);
CREATE TABLE envelopes (
    envelope_id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    size BIGINT NOT NULL,
    accepted_at BIGINT NOT NULL,
    blob_deleted BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE envelope_recipients (
    envelope_id TEXT NOT NULL REFERENCES envelopes(envelope_id),
    recipient TEXT NOT NULL,
    state TEXT NOT NULL,
    fetched_at BIGINT,
    outcome_at BIGINT,
    PRIMARY KEY (envelope_id, recipient)
);
CREATE INDEX envelope_recipients_inbox ON envelope_recipients (recipient, state);
CREATE TABLE receipts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    signer TEXT NOT NULL,
    body TEXT NOT NULL,
    signature TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX receipts_envelope ON receipts (envelope_id);
