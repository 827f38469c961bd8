-- events.timestamp becomes a plain indexed TEXT column that the supervisor writes with each event
-- (halswarm.core.timestamps.sql_datetime, the same text as SQLite's datetime(ts, 'unixepoch')).
-- As a generated column (012) SQLite computed it inside every INSERT, about 2 us a row: most of the
-- writer's time per event, and a 30% fall of the ingest benchmark (issue 23 allows 5%).
-- Existing rows are filled here; a trigger keeps the text in step with any later change of `ts`.
-- A row inserted by another tool without it has a NULL timestamp: the runbook's archive DELETE
-- keeps such a row rather than removing it.
DROP INDEX idx_events_timestamp;
ALTER TABLE events DROP COLUMN timestamp;
ALTER TABLE events ADD COLUMN timestamp TEXT;
UPDATE events SET timestamp = datetime(ts, 'unixepoch');
CREATE INDEX idx_events_timestamp ON events(timestamp);
CREATE TRIGGER events_timestamp_follows_ts AFTER UPDATE OF ts ON events
BEGIN
    UPDATE events SET timestamp = datetime(NEW.ts, 'unixepoch') WHERE id = NEW.id;
END;
