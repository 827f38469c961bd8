"""Periodic retention: old events and audit rows, expired idempotency entries. A service with a
lifecycle (`start`/`stop`), run whether or not the HTTP API is on; no API of its own.

The purge goes in small steps, each its own writer job (at most `batch_rows` rows and about
`batch_ms` of work, and ending after the statement in progress as soon as another writer job is
queued), so event batches queued meanwhile commit (and are acked) between two steps: deleting
millions of rows never holds the writer for more than a few tens of milliseconds. On a
file with auto_vacuum=INCREMENTAL the freed pages are then given back in small steps too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from halswarm.store.repos.retention import auto_vacuum_mode, delete_step, free_pages, vacuum_step
from halswarm.store.writer import Writer
from halswarm.supervisor.features.retention.settings import RetentionSettings

log = logging.getLogger(__name__)
DAY = 86400.0

StepHook = Callable[[str, int], None]  # (target, rows or pages) after each writer job of the purge


class RetentionJob:
    def __init__(self, writer: Writer, settings: RetentionSettings, *, interval: float = 3600.0,
                 on_step: StepHook | None = None) -> None:
        self.writer = writer
        self.settings = settings
        self.events_days = settings.events_days
        self.audit_days = settings.audit_days
        self.interval = interval
        self.on_step = on_step
        self._task: asyncio.Task[None] | None = None
        self.last_result: dict[str, int] | None = None
        self.last_duration_sec: float | None = None
        self.steps = 0  # writer jobs used by the last run

    async def run_once(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        t0 = time.monotonic()
        cutoffs = {"events": now - self.events_days * DAY, "audit": now - self.audit_days * DAY,
                   "idempotency": now, "commands": now - self.audit_days * DAY,
                   "approvals": now - self.audit_days * DAY}
        self.steps = 0
        result = {target: await self._purge(target, cutoff) for target, cutoff in cutoffs.items()}
        if any(result.values()):
            result["pages_freed"] = await self._give_back_pages()
        else:
            result["pages_freed"] = 0
        self.last_result = result
        self.last_duration_sec = time.monotonic() - t0
        if any(result.values()):
            log.info("retention removed %s in %d steps (%.1f s)",
                     ", ".join(f"{v} {k}" for k, v in result.items() if v), self.steps, self.last_duration_sec)
        return result

    async def _purge(self, target: str, cutoff: float) -> int:
        rows, budget = self.settings.batch_rows, self.settings.batch_ms / 1000.0
        waiting = self.writer.has_waiting
        total = 0
        while True:
            n: int = await self.writer.run(lambda c: delete_step(c, target, cutoff, rows, budget, yield_to=waiting))
            self._stepped(target, n)
            total += n
            if n == 0:
                return total
            await asyncio.sleep(self.settings.pause_ms / 1000.0)  # the ingest's turn

    async def _give_back_pages(self) -> int:
        """Incremental vacuum in steps of `vacuum_pages`; nothing on a file without auto_vacuum=INCREMENTAL
        (there freed pages stay in the file and are reused by new rows)."""
        mode = await self.writer.run(auto_vacuum_mode)
        if mode != "incremental":
            return 0
        before = left = await self.writer.run(free_pages)
        while left > 0:
            now_left: int = await self.writer.run(
                lambda c: vacuum_step(c, self.settings.vacuum_pages, self.settings.batch_ms / 1000.0,
                                      yield_to=self.writer.has_waiting))
            self._stepped("vacuum", left - now_left)
            if now_left >= left:  # nothing moved: stop rather than spin
                break
            left = now_left
            await asyncio.sleep(self.settings.pause_ms / 1000.0)
        return before - left

    def _stepped(self, target: str, count: int) -> None:
        self.steps += 1
        if self.on_step is not None:
            self.on_step(target, count)

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
