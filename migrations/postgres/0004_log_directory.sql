-- The directory leaves of the log (certificates and CRLs published), by
-- leaf index, so that `GET /v1/log/directory` finds them without reading
-- every entry. Leaves logged before this table existed are found by the
-- type the entry text starts with (serde writes the tag first).
CREATE TABLE log_directory (
    idx BIGINT PRIMARY KEY
);
INSERT INTO log_directory (idx)
    SELECT idx FROM log_entries
    WHERE entry LIKE '{"type":"certificate",%' OR entry LIKE '{"type":"crl",%';
