-- Every certificate the directory monitor has seen in a log's directory
-- leaves (proved included in a checkpoint the profile accepted). A profile
-- that requires witnesses uses a directory answer only for a certificate
-- listed here: one in the tree its witnesses cosigned.
CREATE TABLE directory_logged (
    origin TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    facility_id TEXT NOT NULL,
    log_index BIGINT NOT NULL,
    PRIMARY KEY (origin, fingerprint)
);
