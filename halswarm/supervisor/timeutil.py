"""Timestamps: stored as unix seconds, shown as ISO-8601 UTC."""

from __future__ import annotations

import datetime as dt
import math
import time


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(value: object) -> float | None:
    """Accept unix seconds (number or numeric string) or ISO-8601 / SQLite datetime text.

    Returns None for anything unreadable, so callers can count and skip bad rows.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        f = float(value)
        return f if math.isfinite(f) and f >= 0 else None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        f = float(text)
        return f if math.isfinite(f) and f >= 0 else None
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()
