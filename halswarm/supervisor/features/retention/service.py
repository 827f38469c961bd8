"""Periodic retention: old events and audit rows, expired idempotency entries. A service with a
lifecycle (`start`/`stop`), run whether or not the HTTP API is on; no API of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from halswarm.store.repos.retention import purge_older_than
from halswarm.store.writer import Writer
from halswarm.supervisor.features.retention.settings import RetentionSettings

log = logging.getLogger(__name__)
DAY = 86400.0


class RetentionJob:
    def __init__(self, writer: Writer, settings: RetentionSettings, *, interval: float = 3600.0) -> None:
        self.writer = writer
        self.events_days = settings.events_days
        self.audit_days = settings.audit_days
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.last_result: dict[str, int] | None = None

    async def run_once(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        ev_before = now - self.events_days * DAY
        au_before = now - self.audit_days * DAY
        result = await self.writer.run(lambda c: purge_older_than(c, ev_before, au_before, now))
        self.last_result = result
        if any(result.values()):
            log.info("retention removed %s", ", ".join(f"{v} {k}" for k, v in result.items() if v))
        return result

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        await asyncio.sleep(60)  # let start-up settle before the first purge
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                log.error("retention run failed: %s", exc)
            await asyncio.sleep(self.interval)
