"""Ingestor.stored / emit_stored: an API answer waits until the event it caused is committed.

Real SQLite file and the real batching writer; the writer is slowed down or made to fail to show that
the wait covers the commit and reports a lost one.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.tracker import SessionTracker
from tests.support.gated_writer import GatedWriter


def _types(db: Path) -> list[str]:
    check = sqlite3.connect(db)
    try:
        return [r[0] for r in check.execute("SELECT type FROM events ORDER BY id")]
    finally:
        check.close()


async def _with_ingestor(db: Path, body: Any) -> Any:
    conn = connect(str(db))
    migrate(conn)
    writer = GatedWriter(conn)
    writer.start(asyncio.get_running_loop())
    ing = Ingestor(writer, SessionTracker(), Metrics(), lambda node, seq: None)
    try:
        return await body(ing, writer)
    finally:
        writer.gate.set()
        await ing.drain()
        await writer.stop()
        conn.close()


def test_emit_stored_returns_after_the_commit(tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    async def body(ing: Ingestor, writer: GatedWriter) -> None:
        task = asyncio.create_task(ing.emit_stored("n1", "env.check.fail", {"failed": ["x"]}, project="p"))
        await asyncio.sleep(0.2)
        assert not task.done()  # the commit is held: the answer waits
        assert _types(db) == []
        writer.gate.set()
        assert await asyncio.wait_for(task, 5) is True
        assert _types(db) == ["env.check.fail"]  # readable as soon as it returned
        assert ing._stored_waiters == {}

    asyncio.run(_with_ingestor(db, body))


def test_stored_waits_for_every_event_of_a_handler(tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    async def body(ing: Ingestor, writer: GatedWriter) -> None:
        writer.gate.set()
        ids = [ing.emit("n1", t, {}, track=True) for t in ("env.provisioned", "provision.manual_required")]
        untracked = ing.emit("n1", "node.offline", {})
        assert untracked not in ing._stored_waiters
        assert await ing.stored(ids) is True
        assert _types(db)[:2] == ["env.provisioned", "provision.manual_required"]
        assert ing._stored_waiters == {}

    asyncio.run(_with_ingestor(db, body))


def test_a_failed_commit_is_reported_not_awaited_forever(tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    async def body(ing: Ingestor, writer: GatedWriter) -> None:
        writer.fail_jobs = 1
        writer.gate.set()
        assert await asyncio.wait_for(ing.emit_stored("n1", "cost.refreshed", {}), 5) is False
        assert _types(db) == []
        assert await ing.emit_stored("n1", "cost.refreshed", {}) is True  # the next one is stored again
        assert _types(db) == ["cost.refreshed"]

    asyncio.run(_with_ingestor(db, body))


def test_a_stuck_writer_times_out_with_false(tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    async def body(ing: Ingestor, writer: GatedWriter) -> None:
        eid = ing.emit(None, "remediation.completed", {}, track=True)
        assert await ing.stored([eid], timeout=0.2) is False
        assert ing._stored_waiters == {}
        writer.gate.set()
        await ing.drain()  # the late commit still stores it, and wakes no one
        assert _types(db) == ["remediation.completed"]

    asyncio.run(_with_ingestor(db, body))
