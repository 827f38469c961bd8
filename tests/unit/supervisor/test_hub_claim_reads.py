"""The hub's per-event path reads the store at most a few times per new session, not once per event.

The two-supervisor stall (bench/ha_ingest.py): 100 agents per supervisor each sent 200 events of a
session new to the supervisor; for every one of them the hub's `tracker.claim` asked the store for the
session (the tracker's loader: a synchronous read on the event loop, a round trip to PostgreSQL) until the
session's first batch committed. The loop spent 30 s and more on those reads before it ran the callback of
the writer's first commit: nothing acked. Here the real Hub, Ingestor, SessionTracker and batching Writer
on SQLite, with a loader that counts its calls; frames go through `Hub._on_frame` back to back, as the
connection loop feeds frames already received (without giving the loop to the flush in between).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from halswarm.core.model import Session
from halswarm.protocol import Register
from halswarm.protocol.codec import encode_raw
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.hub import Hub, HubSettings
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.tracker import SessionTracker
from tests.support.waiting import on_loop

EVENTS = 200


class RecordingSocket:
    remote_address = ("127.0.0.1", 40000)

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, frame: str) -> None:
        self.sent.append(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def _acked(ws: RecordingSocket) -> int:
    seqs = [json.loads(f)["payload"]["seq"] for f in ws.sent if json.loads(f)["type"] == "ack"]
    return max(seqs, default=0)


def _hub(tmp_path: Path, tracker: SessionTracker) -> tuple[Hub, Writer]:
    """The real Hub and Ingestor over a batching Writer on a fresh SQLite file (call on the running loop)."""
    conn = connect(str(tmp_path / "hub.db"))
    migrate(conn)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    metrics = Metrics()
    hub = Hub(HubSettings(host="127.0.0.1", port=0, token="t" * 32), {}, tracker, None, writer,  # type: ignore[arg-type]
              metrics)
    hub.ingestor = Ingestor(writer, tracker, metrics, hub.send_ack, hub.send_rewind)
    return hub, writer


def test_events_of_a_new_session_read_the_store_a_bounded_number_of_times(tmp_path: Path) -> None:
    loads: list[str] = []

    def loader(sid: str) -> Session | None:
        loads.append(sid)
        return None  # not stored: a new session

    async def run() -> tuple[int, int]:
        tracker = SessionTracker(loader=loader)
        hub, writer = _hub(tmp_path, tracker)
        ws = RecordingSocket()
        try:
            link = await hub._register(ws, Register(node_id="n1"), None)  # type: ignore[arg-type]
            assert link is not None
            for seq in range(1, EVENTS + 1):
                frame = encode_raw("event", {"seq": seq, "event_id": f"e{seq}", "type": "message.part.delta",
                                             "session_id": "ses_new", "project": "p", "data": {"delta": "x"},
                                             "timestamp": 1.0}, timestamp=1.0)
                await hub._on_frame(link, frame)
            before_commit = len(loads)
            await hub.ingestor.drain()
            await on_loop(lambda: _acked(ws) == EVENTS, "every event acked", 30)
            return before_commit, len(loads)
        finally:
            for t in list(hub._bg):
                t.cancel()
            await writer.stop()

    before_commit, total = asyncio.run(run())
    assert before_commit <= 2, f"{before_commit} store reads for {EVENTS} events of one new session"
    assert total <= 4


def test_fresh_session_ids_cost_the_event_loop_no_synchronous_read(tmp_path: Path) -> None:
    """A node naming a new session id in every event (and in its register snapshot): each id is read once,
    off the loop through the batch loader, and the synchronous loader is never called."""
    sync: list[str] = []
    batches: list[list[str]] = []

    def loader(sid: str) -> Session | None:
        sync.append(sid)
        return None

    async def batch(ids: list[str]) -> dict[str, Session]:
        batches.append(list(ids))
        await asyncio.sleep(0)
        return {}

    async def run() -> None:
        tracker = SessionTracker(loader=loader, batch_loader=batch)
        hub, writer = _hub(tmp_path, tracker)
        ws = RecordingSocket()
        try:
            reg = Register(node_id="n1", sessions=[{"id": "ses_snap_a", "status": "idle"},
                                                   {"id": "ses_snap_b", "status": "running"}])
            link = await hub._register(ws, reg, None)  # type: ignore[arg-type]
            assert link is not None
            for seq in range(1, EVENTS + 1):
                frame = encode_raw("event", {"seq": seq, "event_id": f"e{seq}", "type": "message.part.delta",
                                             "session_id": f"ses_{seq}", "project": "p", "data": {"delta": "x"},
                                             "timestamp": 1.0}, timestamp=1.0)
                await hub._on_frame(link, frame)
            await hub.ingestor.drain()
            await on_loop(lambda: _acked(ws) == EVENTS, "every event acked", 30)
            assert tracker.owner(f"ses_{EVENTS}") == "n1" and tracker.get("ses_snap_b") is not None
        finally:
            for t in list(hub._bg):
                t.cancel()
            await writer.stop()

    asyncio.run(run())
    assert sync == [], f"{len(sync)} synchronous reads on the event loop"
    assert batches[0] == ["ses_snap_a", "ses_snap_b"]
    assert sorted(i for b in batches[1:] for i in b) == sorted(f"ses_{n}" for n in range(1, EVENTS + 1))


class ScriptedSocket(RecordingSocket):
    """Frames to receive, in order; records the close code the hub chose."""

    def __init__(self, frames: list[str]) -> None:
        super().__init__()
        self._frames = list(frames)
        self.closed: tuple[int, str] | None = None

    async def recv(self) -> str:
        return self._frames.pop(0)

    def __aiter__(self) -> ScriptedSocket:
        return self

    async def __anext__(self) -> str:
        if not self._frames:
            await asyncio.sleep(3600)  # an open connection with nothing more to say
        return self._frames.pop(0)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


def test_a_store_that_fails_the_session_read_closes_the_connection_cleanly(tmp_path: Path) -> None:
    """The off-loop session read of an event's new session fails (the database is gone or locked): the hub
    neither acks that event nor lets the error escape the connection handler as a traceback; it closes
    the connection with 1011 so that the agent reconnects and resends from its outbox."""
    import sqlite3

    from halswarm.protocol.codec import encode

    async def batch(ids: list[str]) -> dict[str, Session]:
        if "ses_broken" in ids:
            raise sqlite3.OperationalError("disk I/O error")
        return {}

    async def run() -> ScriptedSocket:
        tracker = SessionTracker(loader=lambda sid: None, batch_loader=batch)
        hub, writer = _hub(tmp_path, tracker)
        events = [encode_raw("event", {"seq": seq, "event_id": f"e{seq}", "type": "message.part.delta",
                                       "session_id": sid, "project": "p", "data": {}, "timestamp": 1.0},
                             timestamp=1.0) for seq, sid in ((1, "ses_ok"), (2, "ses_broken"))]
        ws = ScriptedSocket([encode(Register(node_id="n1")), *events])
        try:
            await asyncio.wait_for(hub._handle(ws), 30)  # type: ignore[arg-type]
            await hub.ingestor.drain()
        finally:
            for t in list(hub._bg):
                t.cancel()
            await writer.stop()
        return ws

    ws = asyncio.run(run())
    assert ws.closed == (1011, "database unavailable")
    assert _acked(ws) <= 1, "the event whose session could not be read was acked"
