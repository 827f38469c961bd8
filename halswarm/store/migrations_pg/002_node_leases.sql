-- Node ownership when several supervisors share this database (issue 21): the supervisor holding a
-- node's agent connection holds its lease, renewed with the node's heartbeats. SQLite has one
-- supervisor per file and no such table.
CREATE TABLE node_leases (
    node_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    acquired_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX node_leases_owner ON node_leases (owner);
