"""The store tail of a shared PostgreSQL (halswarm.supervisor.runtime.event_tail) over a fake store: it
NOTIFYs once per wake-up, probes and reads only while a stream is open, hands the ring every stored event
up to the safe horizon in id order, and a stream opening gets a horizon from a probe made after it asked."""

from __future__ import annotations

import asyncio
import sqlite3
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest

from halswarm.store.repos.events import events_between, notify_events, probe_horizon
from halswarm.supervisor.features.events.service import EventsService
from halswarm.supervisor.runtime.broadcast import EventBroadcast
from halswarm.supervisor.runtime.event_tail import EventTail
from tests.support.waiting import on_loop

pytestmark = pytest.mark.timeout(30)


class FakeStore:
    """What the tail's three statements see: stored rows by id, the sequence, the lock holders."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[Any, ...]] = {}
        self.assigned = 0
        self.holders: list[str] = []
        self.notifies = 0
        self.probes = 0

    def store(self, *ids: int) -> None:
        for i in ids:
            self.rows[i] = (i, "n1", i, f"e{i}", None, "p", "t", "{}", 1_700_000_000.0)

    async def run(self, fn: Any) -> Any:
        await asyncio.sleep(0)
        if fn is notify_events:
            self.notifies += 1
            return None
        if fn is probe_horizon:
            self.probes += 1
            return self.assigned, list(self.holders)
        assert isinstance(fn, partial) and fn.func is events_between
        after, until_id, limit = fn.keywords["after_id"], fn.keywords["until_id"], fn.keywords["limit"]
        got = [self.rows[i] for i in sorted(self.rows) if after < i <= until_id][:limit]
        return got, (got[-1][0] if len(got) == limit else until_id)


def ids_in_ring(b: EventBroadcast, cursor: int) -> list[int]:
    got = b.after(cursor, {}, 10_000, 2**30)
    assert got is not None
    return [int(f.split(b"\n", 1)[0].removeprefix(b"id: ")) for f in got[0]]


async def test_a_commit_notifies_the_others_and_no_stream_means_no_probe() -> None:
    store, b = FakeStore(), EventBroadcast()
    tail = EventTail(store, b, poll=0.05)
    await tail.start()
    try:
        assert b.tailed
        tail.committed()
        await on_loop(lambda: store.notifies == 1, "one NOTIFY", 10)
        await on_loop(lambda: tail.turns >= 5, "a few poll periods", 10)  # nobody streams: nothing probed or read
        assert store.probes == 0 and tail.published is None
    finally:
        await tail.stop()


async def test_a_stream_gets_every_settled_event_in_id_order_and_nothing_above_the_horizon() -> None:
    store, b = FakeStore(), EventBroadcast()
    tail = EventTail(store, b, poll=0.05)
    store.assigned = 5
    store.store(1, 2, 3, 4, 5)
    await tail.start()
    try:
        b.open_stream()
        assert await tail.fresh_horizon() == 5
        await on_loop(lambda: tail.published == 5, "the ring following from 5", 10)
        # Another supervisor's transaction drew 6..8 and is still open; this one committed 9..10.
        store.assigned, store.holders = 10, ["other/1"]
        store.store(9, 10)
        tail.committed()
        await on_loop(lambda: store.probes >= 4, "probes while a transaction is open", 10)
        assert tail.safe == 5 and ids_in_ring(b, 5) == []
        store.holders = []  # it committed 6 and 8 (7 was consumed by an ON CONFLICT, never stored)
        store.store(6, 8)
        tail.on_notify("10")
        await on_loop(lambda: tail.published == 10, "the ring up to 10", 10)
        assert ids_in_ring(b, 5) == [6, 8, 9, 10]
        # The poll finds what a lost NOTIFY would have announced.
        store.assigned = 12
        store.store(11, 12)
        await on_loop(lambda: tail.published == 12, "the poll reading 11..12", 10)
        assert ids_in_ring(b, 5) == [6, 8, 9, 10, 11, 12]
        tail.on_notify("12")  # nothing new: no wake-up
        assert tail.remote_wakeups == 1
    finally:
        await tail.stop()


async def test_a_stream_opening_waits_for_a_probe_made_after_it_asked() -> None:
    store, b = FakeStore(), EventBroadcast()
    tail = EventTail(store, b, poll=10.0)
    store.assigned, store.holders = 7, ["x/1"]
    await tail.start()
    try:
        b.open_stream()
        ask = asyncio.ensure_future(tail.fresh_horizon())
        await on_loop(lambda: store.probes >= 2, "probes retried while the first candidate waits", 10)
        assert not ask.done()  # no horizon is known yet: nothing safe to start from
        store.holders = []
        assert await asyncio.wait_for(ask, 10) == 7
    finally:
        await tail.stop()


class SqliteStore(FakeStore):
    """The probe answers of FakeStore, the rows in a real SQLite `events` table (the stream's own reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = sqlite3.connect(":memory:")
        self.conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, node_id, seq, event_id,"
                          " session_id, project, type, data, ts)")

    def store(self, *ids: int) -> None:
        for i in ids:
            self.conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)",
                              (i, "n1", i, f"e{i}", None, "p", "t", "{}", 1_700_000_000.0))
        self.assigned = max(self.assigned, *ids)

    async def run(self, fn: Any) -> Any:
        if fn is notify_events or fn is probe_horizon:
            return await super().run(fn)
        return fn(self.conn)


async def test_a_resumed_stream_gets_what_was_stored_since_before_any_new_event() -> None:
    """`Last-Event-ID` on a quiet store: the events after it come at once (not after a keepalive)."""
    store = SqliteStore()
    store.store(1, 2, 3, 4, 5)
    b = EventBroadcast()
    tail = EventTail(store, b, poll=30.0)  # no poll during the test: only the stream's own request wakes it
    await tail.start()
    svc = EventsService(store, SimpleNamespace(broadcast=b), tail)  # type: ignore[arg-type]
    gen = svc.stream({}, last_seen=2)
    try:
        text = b""
        while b"id: 5" not in text:  # one write after another: no keepalive may come before the backlog
            chunk = await asyncio.wait_for(anext(gen), 20)
            assert b"keepalive" not in chunk, "the resumed stream waited for a new event to read the backlog"
            text += chunk
        assert text.startswith(b": connected\n\n")
        assert [int(line[4:]) for line in text.split(b"\n") if line.startswith(b"id: ")] == [3, 4, 5]
    finally:
        await gen.aclose()
        await tail.stop()


class FakeListener:
    def __init__(self) -> None:
        self.subs: list[tuple[str, Any, bool]] = []

    def subscribe(self, channel: str, callback: Any, *, own: bool = True) -> None:
        self.subs.append((channel, callback, own))

    def unsubscribe(self, channel: str, callback: Any) -> None:
        self.subs = [s for s in self.subs if (s[0], s[1]) != (channel, callback)]


async def test_lag_and_horizon_waits_in_the_metrics_and_the_shared_listener_subscription() -> None:
    from halswarm.supervisor.metrics import Metrics

    metrics = Metrics()
    metrics.shared_store(lambda: None)
    listener = FakeListener()
    store, b = FakeStore(), EventBroadcast()
    tail = EventTail(store, b, listener, poll=0.05, metrics=metrics)
    store.assigned = 5
    store.store(1, 2, 3, 4, 5)

    def lag() -> float | None:
        return metrics.registry.get_sample_value("hal_o_swarm_event_tail_lag_events")

    def waits() -> float:
        return metrics.registry.get_sample_value("hal_o_swarm_event_tail_horizon_waits_total") or 0.0

    await tail.start()
    try:
        # The tail listens through the supervisor's one listener: hal_events, not its own NOTIFYs.
        assert [(c, o) for c, _, o in listener.subs] == [("hal_events", False)]
        b.open_stream()
        await on_loop(lambda: tail.published == 5, "following from 5", 10)
        assert lag() == 0 and waits() == 0
        store.assigned, store.holders = 10, ["other/1"]  # 6..10 drawn, a transaction still open
        store.store(9, 10)
        tail.committed()
        await on_loop(lambda: lag() == 5 and waits() >= 2, "the lag while the horizon waits", 10)
        store.holders = []
        store.store(6, 7, 8)
        await on_loop(lambda: tail.published == 10 and lag() == 0, "caught up", 10)
        assert waits() == tail.horizon_waits
        b.close_stream()
        await on_loop(lambda: tail.published is None and lag() == 0, "not following", 10)
    finally:
        await tail.stop()
    assert listener.subs == []
