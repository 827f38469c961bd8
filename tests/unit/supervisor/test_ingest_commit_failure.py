"""Ingestor: a failed commit never leads to an ack for events that are not stored.

Real SQLite file and the real batching writer; only one commit is made to fail, while more events of
the same node arrive during it (the case where a cumulative ack used to cover the lost ones).
"""

from __future__ import annotations

import asyncio
import sqlite3

from halswarm.protocol import Event
from halswarm.protocol.hub_link import ACCEPTED, GAP
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.tracker import SessionTracker
from tests.support.gated_writer import GatedWriter


def _ev(seq: int) -> Event:
    return Event(seq=seq, event_id=f"e{seq}", type="message.updated", session_id=None, project="p",
                 data={"n": seq}, timestamp=1000.0 + seq)


async def _scenario(db_path: str) -> tuple[list[int], list[int], list[tuple[str, int]], list[int]]:
    conn = connect(db_path)
    migrate(conn)
    writer = GatedWriter(conn, fail_jobs=1)  # seq 1's commit waits for the gate, then fails
    writer.start(asyncio.get_running_loop())
    acks: list[int] = []
    rewinds: list[tuple[str, int]] = []
    ing = Ingestor(writer, SessionTracker(), Metrics(), lambda node, seq: acks.append(seq),
                   lambda node, seq: rewinds.append((node, seq)))
    try:
        assert ing.offer("n1", _ev(1), 0.0) == (ACCEPTED, 1)
        await asyncio.sleep(0.05)  # seq 1's commit is now running (and will fail)
        for seq in range(2, 6):
            assert ing.offer("n1", _ev(seq), 0.0) == (ACCEPTED, seq)
        writer.gate.set()
        await ing.drain()
        acked_before_resend = list(acks)
        # The agent resends from where it was told; seq 6 first would be a gap.
        assert ing.offer("n1", _ev(6), 0.0) == (GAP, 1)
        for seq in range(1, 7):
            assert ing.offer("n1", _ev(seq), 0.0) == (ACCEPTED, seq)
        await ing.drain()
    finally:
        await writer.stop()
        conn.close()
    check = sqlite3.connect(db_path)
    try:
        stored = [r[0] for r in check.execute("SELECT seq FROM events WHERE node_id='n1' ORDER BY id")]
    finally:
        check.close()
    return acked_before_resend, acks, rewinds, stored


def test_failed_commit_drops_queued_events_and_acks_nothing_unstored(tmp_path):
    early, acks, rewinds, stored = asyncio.run(asyncio.wait_for(_scenario(str(tmp_path / "s.db")), 20))
    # Nothing was acked before the resend (seqs 2-5 alone would have earned "ack 5"), then in order.
    assert early == []
    assert acks and acks == sorted(acks) and acks[-1] == 6
    assert rewinds == [("n1", 1)]
    # Stored exactly once, in order, no hole: seqs 2-5 of the first attempt were not stored on their own.
    assert stored == [1, 2, 3, 4, 5, 6]
