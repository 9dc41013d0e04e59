-- Checkpoint key transitions this witness verified (docs/LOG.md §5.5):
-- the exact key-transition entry at leaf idx of the log, announced in the
-- checkpoint of size idx + 1 that this witness had cosigned. The new key
-- signs checkpoints of sizes from idx + 1 on; the old one up to it.
CREATE TABLE key_transitions (
    origin TEXT NOT NULL,
    idx BIGINT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (origin, idx)
);
