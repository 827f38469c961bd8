"""The timestamp rule (halswarm.core.timestamps) and renderers that never raise on a stored value."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from halswarm.core.model import Session
from halswarm.core.timestamps import (
    MILLISECONDS,
    NOT_A_NUMBER,
    OUT_OF_RANGE,
    event_time,
    sane_float,
    sql_int,
    to_seconds,
)
from halswarm.core.timeutil import iso, parse_ts
from halswarm.store.repos.events import event_to_api, row_to_api


@pytest.mark.parametrize(("value", "expected"), [
    (1_700_000_000, (1_700_000_000.0, None)),
    (1_700_000_000.5, (1_700_000_000.5, None)),
    (1.7e12, (1.7e9, MILLISECONDS)),
    (1_700_000_000_123, (1_700_000_000.123, MILLISECONDS)),
    (0, (0.0, None)),
    (-1, (None, OUT_OF_RANGE)),
    (math.nan, (None, OUT_OF_RANGE)),
    (math.inf, (None, OUT_OF_RANGE)),
    (1e300, (None, OUT_OF_RANGE)),
    (10**400, (None, OUT_OF_RANGE)),
    ("1700000000", (None, NOT_A_NUMBER)),
    (True, (None, NOT_A_NUMBER)),
    (None, (None, NOT_A_NUMBER)),
])
def test_to_seconds_rule(value, expected):
    got = to_seconds(value)
    assert got[1] == expected[1]
    assert got[0] == pytest.approx(expected[0]) if expected[0] is not None else got[0] is None


def test_event_time_keeps_sane_converts_ms_and_replaces_the_rest():
    assert event_time(1_700_000_000.0, 5.0) == (1_700_000_000.0, None)
    assert event_time(0, 5.0) == (5.0, None)  # missing: not a problem
    assert event_time(1.7e12, 5.0) == (1.7e9, MILLISECONDS)
    assert event_time(1e300, 5.0) == (5.0, OUT_OF_RANGE)
    assert event_time(-3, 5.0) == (5.0, OUT_OF_RANGE)


def test_sizes_fit_sqlite():
    assert sql_int(2**63 - 1) == 2**63 - 1
    assert sql_int(2**63) is None and sql_int(-1) is None and sql_int(True) is None
    assert sane_float(1.5) == 1.5 and sane_float(math.inf) is None and sane_float(-1) is None


@pytest.mark.parametrize("stored", [
    1.7e12, 1e300, -1.0, math.nan, math.inf, "garbage", "2026-01-02T03:04:05Z", "1700000000", b"\xff", b"17",
    10**30, "", "  ", object(), [], {"a": 1}, True,
])
def test_iso_never_raises_on_a_stored_value(stored):
    out = iso(stored)
    assert out is None or (isinstance(out, str) and out.endswith("Z"))


def test_iso_shows_milliseconds_converted():
    assert iso(1_700_000_000_000) == iso(1_700_000_000) == "2023-11-14T22:13:20.000Z"
    assert parse_ts(1.7e12) == pytest.approx(1.7e9)
    assert parse_ts(0) == 0.0  # `since=0` stays valid


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=40),
                 st.binary(max_size=20), st.none(), st.booleans()))
def test_renderers_never_raise(value):
    iso(value)
    parse_ts(value)
    s = Session(id="s", node_id="n", started_at=value, last_activity=value)  # type: ignore[arg-type]
    s.to_api()
    row_to_api(1, ("n", 1, "e", None, None, "t", "{}", value, value))
    event_to_api({"id": 1, "node_id": "n", "seq": 1, "event_id": "e", "session_id": None, "project": None,
                  "type": "t", "data": "[" * 5000, "ts": value, "timestamp": value})
