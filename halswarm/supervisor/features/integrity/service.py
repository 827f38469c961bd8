"""The database's integrity check in the background: `PRAGMA quick_check` in a thread on its own
read-only connection every `database.integrity_check_hours`, and soon after a start that skipped it
(clean-shutdown marker, see halswarm.store.clean_marker). A failure is handed to `on_failure` (the
supervisor's corruption path: stop committing, /readyz 503 naming the cause, supervisor-db-corruption)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from halswarm.supervisor.features.integrity.settings import IntegritySettings

log = logging.getLogger(__name__)



class Check(Protocol):
    def __call__(self) -> str | None:
        """None when sound, else the first complaint (blocking: run in a thread)."""

    def interrupt(self) -> None:
        """End a check in progress (from another thread)."""

BUSY_RETRY_SEC = 60.0  # a check that met a lock is tried again this much later


class IntegrityWatch:
    def __init__(self, check: Check, settings: IntegritySettings, on_failure: Callable[[str], None], *,
                 first_delay_sec: float | None = None) -> None:
        """`first_delay_sec`: when start-up skipped the full check (clean-shutdown marker), the first
        check runs this soon after start, even with `check_hours` 0; None: one interval after start."""
        self.check = check
        self.first_delay_sec = first_delay_sec
        self.settings = settings
        self.on_failure = on_failure
        self.last_checked_at: float | None = None
        self.last_duration_sec: float | None = None
        self.last_problem: str | None = None
        self.checks = 0
        self.passed = 0  # checks that found the file sound
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> str | None:
        """One full check; a complaint other than a lock goes to `on_failure`."""
        t0 = time.monotonic()
        problem = await asyncio.to_thread(self.check)
        if problem is not None and "interrupt" in problem.lower():
            raise asyncio.CancelledError  # stopped mid-check: no verdict
        self.checks += 1
        self.last_duration_sec = time.monotonic() - t0
        self.last_checked_at = time.time()
        self.last_problem = problem
        if problem is None:
            self.passed += 1
            log.info("database integrity check passed (%.1f s)", self.last_duration_sec)
        elif is_busy(problem):
            log.warning("database integrity check could not read the file (%s); trying again later", problem)
        else:
            self.on_failure(problem)
        return problem

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="integrity-check")

    async def stop(self) -> None:
        self.check.interrupt()  # a check reading a big file must not hold up the shutdown
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        if self.first_delay_sec is not None:
            # Start-up skipped the full check: it runs now, in the background.
            await asyncio.sleep(self.first_delay_sec)
        elif self.settings.check_hours <= 0:
            return
        else:
            # Start-up has just checked the file: the next check is one interval away.
            await asyncio.sleep(self.settings.check_hours * 3600.0)
        while True:
            try:
                problem = await self.run_once()
            except Exception as exc:  # the check itself broke: say so, try again at the next turn
                log.error("database integrity check did not run: %s", exc)
                problem = None
            if problem is not None and not is_busy(problem):
                return  # the corruption path has it now
            if problem is not None:
                await asyncio.sleep(BUSY_RETRY_SEC)
            elif self.settings.check_hours <= 0:
                return
            else:
                await asyncio.sleep(self.settings.check_hours * 3600.0)


def is_busy(problem: str) -> bool:
    """A lock, not damage: the file could not be read just now."""
    low = problem.lower()
    return "locked" in low or "busy" in low
