-- Throttle state of the supervisor's automatic remediations (remediation.auto, SPEC 8): the last run
-- started per incident and host, kept across restarts so a window is honoured after a restart too.
CREATE TABLE auto_remediation_state (
    incident    TEXT NOT NULL,
    host        TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    status      TEXT,
    report_id   TEXT,
    reason      TEXT,
    PRIMARY KEY (incident, host)
);
