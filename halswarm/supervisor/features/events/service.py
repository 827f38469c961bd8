"""Stored events, paged, and the live stream for Server-Sent Events subscribers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from halswarm.store.reader import Reader
from halswarm.store.repos.events import query_events
from halswarm.supervisor.runtime.ingest import Ingestor

KEEPALIVE_SEC = 15.0
REPLAY_MAX = 1000  # events sent from `since` before the live part of a stream


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


class EventsService:
    def __init__(self, reader: Reader, ingestor: Ingestor) -> None:
        self.reader = reader
        self.ingestor = ingestor

    async def page(self, filters: dict[str, Any], limit: int, offset: int,
                   order: str) -> tuple[list[dict[str, Any]], int]:
        return await self.reader.run(lambda c: query_events(c, filters, limit, offset, order))

    async def stream(self, filters: dict[str, Any],
                     disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[bytes]:
        """SSE frames: stored events from `since` (if given), then live ones, with keepalive comments."""
        q = self.ingestor.subscribe()
        try:
            last_id = 0
            if filters.get("since") is not None:
                items, _ = await self.page(filters, REPLAY_MAX, 0, "asc")
                for ev in items:
                    last_id = max(last_id, ev["id"])
                    yield f"data: {json.dumps(ev, default=str)}\n\n".encode()
            yield b": connected\n\n"
            while True:
                if await disconnected() or not self.ingestor.is_subscribed(q):
                    return
                try:
                    ev = await asyncio.wait_for(q.get(), KEEPALIVE_SEC)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if ev["id"] <= last_id or not matches(ev, filters):
                    continue
                yield f"data: {json.dumps(ev, default=str)}\n\n".encode()
        finally:
            self.ingestor.unsubscribe(q)
