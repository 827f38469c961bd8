"""The agent's heartbeat figures: only known keys, only finite numbers in [0, 2**53]."""

from __future__ import annotations

import math
from typing import Any

import pytest

from halswarm.core.agent_vitals import MAX_VALUE, VITAL_KEYS, parse_vitals, vital_value


@pytest.mark.parametrize("value", [0, 1, 123_456_789, 1.5, MAX_VALUE, 2**53])
def test_bounded_numbers_are_kept(value: float) -> None:
    assert vital_value(value) == float(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1, -0.5, 1e300, 2**53 + 2, 10**400, True, False,
                                   "1", "NaN", None, [1], {"v": 1}])
def test_hostile_values_are_dropped(value: Any) -> None:
    assert vital_value(value) is None


def test_only_known_keys_survive() -> None:
    raw = {"rss_bytes": 10, "memory_max_bytes": -1, "restarts": 3, "opencode_restarts": "x",
           "node": "evil", 'x"} 1\nforged{': 1}
    assert parse_vitals(raw) == {"rss_bytes": 10.0, "restarts": 3.0}
    assert set(parse_vitals(dict.fromkeys(VITAL_KEYS, 1))) == set(VITAL_KEYS)


@pytest.mark.parametrize("raw", [None, "rss_bytes=1", [1, 2], 42, True])
def test_anything_but_an_object_is_no_figures(raw: Any) -> None:
    assert parse_vitals(raw) == {}
