-- Cost aggregation: provider daily buckets, poll bookkeeping, agent-reported usage per day.
-- `costs` keeps the Go table name and its `date` column (the runbook queries it).
CREATE TABLE costs (
    provider      TEXT NOT NULL,
    date          TEXT NOT NULL,
    model         TEXT NOT NULL,
    project       TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    tokens        INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (provider, date, model, project)
);
CREATE INDEX idx_costs_date ON costs(date);

-- One row per provider and UTC day that a poll covered successfully (back-fill finds the gaps).
CREATE TABLE cost_polls (
    provider  TEXT NOT NULL,
    date      TEXT NOT NULL,
    polled_at REAL NOT NULL,
    PRIMARY KEY (provider, date)
);

-- Usage the agents reported, as per-day increments of each session's cumulative counters.
CREATE TABLE session_usage (
    date          TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    project       TEXT NOT NULL DEFAULT '',
    provider      TEXT NOT NULL DEFAULT 'unknown',
    model         TEXT NOT NULL DEFAULT 'unknown',
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    tokens        INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    estimated     INTEGER NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (date, session_id)
);
CREATE INDEX idx_session_usage_project ON session_usage(project, date);

-- The cumulative counters of each session already accounted for in session_usage.
CREATE TABLE session_usage_marks (
    session_id    TEXT PRIMARY KEY,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    tokens        INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL
);
