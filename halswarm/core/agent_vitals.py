"""The agent's own figures in its heartbeat (`process`): a fixed set of bounded numbers.

They become per-node series on the supervisor's `/metrics`, so what a node sends must never choose a
label or a series name: only these keys are read, each must be a finite number in [0, MAX_VALUE]; any
other key or value is dropped (the heartbeat itself stays valid, so liveness never depends on them).
"""

from __future__ import annotations

import math
from typing import Any

MAX_VALUE = float(2**53)  # exact in a float; far above any RSS, limit or restart count
VITAL_KEYS = ("rss_bytes", "memory_max_bytes", "restarts", "opencode_restarts")


def vital_value(value: Any) -> float | None:
    """`value` as a float when it is a finite number in [0, MAX_VALUE], else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        num = float(value)
    except OverflowError:  # an int beyond float range
        return None
    if not math.isfinite(num) or num < 0 or num > MAX_VALUE:
        return None
    return num


def parse_vitals(raw: Any) -> dict[str, float]:
    """The valid known keys of a heartbeat's `process` object; {} for anything that is not an object."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, float] = {}
    for key in VITAL_KEYS:
        num = vital_value(raw.get(key))
        if num is not None:
            out[key] = num
    return out
