"""`python -m tests.support.noon_supervisor YYYY-MM-DD <hal-supervisor arguments>`: the real supervisor
whose cost aggregator sees noon UTC of that day, advancing with the wall clock from there.

Tests that put provider data on "today" compare it with the supervisor's idea of today; with the wall
clock, a run crossing midnight UTC splits the two days. Only the aggregator's clock moves: everything
else (heartbeats, timestamps, timeouts) runs on real time.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable

from halswarm.supervisor.features.cost.aggregator import CostAggregator
from halswarm.supervisor.main import main


def noon_clock(day: dt.date, wall: Callable[[], float] = time.time) -> Callable[[], float]:
    base = dt.datetime.combine(day, dt.time(12), dt.UTC).timestamp()
    started = wall()
    return lambda: base + (wall() - started)


if __name__ == "__main__":
    defaults = CostAggregator.__init__.__kwdefaults__
    assert defaults is not None and "clock" in defaults, "CostAggregator takes no clock= any more"
    defaults["clock"] = noon_clock(dt.date.fromisoformat(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
