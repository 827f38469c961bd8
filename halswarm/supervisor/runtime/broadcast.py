"""Live fan-out of committed events, off the ingest path (issue 22 point 5).

The Ingestor hands each committed batch over with `publish` (an append, nothing more). A task of this
module then renders every event ONCE into its SSE frame and keeps the frames in a shared ring, bounded
in events and in bytes. A stream subscriber is only a cursor (the last id it sent) into that ring: it
takes every frame after its cursor in one chunk per wake-up. A subscriber whose cursor fell out of the
ring (it read slower than events arrived) is not dropped: it reads the events it missed from the store
by id, then rejoins the ring. Nothing per subscriber is held but the chunk it is sending.

Consumers that want event dicts (the routing feed) still get a bounded queue each, filled by the same
task; those are dropped when full, as before (the feed re-subscribes and counts it).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from halswarm.core.sse import sse_frame
from halswarm.core.timeutil import iso
from halswarm.store.repos.events import EventRow, StreamRow, event_to_api, row_to_api

log = logging.getLogger(__name__)

RING_EVENTS = 10_000  # frames kept for subscribers that are behind
RING_BYTES = 32 * 2**20
WAKE_INTERVAL = 0.05  # subscribers are woken at most this often: each write then carries more events
WAKE_SLICE = 16  # subscribers resumed per event-loop turn: agents' frames and commits are served in between
_P = "hal_o_swarm_"

# (id, node_id, session_id, project, type, frame): what a subscriber needs to filter and send.
Entry = tuple[int, str | None, str | None, str | None, str, bytes]
_FILTER_KEYS = ("node_id", "session_id", "project", "type")


def encode_event(r: StreamRow) -> bytes:
    """The SSE frame of a stored event (same JSON fields and order as `event_to_api`). The `data` text
    is stored JSON already (scrubbed at ingest), so it is spliced in rather than parsed and re-encoded."""
    head = orjson.dumps({"id": r[0], "node_id": r[1], "seq": r[2], "event_id": r[3], "session_id": r[4],
                         "project": r[5], "type": r[6]})
    body = b"%s,\"data\":%s,\"timestamp\":%s}" % (head[:-1], r[7].encode() if r[7] else b"null",
                                                  orjson.dumps(iso(r[8])))
    return sse_frame(r[0], body)


def entry_of(r: StreamRow) -> Entry:
    return r[0], r[1], r[4], r[5], r[6], encode_event(r)


def matches_entry(e: Entry, f: dict[str, Any]) -> bool:
    """Whether a frame passes a stream's filters (`type` may end in `*` for a prefix); `since` is the
    replay's business, not the live part's."""
    if f.get("node_id") and e[1] != f["node_id"]:
        return False
    if f.get("session_id") and e[2] != f["session_id"]:
        return False
    if f.get("project") and e[3] != f["project"]:
        return False
    t = f.get("type")
    if t:
        return e[4].startswith(t[:-1]) if t.endswith("*") else e[4] == t
    return True


class EventBroadcast:
    def __init__(self, registry: CollectorRegistry | None = None, ring_events: int = RING_EVENTS,
                 ring_bytes: int = RING_BYTES) -> None:
        r = registry or CollectorRegistry()
        self.encoded = Counter(_P + "stream_frames_encoded_total",
                               "Live events rendered into an SSE frame (once per event, whatever the subscribers)",
                               registry=r)
        self.catchups = Counter(_P + "stream_catchups_total",
                                "Times a stream subscriber fell out of the shared buffer and read from the store",
                                registry=r)
        self.ring_bytes_gauge = Gauge(_P + "stream_buffer_bytes", "Bytes of SSE frames in the shared buffer",
                                      registry=r)
        self.subscribers_gauge = Gauge(_P + "stream_subscribers", "Open event stream subscribers", registry=r)
        self.ring_events = ring_events
        self.ring_bytes = ring_bytes
        self._ids: list[int] = []
        self._entries: list[Entry] = []
        self._head = 0  # index of the oldest kept entry
        self._bytes = 0
        self.covered_from: int | None = None  # every committed id above this is in the ring (or coming)
        self._inbox: deque[tuple[int, list[EventRow], list[Any] | None]] = deque()
        # PostgreSQL (several supervisors, issue 21): the ring is fed by the store tail (every supervisor's
        # commits, read by id up to the safe horizon; runtime/event_tail.py), not by this one's commits, which
        # then go to the queues only (the routing feed acts on what this supervisor ingested).
        self.tailed = False
        self._upto: int | None = None  # the tail: every id up to here is in the ring (or was never stored)
        self._task: asyncio.Task[None] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()  # subscribers waiting for the next announcement
        self._turn = 0  # where the next announcement starts waking (rotates: nobody is always first)
        self._woken_upto = 0  # the newest id announced to the subscribers
        self._last_wake = 0.0
        self._wake_handle: asyncio.TimerHandle | None = None
        self._chunk_key: tuple[int, int, int, int] | None = None  # what `_chunk` was joined for
        self._chunk: tuple[bytes, int] = (b"", 0)
        self.streams = 0
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()

    # ----- who listens -----

    @property
    def wanted(self) -> bool:
        """Whether committed batches should be handed over (someone listens)."""
        return bool(self.queues or (self.streams and not self.tailed))

    def open_stream(self) -> None:
        self.streams += 1
        self.subscribers_gauge.set(self.streams)

    def close_stream(self) -> None:
        self.streams -= 1
        self.subscribers_gauge.set(self.streams)
        if not self.streams:  # the ring stops following commits: start afresh with the next listener
            self._clear()

    # ----- the ingest side: O(1) -----

    def publish(self, last_id: int, rows: list[EventRow], stored_rows: list[Any] | None) -> None:
        """A committed batch: `rows` got the ids after `last_id` in order, unless `stored_rows` (read back
        because some rows were ignored as duplicates) says which rows were stored."""
        self._inbox.append((last_id, rows, stored_rows))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="event-broadcast")

    def publish_tail(self, after_id: int, rows: list[StreamRow], upto: int) -> None:
        """The store tail read every stored event with `after_id` < id <= `upto` (`rows`, by id): for the
        streams only. Rendered right here: the tail's reads already run off the event loop."""
        if not self.streams:
            return
        restart = self._upto != after_id
        if restart:  # not where the last range ended: the ring starts again here
            self._clear()
            self.covered_from = after_id
        if rows:
            self._append(entry_of(r) for r in rows)
            self.encoded.inc(len(rows))
        self._upto = upto
        if rows or restart:  # a restart: streams behind its start read the store up to it now
            self._wake()

    async def _drain(self) -> None:
        while self._inbox:
            last_id, rows, stored_rows = self._inbox.popleft()
            try:
                if not self.tailed:
                    self._render(last_id, rows, stored_rows)
                elif self.queues:
                    self._to_queues(last_id, rows, stored_rows)
            except Exception:  # stored and acked already: subscribers read it from the store
                log.exception("could not render committed events for live subscribers")
                self.covered_from = None
            self._wake()
            await asyncio.sleep(0)

    def _render(self, last_id: int, rows: list[EventRow], stored_rows: list[Any] | None) -> None:
        if stored_rows is None:
            srows: list[StreamRow] = [(i, *r[:7], r[7]) for i, r in enumerate(rows, last_id + 1)]
        else:
            srows = [(r["id"], r["node_id"], r["seq"], r["event_id"], r["session_id"], r["project"], r["type"],
                      r["data"], r["ts"]) for r in stored_rows]
        if self.streams:
            newest = self._ids[-1] if len(self._ids) > self._head else self.covered_from
            if newest != last_id:  # a batch went by unseen (nobody listened): the ring starts again here
                self._clear()
                self.covered_from = last_id
            self._append(entry_of(r) for r in srows)
            self.encoded.inc(len(srows))
        if self.queues:
            self._to_queues(last_id, rows, stored_rows)

    def _append(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            self._ids.append(e[0])
            self._entries.append(e)
            self._bytes += len(e[5])
        while len(self._ids) - self._head > self.ring_events or (
                self._bytes > self.ring_bytes and len(self._ids) - self._head > 1):
            old = self._entries[self._head]
            self._bytes -= len(old[5])
            self.covered_from = old[0]
            self._head += 1
        if self._head > 4096 and self._head * 2 > len(self._ids):
            del self._ids[:self._head], self._entries[:self._head]
            self._head = 0
        self.ring_bytes_gauge.set(self._bytes)

    def _clear(self) -> None:
        self._ids, self._entries, self._head, self._bytes = [], [], 0, 0
        self._chunk_key, self._chunk = None, (b"", 0)
        self.covered_from = None
        self._upto = None
        self.ring_bytes_gauge.set(0)

    def _wake(self) -> None:
        """Announce new frames now, or at WAKE_INTERVAL after the last announcement: 200 subscribers
        writing once per commit would cost more CPU than the commits themselves."""
        if self._wake_handle is not None:
            return
        loop = asyncio.get_running_loop()
        delay = self._last_wake + WAKE_INTERVAL - loop.time()
        if delay <= 0:
            self._announce()
        else:
            self._wake_handle = loop.call_later(delay, self._announce)

    def _announce(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake_handle = None
        self._last_wake = loop.time()
        self._woken_upto = self.newest() or 0
        waiters, self._waiters = self._waiters, deque()
        if len(waiters) > 1:
            self._turn = (self._turn + WAKE_SLICE + 1) % len(waiters)
            waiters.rotate(-self._turn)
        self._release(waiters)

    def _release(self, waiters: deque[asyncio.Future[None]]) -> None:
        """Resume WAKE_SLICE waiting subscribers, and the rest in later loop turns: each resumed one
        writes to its socket at once, and 200 of those in one turn would hold the agents' frames, the
        commits and their acks behind them (the loop polls its sockets between turns)."""
        n = 0
        while waiters and n < WAKE_SLICE:
            fut = waiters.popleft()
            if not fut.done():  # done: that wait timed out (keepalive)
                fut.set_result(None)
                n += 1
        if waiters:
            asyncio.get_running_loop().call_soon(self._release, waiters)

    def _to_queues(self, last_id: int, rows: list[EventRow], stored_rows: list[Any] | None) -> None:
        evs = ([row_to_api(i, r) for i, r in enumerate(rows, last_id + 1)] if stored_rows is None
               else [event_to_api(r) for r in stored_rows])
        for q in list(self.queues):
            for ev in evs:
                try:
                    q.put_nowait(ev)
                except asyncio.QueueFull:
                    self.queues.discard(q)
                    log.warning("dropping a slow event consumer")
                    break

    # ----- the subscriber side -----

    def after(self, cursor: int, filters: dict[str, Any], max_events: int,
              max_bytes: int) -> tuple[list[bytes], int] | None:
        """Frames after `cursor` that match, at most `max_events`/`max_bytes` of them, and the new cursor;
        None if the ring no longer holds everything after `cursor` (read the store)."""
        if self.covered_from is None or cursor < self.covered_from:
            return None
        i = bisect.bisect_right(self._ids, cursor, lo=self._head)
        end = min(len(self._ids), i + max_events)
        if i == end:
            return [], cursor
        if not any(filters.get(k) for k in _FILTER_KEYS):
            out = [e[5] for e in self._entries[i:end]]
            return out, self._ids[end - 1]
        out = []
        size = 0
        for e in self._entries[i:end]:
            cursor = e[0]
            if matches_entry(e, filters):
                out.append(e[5])
                size += len(e[5])
                if size >= max_bytes:
                    break
        return out, cursor

    def chunk_after(self, cursor: int, filters: dict[str, Any], max_events: int,
                    max_bytes: int) -> tuple[bytes, int] | None:
        """`after` joined into the one write a stream sends. For a stream without filters the chunk stops at
        `max_bytes` too, and is shared: the streams that kept up wait at the same cursor, so 200 of them
        cost one join (and hold one chunk between them) instead of 200."""
        if any(filters.get(k) for k in _FILTER_KEYS):
            got = self.after(cursor, filters, max_events, max_bytes)
            return None if got is None else (b"".join(got[0]), got[1])
        if self.covered_from is None or cursor < self.covered_from:
            return None
        i = bisect.bisect_right(self._ids, cursor, lo=self._head)
        if i == len(self._ids):
            return b"", cursor
        key = (cursor, self._ids[-1], max_events, max_bytes)
        if self._chunk_key != key:
            end, size = i, 0
            stop = min(len(self._ids), i + max_events)
            while end < stop and (end == i or size < max_bytes):
                size += len(self._entries[end][5])
                end += 1
            self._chunk = (b"".join([e[5] for e in self._entries[i:end]]), self._ids[end - 1])
            self._chunk_key = key
        return self._chunk

    def newest(self) -> int | None:
        return self._ids[-1] if len(self._ids) > self._head else self.covered_from

    async def wait(self, cursor: int, timeout: float) -> bool:
        """Wait until frames after `cursor` were announced (True) or `timeout` passed (False)."""
        if self._woken_upto > cursor:
            return True
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 that makes a task per call
                await fut
        except TimeoutError:
            if len(self._waiters) > 2 * self.streams + 64:  # drop the futures of timed-out waits
                self._waiters = deque(f for f in self._waiters if not f.done())
            return False
        return True
