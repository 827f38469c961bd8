-- Permission requests of agents' sessions (issue 19): opened by `permission.asked`, closed by
-- `permission.replied`, by the end of the session, or by an operator's reply (who answered and how).
-- Written in the same transaction as the events that cause them, so a restart keeps them exactly.
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    project TEXT,
    permission TEXT NOT NULL,
    patterns TEXT NOT NULL DEFAULT '[]',
    always TEXT NOT NULL DEFAULT '[]',
    command TEXT,
    tool TEXT NOT NULL DEFAULT '{}',
    asked_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reply TEXT,
    message TEXT,
    replied_by TEXT,
    replied_at REAL,
    escalated_at REAL
);
-- The pending list walks this index, oldest first; answered rows stay for their history.
CREATE INDEX IF NOT EXISTS idx_approvals_status_asked ON approvals(status, asked_at, id);
CREATE INDEX IF NOT EXISTS idx_approvals_session ON approvals(session_id, status);
-- Retention deletes closed requests older than retention.audit_days, walking this index.
CREATE INDEX IF NOT EXISTS idx_approvals_replied ON approvals(replied_at);
