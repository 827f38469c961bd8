"""Stored events, paged, and the live stream for Server-Sent Events subscribers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from halswarm.core.paging import Page, PageRequest, decode_cursor
from halswarm.store.reader import Reader
from halswarm.store.repos.events import last_event_id, page_events
from halswarm.supervisor.runtime.ingest import Ingestor

KEEPALIVE_SEC = 15.0
REPLAY_PAGE = 500  # stored events read per query while a stream replays from `since`
EVENT_CURSOR = "fi"  # (timestamp, id)


def matches(ev: dict[str, Any], f: dict[str, Any]) -> bool:
    """Whether a live event passes a stream's filters (`type` may end in `*` for a prefix)."""
    for key in ("session_id", "project", "node_id"):
        if f.get(key) and ev.get(key) != f[key]:
            return False
    t = f.get("type")
    if t:
        if t.endswith("*"):
            if not str(ev.get("type", "")).startswith(t[:-1]):
                return False
        elif ev.get("type") != t:
            return False
    return True


def _frame(ev: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(ev, default=str)}\n\n".encode()


class EventsService:
    def __init__(self, reader: Reader, ingestor: Ingestor) -> None:
        self.reader = reader
        self.ingestor = ingestor

    async def page(self, filters: dict[str, Any], req: PageRequest,
                   order: str) -> tuple[Page[dict[str, Any]], int, bool]:
        """A page with (total, total_is_estimate)."""
        return await self.reader.run(lambda c: page_events(c, filters, req, order))

    async def replay(self, filters: dict[str, Any], until_id: int) -> AsyncIterator[dict[str, Any]]:
        """Every stored event matching `filters` with an id up to `until_id`, oldest first, read by
        cursor in pages of REPLAY_PAGE (the same keyset query as the list route)."""
        f = filters | {"until_id": until_id}
        req = PageRequest(REPLAY_PAGE)
        while True:
            page, _, _ = await self.reader.run(partial(page_events, filters=f, req=req, order="asc", count=False))
            for ev in page.items:
                yield ev
            if page.next is None:
                return
            req = PageRequest(REPLAY_PAGE, after=decode_cursor(page.next, EVENT_CURSOR))

    async def stream(self, filters: dict[str, Any],
                     disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[bytes]:
        """SSE frames: every stored event from `since` (if given), then live ones, with keepalive comments.

        The subscription starts before the store is read: events committed up to that moment (ids up to
        `boundary`) come from the store, later ones from the live queue, so none is sent twice or lost."""
        q = self.ingestor.subscribe()
        try:
            boundary = 0
            if filters.get("since") is not None:
                boundary = await self.reader.run(last_event_id)
                sent = 0
                async for ev in self.replay(filters, boundary):
                    yield _frame(ev)
                    sent += 1
                    if sent % REPLAY_PAGE == 0 and await disconnected():
                        return
            yield b": connected\n\n"
            while True:
                if await disconnected() or not self.ingestor.is_subscribed(q):
                    return
                try:
                    ev = await asyncio.wait_for(q.get(), KEEPALIVE_SEC)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if ev["id"] <= boundary or not matches(ev, filters):
                    continue
                yield _frame(ev)
        finally:
            self.ingestor.unsubscribe(q)
