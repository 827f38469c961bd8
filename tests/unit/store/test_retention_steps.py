"""Retention in small steps (issue 22): each writer job deletes a bounded number of rows, events queued
meanwhile commit between two steps, exactly the old rows go, and freed pages are given back."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

from halswarm.core.model import Node
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.repos.audit import insert_audit
from halswarm.store.repos.events import insert_events
from halswarm.store.repos.nodes import upsert_node
from halswarm.store.repos.retention import CHUNK_ROWS, auto_vacuum_mode, delete_step, free_pages, vacuum_step
from halswarm.store.writer import Writer
from halswarm.supervisor.features.retention.service import DAY, RetentionJob
from halswarm.supervisor.features.retention.settings import RetentionSettings

NOW = 1_800_000_000.0
PAYLOAD = '{"text": "' + "x" * 400 + '"}'


def _fill(conn: sqlite3.Connection, old: int, new: int, *, node: str = "n") -> None:
    conn.execute("BEGIN")
    upsert_node(conn, Node(id=node, status="offline"))
    rows = [(node, i, f"e{i}", "s", "p", "t", PAYLOAD, NOW - 40 * DAY + i, NOW) for i in range(1, old + 1)]
    rows += [(node, old + i, f"e{old + i}", "s", "p", "t", PAYLOAD, NOW - DAY + i, NOW) for i in range(1, new + 1)]
    insert_events(conn, rows)
    for k in range(old):
        insert_audit(conn, {"timestamp": NOW - 100 * DAY + k, "actor": "a", "action": "x", "target": "t",
                            "result": "ok"})
    insert_audit(conn, {"timestamp": NOW - 89 * DAY, "actor": "a", "action": "x", "target": "t", "result": "ok"})
    conn.execute("COMMIT")


class _JobLog:
    """Wraps a Writer: records, in the writer thread, each job's kind and the rows it changed, in the
    order the writer ran them (the test hook that stands for "how long was the writer held")."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.order: list[tuple[str, int]] = []
        self.on_retention_job: Any = None

    def run(self, job: Any, kind: str = "retention") -> Any:
        def tracked(conn: sqlite3.Connection) -> Any:
            before = conn.total_changes
            out = job(conn)
            self.order.append((kind, conn.total_changes - before))
            if kind == "retention" and self.on_retention_job is not None:
                self.on_retention_job()
            return out
        return self.writer.run(tracked)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.writer, name)


async def test_retention_steps_are_bounded_and_events_commit_between_them(store_db):
    conn = store_db.migrated()
    _fill(conn, old=300, new=20)
    writer = Writer(conn)
    loop = asyncio.get_running_loop()
    writer.start(loop)
    logged = _JobLog(writer)
    acked: list[asyncio.Future[Any]] = []

    def event_job(c: sqlite3.Connection) -> int:
        return insert_events(c, [("n", 1000, "late", "s", "p", "t", "{}", NOW, NOW)])

    def after_first_step() -> None:  # writer thread: an agent's batch arrives while retention runs
        logged.on_retention_job = None
        loop.call_soon_threadsafe(lambda: acked.append(asyncio.ensure_future(logged.run(event_job, "event"))))

    logged.on_retention_job = after_first_step
    job = RetentionJob(logged, RetentionSettings(events_days=30, audit_days=90, batch_rows=50, pause_ms=0))  # type: ignore[arg-type]
    result = await job.run_once(now=NOW)
    assert acked and await acked[0] == 1
    await writer.stop()

    assert result["events"] == 300 and result["audit"] == 300
    kinds = [k for k, _ in logged.order]
    retention_rows = [n for k, n in logged.order if k == "retention"]
    assert len(retention_rows) > 1, "the purge ran as one writer job"
    assert max(retention_rows) <= 50, f"a writer job deleted {max(retention_rows)} rows (batch is 50)"
    first, last = kinds.index("retention"), len(kinds) - 1 - kinds[::-1].index("retention")
    assert first < kinds.index("event") < last, f"the event did not commit between two retention steps: {kinds}"
    # exactly the old rows went: nothing newer, the late event stays, the audit row inside 90 days stays
    assert conn.execute("SELECT count(*) FROM events WHERE ts < ?", (NOW - 30 * DAY,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 21
    assert [r[0] for r in conn.execute("SELECT timestamp FROM audit_log")] == [NOW - 89 * DAY]


async def test_postgresql_leaves_space_to_its_autovacuum(store_db):
    """No incremental vacuum on PostgreSQL: retention deletes, and autovacuum makes the space reusable."""
    if not store_db.is_pg:
        pytest.skip("SQLite's incremental vacuum has its own tests below")
    conn = store_db.migrated()
    _fill(conn, old=50, new=1)
    assert auto_vacuum_mode(conn) == "autovacuum"
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    result = await RetentionJob(writer, RetentionSettings(batch_rows=20, pause_ms=0)).run_once(now=NOW)
    await writer.stop()
    assert result["events"] == 50 and result["pages_freed"] == 0
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1


def test_delete_step_takes_the_oldest_rows_first_and_stops_at_the_time_budget(store_db):
    conn = store_db.migrated()
    _fill(conn, old=600, new=5)
    assert delete_step(conn, "events", NOW - 30 * DAY, 100, 10.0) == 100
    assert conn.execute("SELECT min(seq) FROM events").fetchone()[0] == 101
    ticks = iter(range(100))  # a clock that has always spent the budget: one chunk, then stop
    assert delete_step(conn, "events", NOW - 30 * DAY, 10_000, 0.5, clock=lambda: float(next(ticks))) == CHUNK_ROWS
    assert delete_step(conn, "events", NOW - 30 * DAY, 10_000, 10.0) == 500 - CHUNK_ROWS
    assert delete_step(conn, "events", NOW - 30 * DAY, 10_000, 10.0) == 0
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 5


async def test_new_database_gives_freed_pages_back_in_steps(tmp_path):
    path = tmp_path / "v.db"
    conn = connect(path)
    migrate(conn)
    assert auto_vacuum_mode(conn) == "incremental"
    _fill(conn, old=3000, new=10)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages_full = conn.execute("PRAGMA page_count").fetchone()[0]
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    steps: list[tuple[str, int]] = []
    job = RetentionJob(writer, RetentionSettings(batch_rows=500, vacuum_pages=50, pause_ms=0),
                       on_step=lambda target, n: steps.append((target, n)))
    result = await job.run_once(now=NOW)
    await writer.stop()
    vac = [n for t, n in steps if t == "vacuum"]
    assert result["events"] == 3000 and result["pages_freed"] > 100
    assert len(vac) > 1 and max(vac) <= 50
    assert free_pages(conn) == 0
    assert conn.execute("PRAGMA page_count").fetchone()[0] < pages_full / 2


def test_delete_step_gives_way_to_queued_jobs_after_one_statement(store_db):
    conn = store_db.migrated()
    _fill(conn, old=3 * CHUNK_ROWS, new=5)
    asked: list[int] = []

    def waiting() -> bool:  # another writer job is queued from the first check on
        asked.append(1)
        return True

    assert delete_step(conn, "events", NOW - 30 * DAY, 10_000, 10.0, yield_to=waiting) == CHUNK_ROWS
    assert asked == [1]
    assert delete_step(conn, "events", NOW - 30 * DAY, 10_000, 10.0, yield_to=lambda: False) == 2 * CHUNK_ROWS
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 5


def test_vacuum_step_stops_at_its_time_budget(tmp_path):
    conn = connect(tmp_path / "b.db")
    migrate(conn)
    _fill(conn, old=2000, new=0)
    conn.execute("DELETE FROM events")
    free = free_pages(conn)
    assert free > 100
    ticks = iter(range(10_000))  # a clock that has always spent the budget: the first check stops it
    assert vacuum_step(conn, 1000, 0.5, clock=lambda: float(next(ticks))) == free - 1
    assert vacuum_step(conn, 1000, 10.0) == max(0, free - 1 - 1000)


def test_vacuum_step_gives_way_to_queued_jobs(tmp_path):
    conn = connect(tmp_path / "y.db")
    migrate(conn)
    _fill(conn, old=2000, new=0)
    conn.execute("DELETE FROM events")
    free = free_pages(conn)
    assert free > 100
    assert vacuum_step(conn, 1000, 10.0, yield_to=lambda: True) == free - 1
