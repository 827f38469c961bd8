-- Environment manifest owned by the supervisor (issue 9): every accepted PUT is a new version;
-- the current manifest is the highest version.
CREATE TABLE env_manifests (
    version    INTEGER PRIMARY KEY AUTOINCREMENT,
    document   TEXT NOT NULL,
    format     TEXT NOT NULL,
    digest     TEXT NOT NULL,
    actor      TEXT NOT NULL DEFAULT 'api',
    created_at REAL NOT NULL
);
