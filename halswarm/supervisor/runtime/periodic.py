"""The loop the supervisor's engines share: a `check()` every few seconds in one task, plus the tasks
those checks start (commands, playbook runs), which stop within a bound at shutdown.

Used by the policy engine, dependency autostart and automatic remediation; a failing check is logged
and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any


class PeriodicEngine:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def check(self) -> Any:  # pragma: no cover - every engine defines its own
        raise NotImplementedError

    def _start_loop(self, interval: float, name: str, log: logging.Logger) -> None:
        self._task = asyncio.create_task(self._loop(interval, name, log), name=name)

    async def _loop(self, interval: float, name: str, log: logging.Logger) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:
                log.exception("%s: check failed", name)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> asyncio.Task[None]:
        """Start work a check decided on; `_stop_loop` waits for it (bounded)."""
        task = asyncio.create_task(coro, name=name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _stop_loop(self, grace: float) -> None:
        """Stop the loop; give work in flight `grace` seconds to finish (and record itself), then cancel it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._running:
            await asyncio.wait(self._running, timeout=grace)
            for t in self._running:
                t.cancel()
