-- Checkpoint keys learnt through key transitions in the relay's log
-- (docs/LOG.md §8): the first tree size each signs and its verifier key.
-- The root key (size 0) is the relay certificate's and is not kept here.
CREATE TABLE checkpoint_keys (
    from_size BIGINT PRIMARY KEY,
    vkey TEXT NOT NULL
);
