-- Runbook-compatible time columns (issue 23). The runbook compares `events.timestamp` and
-- `sessions.timestamp` with datetime('now', ...), i.e. with 'YYYY-MM-DD HH:MM:SS' UTC text. A REAL
-- epoch sorts below every text in SQLite, so the runbook's archive DELETE removed every event.
-- The epoch moves to `events.ts`; `timestamp` becomes a VIRTUAL generated text column (not stored:
-- no extra bytes per row, and ALTER TABLE can add it without rebuilding the table), indexed so
-- the runbook's range queries do not scan. sessions.timestamp is its last activity.
ALTER TABLE events RENAME COLUMN timestamp TO ts;
ALTER TABLE events ADD COLUMN timestamp TEXT GENERATED ALWAYS AS (datetime(ts, 'unixepoch')) VIRTUAL;
CREATE INDEX idx_events_timestamp ON events(timestamp);
ALTER TABLE sessions ADD COLUMN timestamp TEXT
    GENERATED ALWAYS AS (datetime(COALESCE(last_activity, started_at), 'unixepoch')) VIRTUAL;
CREATE INDEX idx_sessions_timestamp ON sessions(timestamp);
