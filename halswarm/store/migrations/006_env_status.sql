-- Env check results (latest per node and project), the history of checks / provisions / approvals,
-- and the risky items waiting for approval (issue 9).
CREATE TABLE env_status (
    node_id          TEXT NOT NULL,
    project          TEXT NOT NULL,
    status           TEXT NOT NULL,
    manifest_version INTEGER,
    result           TEXT NOT NULL,
    checked_at       REAL NOT NULL,
    PRIMARY KEY (node_id, project)
);

CREATE TABLE env_runs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id    TEXT NOT NULL,
    project    TEXT,
    kind       TEXT NOT NULL,
    status     TEXT NOT NULL,
    result     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    command_id TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX idx_env_runs_node_ts ON env_runs(node_id, created_at);

CREATE TABLE env_pending (
    node_id    TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    token      TEXT NOT NULL,
    project    TEXT NOT NULL,
    category   TEXT NOT NULL,
    item       TEXT NOT NULL,
    command    TEXT NOT NULL,
    detail     TEXT NOT NULL,
    status     TEXT NOT NULL,
    result     TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (node_id, item_id)
);
CREATE INDEX idx_env_pending_token ON env_pending(token);
