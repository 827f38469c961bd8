"""Property test of the hub's frame handling (issue 15 point 6): no frame an agent can send crashes it.

The real Hub, Ingestor, SessionTracker, Metrics and batching Writer on a real SQLite file; only the
WebSocket connection is a stand-in that records what the hub sends. Every frame goes through
``Hub._on_frame`` on a registered link, the way the connection loop feeds it: it must return (an
exception there would end the agent's connection), answer an undecodable frame with an `error` frame,
and leave the node registered.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from halswarm.protocol import ProtocolError, Register, decode, encode
from halswarm.protocol.codec import encode_raw
from halswarm.protocol.messages import MESSAGE_TYPES
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.hub import Hub, HubSettings
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.tracker import SessionTracker
from tests.support.protocol_strategies import PROPS, finite, json_objects, json_values, messages, nonempty, text

NODE = "prop-node"


class RecordingSocket:
    """Stands in for the agent's WebSocket: records frames sent and closes."""

    remote_address = ("127.0.0.1", 40000)

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: list[tuple[int, str]] = []

    async def send(self, frame: str) -> None:
        self.sent.append(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed.append((code, reason))


def session_states(times: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": nonempty},
        optional={"status": st.sampled_from(["running", "idle", "completed", "error"]) | text,
                  "project": text, "started_at": times, "last_activity": times,
                  "tokens": json_values, "cost_usd": json_values, "model": json_values})


# Times an agent may send for a session: seconds of this era, and (wild) anything at all.
SANE_TIMES = st.floats(min_value=0, max_value=4e9) | st.none()
WILD_TIMES = finite | st.integers() | text | json_values


def frames(times: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        messages.map(lambda m: encode(m, timestamp=1.0)),
        # a re-register of this node, with any session snapshot
        st.lists(session_states(times), max_size=3).map(
            lambda ss: encode_raw("register", {"node_id": NODE, "projects": [{"name": "alpha", "directory": "/srv/a"}],
                                               "sessions": ss}, timestamp=1.0)),
        # events in and out of sequence, with any data and timestamp
        st.builds(lambda seq, data, ts, sid: encode_raw("event", {"seq": seq, "event_id": f"e{seq}", "type": "x.y",
                                                                  "session_id": sid, "project": "alpha", "data": data,
                                                                  "timestamp": ts}, timestamp=1.0),
                  st.integers(1, 8), json_values, finite, st.none() | nonempty),
        st.builds(lambda t, p: encode_raw(t, p, timestamp=1.0), st.sampled_from(sorted(MESSAGE_TYPES)),
                  json_values | json_objects),
        st.builds(lambda doc: json.dumps(doc), json_values),
    )


async def _start(db: Path) -> tuple[Hub, Any, RecordingSocket, Writer, Ingestor]:
    conn = connect(str(db))
    migrate(conn)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    tracker, metrics = SessionTracker(), Metrics()
    hub = Hub(HubSettings(host="127.0.0.1", port=0, token="t" * 32), {}, tracker, None, writer,  # type: ignore[arg-type]
              metrics)
    hub.ingestor = Ingestor(writer, tracker, metrics, hub.send_ack, hub.send_rewind)
    ws = RecordingSocket()
    link = await hub._register(ws, Register(node_id=NODE), None)  # type: ignore[arg-type]
    return hub, link, ws, writer, hub.ingestor


def _feed(db: Path, times: st.SearchStrategy[Any]) -> int:
    """Feed generated frames to a registered link of a real hub; returns how many were handled."""
    loop = asyncio.new_event_loop()
    hub, link, ws, writer, ingestor = loop.run_until_complete(_start(db))
    handled = 0

    @PROPS
    @given(frame=frames(times))
    def check(frame: str | bytes) -> None:
        nonlocal handled
        ws.sent.clear()
        loop.run_until_complete(hub._on_frame(link, frame))
        loop.run_until_complete(asyncio.sleep(0))  # let the acks and writes it spawned run
        handled += 1
        try:
            decode(frame, max_bytes=hub.s.max_frame_bytes)
        except ProtocolError as exc:
            # Acks of earlier events are committed by the writer thread and may be sent at any point,
            # before or after this frame's answer: look for the error frame among everything sent.
            errors = [r for r in map(decode, ws.sent) if r.type == "error"]
            assert errors, f"no error frame for an undecodable frame ({exc.code})"
            assert errors[-1].payload.code == exc.code
        assert hub.links.get(NODE) is link and hub.nodes[NODE].status == "online"
        assert not ws.closed

    try:
        check()
        loop.run_until_complete(ingestor.drain())
        failed = [t for t in hub._bg if t.done() and not t.cancelled() and t.exception() is not None]
        assert not failed, failed
    finally:
        for t in list(hub._bg):
            t.cancel()
        loop.run_until_complete(writer.stop())
        loop.close()
    return handled


def test_no_frame_crashes_the_hub(tmp_path: Path) -> None:
    assert _feed(tmp_path / "hub.db", SANE_TIMES) >= 100


def test_session_snapshots_with_any_times_do_not_crash_the_hub(tmp_path: Path) -> None:
    """Issue 15 point 1: a snapshot with a millisecond or absurd ``started_at`` must not break the hub.
    Needs ``timeutil.iso`` that never raises (the ingest work of the same issue); skipped until then."""
    from halswarm.core.timeutil import iso

    try:
        iso(1e20)
    except (OverflowError, OSError, ValueError):
        pytest.skip("timeutil.iso still raises on out-of-range times (issue 15 point 1, ingest branch)")
    assert _feed(tmp_path / "hub.db", WILD_TIMES) >= 100
