-- Remediation runs reported by `halctl remediate` (SPEC 8): one row per JSON report.
CREATE TABLE remediations (
    id          TEXT PRIMARY KEY,
    incident    TEXT NOT NULL,
    severity    TEXT NOT NULL,
    status      TEXT NOT NULL,
    decision    TEXT NOT NULL,
    hosts       TEXT NOT NULL DEFAULT '[]',
    check_mode  INTEGER NOT NULL DEFAULT 0,
    duration_s  REAL,
    actor       TEXT,
    received_at REAL NOT NULL,
    report      TEXT NOT NULL
);

CREATE INDEX idx_remediations_received ON remediations(received_at);
CREATE INDEX idx_remediations_incident ON remediations(incident, received_at);
