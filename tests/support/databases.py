"""Supervisor databases for the data-safety tests: the real schema (halswarm.store.migrations) with a
known number of events, some of them older than the retention."""

from __future__ import annotations

from pathlib import Path

from halswarm.store.db import connect
from halswarm.store.migrations import migrate

DAY = 86400.0
NOW = 1_800_000_000.0


def make_db(path: Path, events: int = 50, old: int = 0, sessions: int = 3) -> None:
    conn = connect(path)
    migrate(conn)
    conn.execute("INSERT INTO nodes(id) VALUES ('n1')")
    conn.execute("BEGIN")
    for i in range(1, sessions + 1):
        conn.execute("INSERT INTO sessions(id, node_id, status) VALUES (?, 'n1', 'running')", (f"s{i}",))
    for i in range(1, events + 1):
        ts = NOW - 40 * DAY - i if i <= old else NOW - 3600 + i
        conn.execute("INSERT INTO events(node_id, seq, event_id, type, data, ts, received_at)"
                     " VALUES ('n1', ?, ?, 't', ?, ?, ?)", (i, f"e{i}", '"' + "x" * 50 + '"', ts, ts))
    conn.execute("COMMIT")
    conn.close()
