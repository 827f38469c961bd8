"""The stored-event feed for consumers off the ingest path (router, dependency watcher).

It subscribes to the Ingestor only when someone consumes (a subscription makes the ingestor read
stored rows back), calls each consumer synchronously per event (consumers only queue work), and
re-subscribes if the ingestor dropped it for falling behind (metric `hal_o_swarm_route_feed_overflows_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

Consumer = Callable[[dict[str, Any]], None]


class EventFeed:
    def __init__(self, ingestor: Any, registry: CollectorRegistry | None = None, maxsize: int = 10_000) -> None:
        self.ingestor = ingestor
        self.maxsize = maxsize
        self.consumers: list[Consumer] = []
        self._q: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error_log = 0.0
        self.delivered = 0
        self.overflows = Counter("hal_o_swarm_route_feed_overflows_total",
                                 "Times the routing feed fell behind the ingestor and lost events",
                                 registry=registry or CollectorRegistry())

    def add(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)

    def start(self) -> None:
        if not self.consumers or self._task is not None:
            return
        self._q = self.ingestor.subscribe(self.maxsize)
        self._task = asyncio.create_task(self._loop(), name="event-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._q is not None:
            self.ingestor.unsubscribe(self._q)
            self._q = None

    def _dispatch(self, ev: dict[str, Any]) -> None:
        self.delivered += 1
        for consumer in self.consumers:
            try:
                consumer(ev)
            except Exception:
                now = time.monotonic()
                if now - self._last_error_log > 10:
                    self._last_error_log = now
                    log.exception("event consumer %r failed on %s", consumer, ev.get("type"))

    async def _loop(self) -> None:
        assert self._q is not None
        while True:
            try:
                ev = await asyncio.wait_for(self._q.get(), 1.0)
            except TimeoutError:
                ev = None
            if ev is not None:
                self._dispatch(ev)
                while not self._q.empty():
                    self._dispatch(self._q.get_nowait())
            if not self.ingestor.is_subscribed(self._q) and self._q.empty():
                self.overflows.inc()
                log.warning("event feed fell behind the ingestor (more than %d events waiting); some events were "
                            "not routed", self.maxsize)
                self._q = self.ingestor.subscribe(self.maxsize)
