"""The event-loop lag probe logs a held loop (a stall used to leave no line in the log)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry, Gauge

from halswarm.supervisor.runtime.looplag import LoopLagProbe


def test_a_held_loop_is_logged_at_most_once_a_minute_with_the_largest_lag(caplog: pytest.LogCaptureFixture):
    # clock readings in pairs (before the probe's sleep, after it): lags 0, 2.0, 0, 5.0 (within the minute of
    # the first line: not logged yet), 3.0 (a minute later: one line with the largest, 5.0), 0
    lags = [0.0, 2.0, 0.0, 5.0, 0.0, 3.0, 0.0]
    readings: list[float] = []
    t = 0.0
    for i, lag in enumerate(lags):
        t += 60.0 if i == 5 else 0.0
        readings += [t, t + lag]
        t += lag
    done = asyncio.Event()

    def clock() -> float:
        if readings:
            return readings.pop(0)
        done.set()
        return t

    async def run() -> LoopLagProbe:
        r = CollectorRegistry()
        probe = LoopLagProbe(Gauge("m", "m", registry=r), Gauge("l", "l", registry=r), tick=0.0, clock=clock)
        await probe.start()
        await asyncio.wait_for(done.wait(), 10)
        await probe.stop()
        return probe

    with caplog.at_level(logging.WARNING, logger="halswarm.supervisor.runtime.looplag"):
        probe = asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if "event loop held" in r.getMessage()]
    assert probe.max_lag == 5.0
    assert lines == [lines[0], lines[1]] and "held for 2.0 s" in lines[0] and "held for 5.0 s" in lines[1]
    assert probe.warnings == 2
