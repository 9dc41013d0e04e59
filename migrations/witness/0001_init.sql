-- The witness's state: per log (origin), the latest checkpoint it cosigned,
-- and the requests it refused with a valid log signature (possible
-- evidence of a log presenting a split view).
CREATE TABLE logs (
    origin TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE refused (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    at BIGINT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    request TEXT NOT NULL
);
