"""Event-loop lag probe: how late a short sleep wakes up is how long something held the loop.

Its figures (`hal_o_swarm_event_loop_lag_max_seconds` since start, and the last one) show a stall
that no request timing catches, such as a periodic pass over too many sessions (issue 22)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import Gauge

TICK_S = 0.05


class LoopLagProbe:
    def __init__(self, max_gauge: Gauge, last_gauge: Gauge, tick: float = TICK_S) -> None:
        self.max_gauge = max_gauge
        self.last_gauge = last_gauge
        self.tick = tick
        self.max_lag = 0.0
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
            t0 = time.perf_counter()
            await asyncio.sleep(self.tick)
            lag = max(0.0, time.perf_counter() - t0 - self.tick)
            self.last_gauge.set(lag)
            if lag > self.max_lag:
                self.max_lag = lag
                self.max_gauge.set(lag)
