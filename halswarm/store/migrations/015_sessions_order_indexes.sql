-- Sessions leave the supervisor's memory once ended (issue 22): `/sessions` pages and a project's
-- latest completed session are read from this table, walking an index in the API's order
-- (newest first by start, then id; a missing start counts as 0) instead of sorting every session.
CREATE INDEX IF NOT EXISTS idx_sessions_started ON sessions(COALESCE(started_at, 0), id);
CREATE INDEX IF NOT EXISTS idx_sessions_project_started ON sessions(project, COALESCE(started_at, 0), id);
CREATE INDEX IF NOT EXISTS idx_sessions_status_started ON sessions(status, COALESCE(started_at, 0), id);
CREATE INDEX IF NOT EXISTS idx_sessions_node_started ON sessions(node_id, COALESCE(started_at, 0), id);
CREATE INDEX IF NOT EXISTS idx_sessions_project_completed
    ON sessions(project, status, COALESCE(last_activity, started_at, 0));
