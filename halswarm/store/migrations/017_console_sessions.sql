-- Login sessions of the web console (issue 19): kept in the database so a supervisor restart does not
-- log operators out (an open page reconnects its live stream). Only a SHA-256 of the cookie value is
-- stored, so a copy of the database grants no session; `token_hash` is a digest of the API token the
-- operator logged in with: a rotated or removed token ends its console sessions.
CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    expires_at REAL NOT NULL
);
-- Expired sessions are pruned walking this index.
CREATE INDEX IF NOT EXISTS idx_console_sessions_expires ON console_sessions(expires_at);
