-- The log's entries, one row per tile of 256 leaves instead of one row per
-- entry: `bundle` holds the tile's entries exactly as the relay served
-- them, in the entry-bundle format (each entry a big-endian u16 length and
-- its bytes, docs/LOG.md), and `leaf_hashes` their leaf hashes, 32 bytes
-- each in log order. The last tile may hold fewer than 256 entries; a later
-- sync replaces it when it grows. (Storing one row per entry cost the
-- auditor more than a sixth of the CPU its signature checks did.) The rows
-- of the `entries` table an older auditor left are moved here by
-- `audit::sync::open_db`, in one transaction that drops the old table.
CREATE TABLE tiles (
    n INTEGER PRIMARY KEY,
    bundle BLOB NOT NULL,
    leaf_hashes BLOB NOT NULL
);
