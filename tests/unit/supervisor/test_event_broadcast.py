"""The shared frame buffer of the event stream: one encoding per event, bounded, and a cursor that fell
out of it is told to read the store (never given a gap)."""

from __future__ import annotations

import asyncio
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


async def test_every_waiting_subscriber_is_woken_in_slices_and_timed_out_waits_are_not_kept() -> None:
    import asyncio

    from halswarm.supervisor.runtime.broadcast import WAKE_SLICE

    b = EventBroadcast()
    n = 3 * WAKE_SLICE + 5
    for _ in range(n):
        b.open_stream()
    assert await b.wait(0, 0.01) is False  # nothing announced: the keepalive path
    woken: list[int] = []

    async def sub(i: int) -> None:
        assert await b.wait(0, 60)
        woken.append(i)

    tasks = [asyncio.create_task(sub(i)) for i in range(n)]
    await asyncio.sleep(0)  # every subscriber waits
    b.publish(0, [_row(1)], None)
    await asyncio.sleep(0)  # the broadcast task renders and announces: the first slice is resumed
    await asyncio.sleep(0)
    assert 0 < len(woken) <= WAKE_SLICE  # not all in one loop turn
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert sorted(woken) == list(range(n))
    assert await b.wait(1, 0.01) is False  # nothing after id 1 yet
    assert await b.wait(0, 0.01) is True  # id 1 was announced: no waiting
    for _ in range(4 * n + 200):  # many keepalive timeouts leave no pile of dead futures behind
        b._waiters.append(asyncio.get_running_loop().create_future())
        b._waiters[-1].cancel()
    assert await b.wait(1, 0.001) is False
    assert len(b._waiters) <= 2 * n + 64


async def test_streams_at_the_same_cursor_share_one_chunk_bounded_in_bytes() -> None:
    b = EventBroadcast()
    b.open_stream()
    b.publish(0, [_row(i) for i in range(1, 101)], None)
    await _settle(b)
    frames, _ = b.after(0, {}, 500, 2**20)
    one = len(frames[0])
    first = b.chunk_after(0, {}, 500, 10 * one)
    again = b.chunk_after(0, {}, 500, 10 * one)
    assert first is not None and again is not None
    assert again[0] is first[0]  # one join for every stream at this cursor
    assert first[0] == b"".join(frames[:10]) and first[1] == 10  # stops at max_bytes
    rest = b.chunk_after(first[1], {}, 500, 2**20)
    assert rest is not None and rest[0] == b"".join(frames[10:]) and rest[1] == 100
    assert b.chunk_after(100, {}, 500, 2**20) == (b"", 100)
    filtered = b.chunk_after(0, {"type": "message.*"}, 3, 2**20)
    assert filtered == (b"".join(frames[:3]), 3)
    b.publish(100, [_row(101)], None)  # a new event: the shared chunk is joined afresh
    await _settle(b)
    assert b.chunk_after(95, {}, 500, 2**20) == (b"".join(frames[95:]) + b.after(100, {}, 500, 2**20)[0][0], 101)
    small = EventBroadcast(ring_events=10)
    small.open_stream()
    small.publish(0, [_row(i) for i in range(1, 21)], None)
    await _settle(small)
    assert small.chunk_after(5, {}, 500, 2**20) is None  # behind the buffer: read the store


def _srow(i: int, node: str = "n1") -> tuple:
    r = _row(i, node)
    return (i, *r[:7], r[7])


async def test_a_tailed_buffer_takes_the_store_tails_ranges_and_leaves_local_commits_to_the_feed() -> None:
    """PostgreSQL with several supervisors: the ring follows the store tail (every supervisor's events by
    id up to the safe horizon), this supervisor's own commits go only to the routing feed's queues."""
    b = EventBroadcast()
    b.tailed = True
    b.open_stream()
    assert not b.wanted  # a stream alone: the ingest need not read its rows back
    feed: asyncio.Queue = asyncio.Queue()
    b.queues.add(feed)
    assert b.wanted
    b.publish(0, [_row(1)], None)  # a local commit: to the feed only
    await _settle(b)
    assert feed.qsize() == 1 and b.after(0, {}, 500, 2**20) is None
    b.publish_tail(10, [], 10)  # the tail starts following at its horizon
    assert b.after(10, {}, 500, 2**20) == ([], 10)
    b.publish_tail(10, [_srow(11), _srow(13, "n2")], 15)  # 12 rolled back; 14, 15 consumed, never stored
    b.publish_tail(15, [_srow(16)], 16)
    frames, cursor = b.after(10, {}, 500, 2**20)
    assert cursor == 16 and [f.split(b"\n", 1)[0] for f in frames] == [b"id: 11", b"id: 13", b"id: 16"]
    frames, cursor = b.after(11, {"node_id": "n2"}, 500, 2**20)
    assert cursor == 16 and len(frames) == 1
    assert b.after(9, {}, 500, 2**20) is None  # before the tail began: the store
    b.publish_tail(20, [_srow(21)], 21)  # not where the last range ended: the ring starts again
    assert b.after(16, {}, 500, 2**20) is None and b.after(20, {}, 500, 2**20)[1] == 21
