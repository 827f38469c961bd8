"""Ingestor: events accepted but not yet in a commit are bounded in bytes (`room()` holds the hub's reading
until the next commit takes them), and a stalled commit never stops the reading for good.

Real SQLite file and the real batching writer, held at a gate so no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from halswarm.protocol import Event
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime import ingest
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.tracker import SessionTracker
from tests.support.gated_writer import GatedWriter

pytestmark = pytest.mark.timeout(60)


def _ev(seq: int, size: int = 10) -> Event:
    return Event(seq=seq, event_id=f"e{seq}", type="message.updated", session_id=None, project="p",
                 data={"text": "x" * size}, timestamp=1000.0 + seq)


async def _scenario(db_path: str) -> tuple[bool, bool, bool, list[int]]:
    conn = connect(db_path)
    migrate(conn)
    writer = GatedWriter(conn)  # every commit waits for the gate
    writer.start(asyncio.get_running_loop())
    ing = Ingestor(writer, SessionTracker(), Metrics(), lambda node, seq: None)
    try:
        ing.offer("n1", _ev(1), 0.0)
        await asyncio.sleep(0)  # seq 1's commit is running, held at the gate
        await ing.room()  # little pending: no wait at all
        for seq in range(2, 6):  # 4 x 400 bytes pending: above the 1,000-byte mark
            ing.offer("n1", _ev(seq, 400), 0.0)
        waiting = asyncio.create_task(ing.room())
        for _ in range(20):
            await asyncio.sleep(0)
        held = not waiting.done()
        writer.gate.set()  # seq 1 commits; the next batch takes seqs 2-5 off the pending list
        await asyncio.wait_for(waiting, 60)  # ROOM_WAIT_SEC is 120 here: only the commit can release it
        released = True
        writer.gate.clear()
        ingest.ROOM_WAIT_SEC = 0.2  # (monkeypatched: restored after the test)
        for seq in range(6, 12):  # above the mark again, and the commit that would take them is stalled
            ing.offer("n1", _ev(seq, 400), 0.0)
        await asyncio.wait_for(ing.room(), 30)  # gives up after ROOM_WAIT_SEC: reading goes on, slowly
        stalled_ok = True
        writer.gate.set()
        await ing.drain()
    finally:
        await writer.stop()
        conn.close()
    check = sqlite3.connect(db_path)
    try:
        stored = [r[0] for r in check.execute("SELECT seq FROM events WHERE node_id='n1' ORDER BY id")]
    finally:
        check.close()
    return held, released, stalled_ok, stored


def test_pending_bytes_hold_reading_until_a_commit_takes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "PENDING_BYTES_HIGH", 1000)
    monkeypatch.setattr(ingest, "ROOM_WAIT_SEC", 120.0)
    held, released, stalled_ok, stored = asyncio.run(_scenario(str(tmp_path / "s.db")))
    assert held and released and stalled_ok
    assert stored == list(range(1, 12))  # nothing lost or reordered by the holding
