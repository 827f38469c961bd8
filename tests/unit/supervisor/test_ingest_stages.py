"""Ingest stages (the approvals table): written in the events' own transaction, timed by the supervisor's
clock; a failing stage never costs the batch its storage or its acks."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from halswarm.protocol import Event
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.writer import Writer
from halswarm.supervisor.features.approvals.service import approvals_stage
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.tracker import SessionTracker


def _ev(seq: int, ev_type: str, data: Any) -> Event:
    return Event(seq=seq, event_id=f"e{seq}", type=ev_type, session_id="ses_a", project="p", data=data,
                 timestamp=1000.0 + seq)


def _broken(_items: list[Any]) -> None:
    raise RuntimeError("a stage bug")


async def _run(db: Path) -> list[int]:
    conn = connect(str(db))
    migrate(conn)
    conn.execute("INSERT INTO nodes(id) VALUES ('n1')")  # registered before it sends events
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    acks: list[int] = []
    ing = Ingestor(writer, SessionTracker(), Metrics(), lambda _node, seq: acks.append(seq))
    ing.add_stage(_broken)
    ing.add_stage(approvals_stage)
    try:
        ing.offer("n1", _ev(1, "permission.asked", {"id": "per_1", "sessionID": "ses_a", "permission": "bash"}), 0.0)
        ing.offer("n1", _ev(2, "message.updated", {}), 0.0)
        await ing.drain()
        ing.offer("n1", _ev(3, "permission.replied", {"requestID": "per_1", "reply": "once"}), 0.0)
        await ing.drain()
    finally:
        await writer.stop()
        conn.close()
    return acks


def test_stage_rows_commit_with_the_events_and_a_broken_stage_is_skipped(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    acks = asyncio.run(_run(db))
    assert acks and acks[-1] == 3
    check = sqlite3.connect(db)
    try:
        assert [r[0] for r in check.execute("SELECT seq FROM events ORDER BY id")] == [1, 2, 3]
        assert check.execute("SELECT status, reply, node_id FROM approvals WHERE id='per_1'").fetchone() == (
            "answered", "once", "n1")
        # The supervisor's clock when it arrived, not the agent's (the events say 1001.0: a skewed clock).
        asked_at = check.execute("SELECT asked_at FROM approvals").fetchone()[0]
        assert abs(asked_at - time.time()) < 60
    finally:
        check.close()
