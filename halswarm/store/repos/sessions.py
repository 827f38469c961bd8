"""SQL for the ``sessions`` table."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from halswarm.core.model import Session


def upsert_sessions(conn: sqlite3.Connection, sessions: Iterable[Session]) -> None:
    conn.executemany(
        "INSERT INTO sessions(id, node_id, project, status, model, tokens_input, tokens_output, tokens_total,"
        " compaction_count, current_task, cost_usd, error, title, started_at, last_activity)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(id) DO UPDATE SET node_id=excluded.node_id, project=excluded.project,"
        " status=excluded.status, model=excluded.model, tokens_input=excluded.tokens_input,"
        " tokens_output=excluded.tokens_output, tokens_total=excluded.tokens_total,"
        " compaction_count=excluded.compaction_count, current_task=excluded.current_task,"
        " cost_usd=excluded.cost_usd, error=excluded.error, title=excluded.title,"
        " started_at=excluded.started_at, last_activity=excluded.last_activity",
        [
            (s.id, s.node_id, s.project, s.status, s.model, s.tokens_input, s.tokens_output, s.tokens_total,
             s.compaction_count, s.current_task, s.cost_usd, s.error, s.title, s.started_at, s.last_activity)
            for s in sessions
        ],
    )
