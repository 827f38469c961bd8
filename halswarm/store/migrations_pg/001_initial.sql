-- PostgreSQL history of the supervisor's schema (issue 21). It starts at SQLite's 016 in one step:
-- the same tables, columns and names (the runbook's `events.timestamp`, `sessions.timestamp`,
-- `costs.date` included), in PostgreSQL's types. Epochs stay numbers (DOUBLE PRECISION), JSON stays
-- text, AUTOINCREMENT ids are BIGSERIAL (never reused, like SQLite's AUTOINCREMENT).

-- 'YYYY-MM-DD HH:MM:SS' UTC of an epoch, as SQLite's datetime(x, 'unixepoch'). IMMUTABLE is true for
-- this fixed, locale-free format, and lets generated columns and indexes use it.
CREATE FUNCTION hal_epoch_text(double precision) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT
    RETURN to_char(to_timestamp($1) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS');

CREATE TABLE nodes (
    id                 TEXT PRIMARY KEY,
    hostname           TEXT NOT NULL DEFAULT '',
    status             TEXT NOT NULL DEFAULT 'offline',
    version            TEXT NOT NULL DEFAULT '',
    projects           TEXT NOT NULL DEFAULT '[]',
    capabilities       TEXT NOT NULL DEFAULT '{}',
    resources          TEXT NOT NULL DEFAULT '{}',
    auth_states        TEXT NOT NULL DEFAULT '{}',
    credential_version BIGINT,
    last_seq           BIGINT NOT NULL DEFAULT 0,
    last_heartbeat     DOUBLE PRECISION,
    connected_at       DOUBLE PRECISION,
    first_seen_at      DOUBLE PRECISION
);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    node_id          TEXT NOT NULL REFERENCES nodes(id),
    project          TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    model            TEXT,
    tokens_input     BIGINT NOT NULL DEFAULT 0,
    tokens_output    BIGINT NOT NULL DEFAULT 0,
    tokens_total     BIGINT NOT NULL DEFAULT 0,
    compaction_count BIGINT NOT NULL DEFAULT 0,
    current_task     TEXT,
    cost_usd         DOUBLE PRECISION NOT NULL DEFAULT 0,
    error            TEXT,
    title            TEXT,
    started_at       DOUBLE PRECISION,
    last_activity    DOUBLE PRECISION,
    -- The runbook's text time of the session (its last activity), as SQLite's 012.
    timestamp        TEXT GENERATED ALWAYS AS (hal_epoch_text(COALESCE(last_activity, started_at))) STORED
);
CREATE INDEX idx_sessions_node ON sessions(node_id);
CREATE INDEX idx_sessions_project ON sessions(project);
CREATE INDEX idx_sessions_status ON sessions(status);
CREATE INDEX idx_sessions_timestamp ON sessions(timestamp);
CREATE INDEX idx_sessions_started ON sessions(COALESCE(started_at, 0), id);
CREATE INDEX idx_sessions_project_started ON sessions(project, COALESCE(started_at, 0), id);
CREATE INDEX idx_sessions_status_started ON sessions(status, COALESCE(started_at, 0), id);
CREATE INDEX idx_sessions_node_started ON sessions(node_id, COALESCE(started_at, 0), id);
CREATE INDEX idx_sessions_project_completed ON sessions(project, status, COALESCE(last_activity, started_at, 0));

-- Agent events have a per-node seq, stored once (the unique constraint); the supervisor's own have NULL.
CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    node_id     TEXT,
    seq         BIGINT,
    event_id    TEXT NOT NULL,
    session_id  TEXT,
    project     TEXT,
    type        TEXT NOT NULL,
    data        TEXT,
    ts          DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    timestamp   TEXT,
    UNIQUE (node_id, seq)
);
CREATE INDEX idx_events_session_ts ON events(session_id, ts);
CREATE INDEX idx_events_ts ON events(ts);
CREATE INDEX idx_events_type_ts ON events(type, ts);
CREATE INDEX idx_events_project_ts ON events(project, ts);
CREATE INDEX idx_events_timestamp ON events(timestamp);
CREATE INDEX idx_events_node_ts ON events(node_id, ts, id);
CREATE INDEX idx_events_project_type_ts ON events(project, type, ts, id);

-- The text follows a later change of `ts` (the supervisor writes it with each insert, as in SQLite's 013).
CREATE FUNCTION hal_events_timestamp_follows_ts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.timestamp := hal_epoch_text(NEW.ts);
    RETURN NEW;
END $$;
CREATE TRIGGER events_timestamp_follows_ts BEFORE UPDATE OF ts ON events
    FOR EACH ROW EXECUTE FUNCTION hal_events_timestamp_follows_ts();

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
    created_at      DOUBLE PRECISION NOT NULL,
    finished_at     DOUBLE PRECISION
);
CREATE INDEX idx_commands_created ON commands(created_at);

CREATE TABLE command_idempotency (
    key_hash   TEXT PRIMARY KEY,
    command_id TEXT NOT NULL,
    result     TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_command_idempotency_expires ON command_idempotency(expires_at);

CREATE TABLE audit_log (
    id           BIGSERIAL PRIMARY KEY,
    timestamp    DOUBLE PRECISION NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    args         TEXT,
    result       TEXT NOT NULL,
    error        TEXT,
    duration_ms  BIGINT,
    ip_address   TEXT,
    command_id   TEXT,
    client_actor TEXT
);
CREATE INDEX idx_audit_ts ON audit_log(timestamp, id);
CREATE INDEX idx_audit_actor ON audit_log(actor, timestamp);
CREATE INDEX idx_audit_action ON audit_log(action, timestamp);

CREATE TABLE costs (
    provider      TEXT NOT NULL,
    date          TEXT NOT NULL,
    model         TEXT NOT NULL,
    project       TEXT NOT NULL,
    input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    tokens        BIGINT NOT NULL DEFAULT 0,
    cost_usd      DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider, date, model, project)
);
CREATE INDEX idx_costs_date ON costs(date);

CREATE TABLE cost_polls (
    provider  TEXT NOT NULL,
    date      TEXT NOT NULL,
    polled_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider, date)
);

CREATE TABLE session_usage (
    date          TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    project       TEXT NOT NULL DEFAULT '',
    provider      TEXT NOT NULL DEFAULT 'unknown',
    model         TEXT NOT NULL DEFAULT 'unknown',
    input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    tokens        BIGINT NOT NULL DEFAULT 0,
    cost_usd      DOUBLE PRECISION NOT NULL DEFAULT 0,
    estimated     BIGINT NOT NULL DEFAULT 0,
    updated_at    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (date, session_id)
);
CREATE INDEX idx_session_usage_project ON session_usage(project, date);

CREATE TABLE session_usage_marks (
    session_id    TEXT PRIMARY KEY,
    input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    tokens        BIGINT NOT NULL DEFAULT 0,
    cost_usd      DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at    DOUBLE PRECISION NOT NULL
);

CREATE TABLE policy_state (
    session_id   TEXT NOT NULL,
    policy       TEXT NOT NULL,
    retry_count  BIGINT NOT NULL DEFAULT 0,
    last_attempt DOUBLE PRECISION,
    last_success DOUBLE PRECISION,
    last_result  TEXT,
    last_error   TEXT,
    capped_at    DOUBLE PRECISION,
    updated_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (session_id, policy)
);

CREATE TABLE dependency_marks (
    project    TEXT PRIMARY KEY,
    marker     TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE dependency_starts (
    id         BIGSERIAL PRIMARY KEY,
    project    TEXT NOT NULL,
    upstream   TEXT NOT NULL,
    marker     TEXT NOT NULL,
    session_id TEXT,
    command_id TEXT,
    result     TEXT NOT NULL,
    error      TEXT,
    started_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_dependency_starts_project ON dependency_starts(project, started_at);

CREATE TABLE env_manifests (
    version    BIGSERIAL PRIMARY KEY,
    document   TEXT NOT NULL,
    format     TEXT NOT NULL,
    digest     TEXT NOT NULL,
    actor      TEXT NOT NULL DEFAULT 'api',
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE env_status (
    node_id          TEXT NOT NULL,
    project          TEXT NOT NULL,
    status           TEXT NOT NULL,
    manifest_version BIGINT,
    result           TEXT NOT NULL,
    checked_at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, project)
);

CREATE TABLE env_runs (
    id         BIGSERIAL PRIMARY KEY,
    node_id    TEXT NOT NULL,
    project    TEXT,
    kind       TEXT NOT NULL,
    status     TEXT NOT NULL,
    result     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    command_id TEXT,
    created_at DOUBLE PRECISION NOT NULL
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
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, item_id)
);
CREATE INDEX idx_env_pending_token ON env_pending(token);

-- `received_seq` orders reports as they arrived (SQLite's rowid order; report ids are chosen by clients).
CREATE TABLE remediations (
    id           TEXT PRIMARY KEY,
    incident     TEXT NOT NULL,
    severity     TEXT NOT NULL,
    status       TEXT NOT NULL,
    decision     TEXT NOT NULL,
    hosts        TEXT NOT NULL DEFAULT '[]',
    check_mode   BIGINT NOT NULL DEFAULT 0,
    duration_s   DOUBLE PRECISION,
    actor        TEXT,
    received_at  DOUBLE PRECISION NOT NULL,
    report       TEXT NOT NULL,
    received_seq BIGSERIAL
);
CREATE INDEX idx_remediations_received ON remediations(received_at, received_seq);
CREATE INDEX idx_remediations_incident ON remediations(incident, received_at);

CREATE TABLE auto_remediation_state (
    incident    TEXT NOT NULL,
    host        TEXT NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    status      TEXT,
    report_id   TEXT,
    reason      TEXT,
    PRIMARY KEY (incident, host)
);

CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    node_id      TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    project      TEXT,
    permission   TEXT NOT NULL,
    patterns     TEXT NOT NULL DEFAULT '[]',
    always       TEXT NOT NULL DEFAULT '[]',
    command      TEXT,
    tool         TEXT NOT NULL DEFAULT '{}',
    asked_at     DOUBLE PRECISION NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    reply        TEXT,
    message      TEXT,
    replied_by   TEXT,
    replied_at   DOUBLE PRECISION,
    escalated_at DOUBLE PRECISION
);
CREATE INDEX idx_approvals_status_asked ON approvals(status, asked_at, id);
CREATE INDEX idx_approvals_session ON approvals(session_id, status);
CREATE INDEX idx_approvals_replied ON approvals(replied_at);
