-- Issue 14: the audit actor is the authenticated token's name; what the client claims to be
-- (`X-HAL-Actor`, e.g. halctl's user@host) is recorded beside it, never instead of it.
ALTER TABLE audit_log ADD COLUMN client_actor TEXT;
