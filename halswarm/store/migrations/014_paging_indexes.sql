-- Keyset paging (issue 22): the list queries walk an index in (timestamp, id) order instead of sorting
-- or scanning. SQLite appends the rowid (`id`) to every index, so (node_id, ts) is ordered by
-- (node_id, ts, id). A node's events had no index (each request sorted them), and project + type
-- used (type, ts) and checked the project row by row.
CREATE INDEX IF NOT EXISTS idx_events_node_ts ON events(node_id, ts);
CREATE INDEX IF NOT EXISTS idx_events_project_type_ts ON events(project, type, ts);
