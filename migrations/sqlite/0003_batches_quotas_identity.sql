-- Group commit, expiry as announced, quotas, and the blob store's identity.
-- When each envelope may expire (acceptance time + the expiry announced in
-- its acceptance receipt); NULL for envelopes accepted before this column.
ALTER TABLE envelopes ADD COLUMN expires_at BIGINT;
-- Per-facility quotas count a sender's recent envelopes.
CREATE INDEX envelopes_sender ON envelopes (sender, accepted_at);
CREATE INDEX receipts_log_index ON receipts (log_index);
-- Facts about this relay's storage, e.g. which blob store holds its
-- ciphertext (blob_store_id).
CREATE TABLE relay_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
