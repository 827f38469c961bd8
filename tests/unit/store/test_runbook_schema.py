"""Migration 012 (issue 23): the runbook's time queries on a database written by the previous schema.

The old database is built from the migration SQL files that precede 012 (what today's main writes),
then migrated the way the supervisor does it at start-up (checked backup first), and the runbook's own
statements are run through the real `sqlite3` CLI.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from halswarm.store.db import DatabaseError, connect
from halswarm.store.migrations import Migration, bundled_migrations, migrate
from halswarm.store.premigrate import backup_before_migrate, backup_path

pytestmark = pytest.mark.process  # runs the sqlite3 CLI

DAY = 86400.0
SQLITE3 = shutil.which("sqlite3")
ARCHIVE = "DELETE FROM events WHERE timestamp < datetime('now', '-30 days');"
RECENT_SESSIONS = "SELECT COUNT(*) FROM sessions WHERE timestamp > datetime('now', '-1 day');"


def old_migrations() -> list[Migration]:
    return [m for m in bundled_migrations() if int(m.version) < 12]


def make_old_db(path: Path) -> dict[str, float]:  # WAL, like the supervisor's own file
    """A database of the pre-012 schema with events 40, 31, 29 days and 1 hour old (REAL epochs)."""
    now = time.time()
    ages = {"e40d": 40 * DAY, "e31d": 31 * DAY, "e29d": 29 * DAY, "e1h": 3600.0}
    conn = connect(path)
    migrate(conn, old_migrations())
    conn.execute("INSERT INTO nodes(id) VALUES ('n1')")
    for seq, (eid, age) in enumerate(ages.items(), 1):
        conn.execute("INSERT INTO events(node_id, seq, event_id, type, data, timestamp, received_at)"
                     " VALUES ('n1', ?, ?, 't', '{}', ?, ?)", (seq, eid, now - age, now - age))
    for sid, age in (("ses_old", 2 * DAY), ("ses_new", 3600.0)):
        conn.execute("INSERT INTO sessions(id, node_id, status, started_at, last_activity)"
                     " VALUES (?, 'n1', 'idle', ?, ?)", (sid, now - age - 60, now - age))
    conn.execute("INSERT INTO costs(provider, date, model, project, cost_usd, updated_at)"
                 " VALUES ('anthropic', '2026-01-02', 'm', 'p', 1.5, 0), ('anthropic', '2026-01-03', 'm', 'p', 2, 0)")
    conn.close()
    return ages


def cli(db: Path, sql: str) -> str:
    assert SQLITE3, "the sqlite3 CLI is needed (apt: sqlite3)"
    res = subprocess.run([SQLITE3, str(db), sql], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def upgrade(path: Path) -> Path | None:
    conn = connect(path)
    try:
        saved = backup_before_migrate(conn, path, bundled_migrations())
        migrate(conn)
        return saved
    finally:
        conn.close()


def test_old_schema_archive_query_deletes_everything(tmp_path: Path) -> None:
    """The defect itself, kept as a witness: on the REAL-epoch column the runbook's DELETE empties the table."""
    db = tmp_path / "old.db"
    make_old_db(db)
    cli(db, ARCHIVE)
    assert cli(db, "SELECT COUNT(*) FROM events;") == "0"


def test_runbook_queries_after_migration(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_old_db(db)
    saved = upgrade(db)
    assert saved is not None and saved.exists()
    plan = cli(db, "EXPLAIN QUERY PLAN " + ARCHIVE)
    assert "idx_events_timestamp" in plan, plan
    cli(db, ARCHIVE)
    assert cli(db, "SELECT event_id FROM events ORDER BY ts;").split() == ["e29d", "e1h"]
    assert cli(db, RECENT_SESSIONS) == "1"
    assert cli(db, "SELECT date FROM costs ORDER BY date DESC LIMIT 10;").split() == ["2026-01-03", "2026-01-02"]
    cli(db, "VACUUM;")
    cli(db, "ANALYZE;")
    assert cli(db, "PRAGMA integrity_check;") == "ok"
    # The product keeps its REAL epoch under the new name.
    with sqlite3.connect(db) as conn:
        ts = conn.execute("SELECT ts, timestamp FROM events WHERE event_id='e1h'").fetchone()
    assert isinstance(ts[0], float) and ts[1] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts[0]))


def test_backup_is_checked_and_holds_the_old_schema(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_old_db(db)
    applied = [m.version for m in old_migrations()]
    saved = upgrade(db)
    assert saved == backup_path(db, applied)
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["supervisor.db", saved.name], "no stray side files"
    with sqlite3.connect(saved) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
        assert "timestamp" in cols and "ts" not in cols
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 4
    # A second start has nothing pending and makes no new copy.
    assert upgrade(db) is None


def test_interrupted_migration_is_rolled_back_and_resumed(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_old_db(db)
    real = bundled_migrations()
    m012 = next(m for m in real if m.version == "012")
    broken = [*old_migrations(), Migration("012", m012.name, m012.sql + "\nSELECT no_such_function();\n")]
    conn = connect(db)
    try:
        saved = backup_before_migrate(conn, db, broken)
        with pytest.raises(DatabaseError, match="012"):
            migrate(conn, broken)
        cols = [r[1] for r in conn.execute("PRAGMA table_xinfo(events)")]
        assert "ts" not in cols, "a failed migration must leave no half-renamed table"
    finally:
        conn.close()
    assert saved is not None
    first_copy = saved.stat().st_mtime_ns
    assert upgrade(db) == saved  # the checked copy from the first attempt is reused
    assert saved.stat().st_mtime_ns == first_copy
    cli(db, ARCHIVE)
    assert cli(db, "SELECT COUNT(*) FROM events;") == "2"


def test_a_damaged_backup_is_replaced_not_trusted(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_old_db(db)
    target = backup_path(db, [m.version for m in old_migrations()])
    target.write_bytes(b"not a database")
    assert upgrade(db) == target
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_backup_failure_stops_the_migration(tmp_path: Path) -> None:
    db = tmp_path / "d" / "supervisor.db"
    make_old_db(db)
    target = backup_path(db, [m.version for m in old_migrations()])
    blocker = target.with_name(target.name + ".tmp")
    (blocker / "x").mkdir(parents=True)  # the copy's temporary name is taken by a directory
    conn = connect(db)
    try:
        with pytest.raises(DatabaseError, match="cannot back up"):
            backup_before_migrate(conn, db, bundled_migrations())
        assert "ts" not in [r[1] for r in conn.execute("PRAGMA table_xinfo(events)")]
    finally:
        conn.close()


def test_new_database_needs_no_backup(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    assert upgrade(db) is None
    assert cli(db, RECENT_SESSIONS) == "0"
