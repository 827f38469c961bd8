"""Event-loop lag probe: how late a short sleep wakes up is how long something held the loop.

Its figures (`hal_o_swarm_event_loop_lag_max_seconds` since start, and the last one) show a stall
that no request timing catches, such as a periodic pass over too many sessions (issue 22). A lag of
WARN_LAG_S or more is also logged (at most once a WARN_EVERY_S, with the largest since the last line): a
held loop acks nothing and answers nothing, and used to leave no trace in the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from prometheus_client import Gauge

log = logging.getLogger(__name__)

TICK_S = 0.05
WARN_LAG_S = 1.0
WARN_EVERY_S = 60.0


class LoopLagProbe:
    def __init__(self, max_gauge: Gauge, last_gauge: Gauge, tick: float = TICK_S,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.max_gauge = max_gauge
        self.last_gauge = last_gauge
        self.tick = tick
        self.clock = clock
        self.max_lag = 0.0
        self.warnings = 0  # lines logged
        self._warned_at: float | None = None
        self._unlogged = 0.0  # the largest lag of WARN_LAG_S or more not logged yet
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            t0 = self.clock()
            await asyncio.sleep(self.tick)
            now = self.clock()
            lag = max(0.0, now - t0 - self.tick)
            self.last_gauge.set(lag)
            if lag > self.max_lag:
                self.max_lag = lag
                self.max_gauge.set(lag)
            if lag >= WARN_LAG_S:
                self._unlogged = max(self._unlogged, lag)
            if self._unlogged and (self._warned_at is None or now - self._warned_at >= WARN_EVERY_S):
                self._warned_at = now
                self.warnings += 1
                log.warning("event loop held for %.1f s (nothing was read, committed or acked meanwhile; "
                            "hal_o_swarm_event_loop_lag_max_seconds); at most one such line a minute",
                            self._unlogged)
                self._unlogged = 0.0
