"""`sql_datetime`: the runbook's `events.timestamp` text, computed in Python exactly as SQLite's
`datetime(ts, 'unixepoch')` (the migration and the UPDATE trigger use SQLite's own function)."""

from __future__ import annotations

import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from halswarm.core.timestamps import MAX_SECONDS, sql_datetime, sql_datetimes

SQLITE = sqlite3.connect(":memory:")


def sqlite_datetime(ts: float) -> str | None:
    return SQLITE.execute("SELECT datetime(?, 'unixepoch')", (ts,)).fetchone()[0]


EDGES = [0.0, 5e-324, 0.0004999, 0.0005, 0.9994, 0.9995, 59.9995, 86399.9995, 951782399.9995,
         1796601600.0, 1796601599.9995, 1796601599.99949, MAX_SECONDS, 253402300799.9994,
         253402300799.9995, 253402300800.0, 1e20]


def test_edges_match_sqlite() -> None:
    for ts in EDGES:
        assert sql_datetime(ts) == sqlite_datetime(ts), ts
    assert sql_datetimes(EDGES) == [sqlite_datetime(ts) for ts in EDGES]


@given(st.lists(st.floats(min_value=0.0, max_value=2.6e11, allow_nan=False), max_size=50))
def test_any_sane_time_matches_sqlite(values: list[float]) -> None:
    assert sql_datetimes(values) == [sqlite_datetime(v) for v in values]
    assert [sql_datetime(v) for v in values] == [sqlite_datetime(v) for v in values]


@given(st.integers(min_value=0, max_value=253402300798), st.sampled_from([0.0, 0.0005, 0.49949999, 0.9994999, 0.9995]))
def test_millisecond_rounding_at_second_edges_matches_sqlite(second: int, frac: float) -> None:
    ts = second + frac
    assert sql_datetime(ts) == sqlite_datetime(ts)


def test_times_the_rule_never_stores_are_none() -> None:
    assert sql_datetime(-1.0) is None and sql_datetime(float("nan")) is None and sql_datetime(float("inf")) is None
    assert sql_datetimes([-1.0, 1.0]) == [None, "1970-01-01 00:00:01"]
