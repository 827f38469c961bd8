-- Policy engine retry state (survives restarts) and dependency auto-start bookkeeping.
CREATE TABLE policy_state (
    session_id   TEXT NOT NULL,
    policy       TEXT NOT NULL,
    retry_count  INTEGER NOT NULL DEFAULT 0,
    last_attempt REAL,
    last_success REAL,
    last_result  TEXT,
    last_error   TEXT,
    capped_at    REAL,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (session_id, policy)
);

-- The completion marker of each upstream project that was already acted on.
CREATE TABLE dependency_marks (
    project    TEXT PRIMARY KEY,
    marker     TEXT NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE dependency_starts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project    TEXT NOT NULL,
    upstream   TEXT NOT NULL,
    marker     TEXT NOT NULL,
    session_id TEXT,
    command_id TEXT,
    result     TEXT NOT NULL,
    error      TEXT,
    started_at REAL NOT NULL
);
CREATE INDEX idx_dependency_starts_project ON dependency_starts(project, started_at);
