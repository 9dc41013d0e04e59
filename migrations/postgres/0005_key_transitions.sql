-- Checkpoint key transitions (docs/LOG.md §8): one row per key-transition
-- leaf, written in the same transaction as the leaf and its announcement
-- checkpoint. A sequencer reads MAX(idx) in its first round trip and
-- refuses to sign when a transition newer than its key was committed
-- (another instance still configured with a retired key).
CREATE TABLE log_key_transitions (
    idx BIGINT PRIMARY KEY,
    new_key TEXT NOT NULL
);
