"""Stored events, paged, and the live stream for Server-Sent Events subscribers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from halswarm.core.paging import Page, PageRequest
from halswarm.store.reader import Reader
from halswarm.store.repos.events import first_id_since, last_event_id, page_events, stream_rows
from halswarm.supervisor.runtime.broadcast import encode_event
from halswarm.supervisor.runtime.event_tail import EventTail
from halswarm.supervisor.runtime.ingest import Ingestor

KEEPALIVE_SEC = 15.0
CHUNK_EVENTS = 500  # frames a stream sends in one write at most
CHUNK_BYTES = 256 * 1024  # ... and bytes (a reader that stops holds at most one such chunk)
STORE_SCAN = 5000  # ids a stream behind the shared buffer reads from the store per query
EVENT_CURSOR = "fi"  # (timestamp, id)


class EventsService:
    def __init__(self, reader: Reader, ingestor: Ingestor, tail: EventTail | None = None) -> None:
        self.reader = reader
        self.ingestor = ingestor
        self.broadcast = ingestor.broadcast
        # PostgreSQL: every supervisor's events, read up to the safe horizon (runtime/event_tail.py); a
        # stream never reads the store past it (an id above it may still commit below the newest one).
        self.tail = tail

    async def page(self, filters: dict[str, Any], req: PageRequest,
                   order: str) -> tuple[Page[dict[str, Any]], int, bool]:
        """A page with (total, total_is_estimate)."""
        return await self.reader.run(lambda c: page_events(c, filters, req, order))

    async def _from_store(self, filters: dict[str, Any], cursor: int,
                          until_id: int | None) -> tuple[list[bytes], int]:
        """Frames of stored events after `cursor` (by id), one bounded read, and the id reached."""
        if self.tail is not None:
            safe = self.tail.safe
            if safe is None or safe <= cursor:
                return [], cursor
            until_id = safe if until_id is None else min(until_id, safe)
        rows, reached = await self.reader.run(partial(stream_rows, filters=filters, after_id=cursor,
                                                      until_id=until_id, limit=CHUNK_EVENTS, scan=STORE_SCAN))
        return [encode_event(r) for r in rows], reached

    async def start_id(self, since: float | None, last_seen: int | None) -> tuple[int, int]:
        """(cursor, boundary): the stream sends every matching event with an id above `cursor`; up to
        `boundary` (committed when the stream opened) `since` filters them, after it only the filters do."""
        if last_seen is not None:  # a resume: whatever `since` was, the stream it resumes was past it
            if self.tail is not None:  # what was stored since is read at once, not at the next event
                await self.tail.fresh_horizon()
            return last_seen, last_seen
        if self.tail is not None:
            boundary = await self.tail.fresh_horizon()
        else:
            boundary = await self.reader.run(last_event_id)
        if since is None:
            return boundary, boundary
        first = await self.reader.run(partial(first_id_since, since=since))
        return (boundary if first is None else first - 1), boundary

    async def stream(self, filters: dict[str, Any], last_seen: int | None = None) -> AsyncIterator[bytes]:
        """SSE frames (`id:` = event id) after `last_seen` (a `Last-Event-ID`), or from `since`, or from
        now; then live ones, with keepalive comments; in id (commit) order, none twice, none skipped.

        Frames come from the broadcast's shared buffer; whenever this stream is behind what the buffer
        still holds (a slow reader, or a replay), it reads the store by id instead: never dropped."""
        hub = self.broadcast
        hub.open_stream()  # before reading the store: every later commit reaches the buffer
        try:
            cursor, boundary = await self.start_id(filters.get("since"), last_seen)
            live = {k: v for k, v in filters.items() if k != "since"}
            while cursor < boundary:
                frames, cursor = await self._from_store(filters, cursor, boundary)
                if frames:
                    yield b"".join(frames)
            yield b": connected\n\n"
            behind = True  # counted in `catchups` only when a stream that kept up falls behind
            while True:
                got = hub.chunk_after(cursor, live, CHUNK_EVENTS, CHUNK_BYTES)
                if got is None:
                    if not behind:
                        hub.catchups.inc()
                        behind = True
                    frames, reached = await self._from_store(live, cursor, None)
                    if reached == cursor and not await hub.wait(cursor, KEEPALIVE_SEC):
                        yield b": keepalive\n\n"
                    cursor = reached
                else:
                    behind = False
                    chunk, cursor = got
                    if chunk:
                        yield chunk
                    if not await hub.wait(cursor, KEEPALIVE_SEC):
                        yield b": keepalive\n\n"
                    continue
                if frames:
                    yield b"".join(frames)
        finally:
            hub.close_stream()
