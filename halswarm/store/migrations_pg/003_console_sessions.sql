-- The web console's login sessions (issue 19; SQLite migration 017): stored by SHA-256 of the cookie,
-- never the cookie itself; `token_hash` is a digest of the API token the operator logged in with.
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_console_sessions_expires ON console_sessions (expires_at);
