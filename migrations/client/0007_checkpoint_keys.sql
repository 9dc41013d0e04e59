-- Checkpoint keys learnt through key transitions in the relay's log
-- (docs/LOG.md §8): the key, and the first tree size it signs. The root
-- key (size 0) is the relay certificate's and is not kept here.
CREATE TABLE checkpoint_keys (
    origin TEXT NOT NULL,
    from_size BIGINT NOT NULL,
    vkey TEXT NOT NULL,
    PRIMARY KEY (origin, from_size)
);
