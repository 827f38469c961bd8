"""Timestamps: stored as unix seconds, shown as ISO-8601 UTC (rule: halswarm.core.timestamps)."""

from __future__ import annotations

import datetime as dt
import time

from halswarm.core.timestamps import to_seconds


def now() -> float:
    return time.time()


def iso(ts: object) -> str | None:
    """ISO-8601 UTC text of a stored time, or None. Never raises, whatever a row holds: an old
    database may keep milliseconds (shown converted), text (parsed) or garbage (None)."""
    if ts is None:
        return None
    secs = parse_ts(ts)
    if secs is None:
        return None
    try:
        return dt.datetime.fromtimestamp(secs, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def parse_ts(value: object) -> float | None:
    """Accept unix seconds (number or numeric string; milliseconds converted) or ISO-8601 / SQLite
    datetime text.

    Returns None for anything unreadable or out of range, so callers can count and skip bad rows.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return to_seconds(value)[0]
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return to_seconds(float(text))[0]
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return to_seconds(parsed.timestamp())[0]
    except (OverflowError, OSError, ValueError):
        return None
