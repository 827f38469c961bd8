-- Core schema: nodes, sessions, events (per-node seq), commands, idempotency, audit.
CREATE TABLE nodes (
    id                 TEXT PRIMARY KEY,
    hostname           TEXT NOT NULL DEFAULT '',
    status             TEXT NOT NULL DEFAULT 'offline',
    version            TEXT NOT NULL DEFAULT '',
    projects           TEXT NOT NULL DEFAULT '[]',
    capabilities       TEXT NOT NULL DEFAULT '{}',
    resources          TEXT NOT NULL DEFAULT '{}',
    auth_states        TEXT NOT NULL DEFAULT '{}',
    credential_version INTEGER,
    last_seq           INTEGER NOT NULL DEFAULT 0,
    last_heartbeat     REAL,
    connected_at       REAL,
    first_seen_at      REAL
);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    node_id          TEXT NOT NULL REFERENCES nodes(id),
    project          TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    model            TEXT,
    tokens_input     INTEGER NOT NULL DEFAULT 0,
    tokens_output    INTEGER NOT NULL DEFAULT 0,
    tokens_total     INTEGER NOT NULL DEFAULT 0,
    compaction_count INTEGER NOT NULL DEFAULT 0,
    current_task     TEXT,
    cost_usd         REAL NOT NULL DEFAULT 0,
    error            TEXT,
    title            TEXT,
    started_at       REAL,
    last_activity    REAL
);
CREATE INDEX idx_sessions_node ON sessions(node_id);
CREATE INDEX idx_sessions_project ON sessions(project);
CREATE INDEX idx_sessions_status ON sessions(status);

-- Agent events have a per-node seq; events the supervisor makes itself have seq NULL.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id     TEXT,
    seq         INTEGER,
    event_id    TEXT NOT NULL,
    session_id  TEXT,
    project     TEXT,
    type        TEXT NOT NULL,
    data        TEXT,
    timestamp   REAL NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (node_id, seq)
);
CREATE INDEX idx_events_session_ts ON events(session_id, timestamp);
CREATE INDEX idx_events_ts ON events(timestamp);
CREATE INDEX idx_events_type_ts ON events(type, timestamp);
CREATE INDEX idx_events_project_ts ON events(project, timestamp);

CREATE TABLE commands (
    command_id      TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    target          TEXT NOT NULL,
    args            TEXT NOT NULL,
    node_id         TEXT,
    status          TEXT NOT NULL,
    output          TEXT,
    error           TEXT,
    actor           TEXT NOT NULL,
    idempotency_key TEXT,
    created_at      REAL NOT NULL,
    finished_at     REAL
);
CREATE INDEX idx_commands_created ON commands(created_at);

CREATE TABLE command_idempotency (
    key_hash   TEXT PRIMARY KEY,
    command_id TEXT NOT NULL,
    result     TEXT NOT NULL,
    expires_at REAL NOT NULL
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp   REAL NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    args        TEXT,
    result      TEXT NOT NULL,
    error       TEXT,
    duration_ms INTEGER,
    ip_address  TEXT,
    command_id  TEXT
);
CREATE INDEX idx_audit_ts ON audit_log(timestamp);
CREATE INDEX idx_audit_actor ON audit_log(actor, timestamp);
CREATE INDEX idx_audit_action ON audit_log(action, timestamp);
