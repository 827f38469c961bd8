-- Command forwarding between supervisors sharing this database (issue 21): a command for a node whose
-- agent is connected to another supervisor is queued here by the supervisor that was asked; the one
-- holding the node's lease claims it (once), sends it to its agent and writes the result back. Woken by
-- NOTIFY and found by polling as well. `deadline` is the database's clock (epoch seconds), so the
-- supervisors' own clocks never enter. SQLite has one supervisor per file and no such table.
CREATE TABLE command_forwards (
    id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    type TEXT NOT NULL,
    target TEXT NOT NULL,
    args TEXT,
    timeout_ms BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    actor TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    claimed_by TEXT,
    result TEXT,
    deadline DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    claimed_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    CHECK (status IN ('queued', 'running', 'done'))
);
CREATE INDEX command_forwards_queued ON command_forwards (node_id) WHERE status = 'queued';
CREATE INDEX command_forwards_deadline ON command_forwards (deadline);

-- The agent process figures of the node's last heartbeat (JSON), written by the lease holder with each
-- renewal: the leader's automatic remediation (`agent-high-memory`) reads them for nodes held elsewhere.
ALTER TABLE node_leases ADD COLUMN vitals TEXT;
