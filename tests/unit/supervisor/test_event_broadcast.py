"""The shared frame buffer of the event stream: one encoding per event, bounded, and a cursor that fell
out of it is told to read the store (never given a gap)."""

from __future__ import annotations

import json
import sqlite3

from halswarm.store.repos.events import event_to_api
from halswarm.supervisor.runtime.broadcast import EventBroadcast, encode_event


def _row(i: int, node: str = "n1", ev_type: str = "message.part.delta") -> tuple:
    return (node, i, f"e{i}", "ses", "p", ev_type, json.dumps({"n": i, "big": 2**70}), 1_700_000_000.5 + i, 0.0)


async def _settle(b: EventBroadcast) -> None:
    if b._task is not None:
        await b._task  # it ends once the published batches are rendered


def test_a_frame_has_the_same_json_as_the_list_route() -> None:
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, node_id, seq, event_id, session_id, project, type,"
                 " data, ts)")
    r = _row(7)
    conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", (3, *r[:8]))
    stored = conn.execute("SELECT * FROM events").fetchone()
    frame = encode_event((3, *r[:7], r[7]))
    head, data = frame.split(b"\n", 1)
    assert head == b"id: 3"
    assert json.loads(data.removeprefix(b"data: ")) == event_to_api(stored)


async def test_each_event_is_encoded_once_and_the_buffer_is_bounded() -> None:
    b = EventBroadcast(ring_events=50)
    b.open_stream()
    for start in range(0, 200, 20):
        b.publish(start, [_row(i) for i in range(start + 1, start + 21)], None)
    await _settle(b)
    assert b.encoded._value.get() == 200
    assert len(b._ids) - b._head == 50
    frames, cursor = b.after(150, {}, 500, 2**20)
    assert cursor == 200 and len(frames) == 50
    assert b.after(149, {}, 500, 2**20) is None  # 150 is gone: read the store
    frames, cursor = b.after(150, {"type": "other"}, 500, 2**20)
    assert frames == [] and cursor == 200


async def test_a_batch_nobody_saw_restarts_the_buffer_after_it() -> None:
    b = EventBroadcast()
    b.open_stream()
    b.publish(0, [_row(1), _row(2)], None)
    await _settle(b)
    b.publish(5, [_row(6)], None)  # ids 3..5 were committed while nobody listened
    await _settle(b)
    assert b.after(2, {}, 500, 2**20) is None
    frames, cursor = b.after(5, {}, 500, 2**20)
    assert cursor == 6 and len(frames) == 1


async def test_the_last_stream_closing_frees_the_buffer() -> None:
    b = EventBroadcast()
    b.open_stream()
    b.publish(0, [_row(1)], None)
    await _settle(b)
    b.close_stream()
    assert b._ids == [] and b.covered_from is None and not b.wanted
