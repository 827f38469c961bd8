"""The timestamp rule for every time value an agent sends or a database row holds.

Times are unix seconds. A number above ``MS_THRESHOLD`` (1e11 s is the year 5138, while 1e11 ms is
1973) can only be milliseconds: it is divided by 1000 and the caller is told, so it can count it.
What is still out of range afterwards (beyond 9999-12-31, the last instant ISO-8601 shows), not
finite, negative or not a number is refused: ``to_seconds`` returns None with the reason.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable

MS_THRESHOLD = 1e11
MAX_SECONDS = 253402300799.0  # 9999-12-31T23:59:59Z

MILLISECONDS = "milliseconds"  # converted to seconds
OUT_OF_RANGE = "out_of_range"  # refused: negative, NaN/inf or beyond MAX_SECONDS even as ms
NOT_A_NUMBER = "not_a_number"  # refused: a string, bool, object...

REASONS = (MILLISECONDS, OUT_OF_RANGE, NOT_A_NUMBER)  # the only metric label values


def to_seconds(value: object) -> tuple[float | None, str | None]:
    """Apply the rule to a numeric value: (seconds, None) | (seconds, MILLISECONDS) | (None, refusal)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, NOT_A_NUMBER
    try:
        f = float(value)
    except OverflowError:  # an int beyond float range
        return None, OUT_OF_RANGE
    if not math.isfinite(f) or f < 0:
        return None, OUT_OF_RANGE
    if f > MS_THRESHOLD:
        f /= 1000.0
        return (f, MILLISECONDS) if f <= MAX_SECONDS else (None, OUT_OF_RANGE)
    return f, None


def event_time(value: object, received: float) -> tuple[float, str | None]:
    """An event's stored time: its own if sane (milliseconds converted), else when it was received.

    A missing time (0, the wire default) is not a problem; anything else replaced is reported.
    """
    if type(value) is float and 0.0 < value <= MS_THRESHOLD:  # the common case, once per event
        return value, None
    if value == 0 or value is None:
        return received, None
    secs, reason = to_seconds(value)
    if secs is None:
        return received, reason
    return secs, reason


# SQLite INTEGER is signed 64-bit: a larger Python int makes the whole insert raise.
MAX_SQL_INT = (1 << 63) - 1


def sql_int(value: object) -> int | None:
    """A non-negative int that fits an SQLite INTEGER, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SQL_INT:
        return None
    return value


def sane_float(value: object, limit: float = 1e15) -> float | None:
    """A finite, non-negative number up to `limit` (costs, sizes), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) and 0 <= f <= limit else None


# SQLite's `datetime(ts, 'unixepoch')`, the text of `events.timestamp` (schema 013). The supervisor
# writes it with each event: SQLite computing it inside the INSERT (the generated column of schema 012)
# cost about 2 us a row, most of the writer's time per event. SQLite counts milliseconds from the Julian
# epoch, rounds the time to the millisecond, then truncates to the second; so does this.
_JULIAN_EPOCH_MS = 210866760000000  # 1970-01-01T00:00:00Z in milliseconds since the Julian epoch
_JULIAN_EPOCH_S = _JULIAN_EPOCH_MS // 1000
_JULIAN_MS_END = 464269060800000  # 10000-01-01 in the same count: SQLite answers NULL from there on
_FAST_END = 253402300799.0  # below it, rounding to the millisecond cannot reach 10000-01-01


def sql_datetime(ts: float) -> str | None:
    """`datetime(ts, 'unixepoch')` as SQLite computes it ('YYYY-MM-DD HH:MM:SS', UTC) for ts >= 0;
    None for a negative time (the timestamp rule never stores one) and where SQLite gives NULL."""
    if not ts >= 0.0:
        return None
    r = ts * 1000.0 + float(_JULIAN_EPOCH_MS)
    if not r < _JULIAN_MS_END:
        return None
    jd_ms = int(r + 0.5)
    if jd_ms >= _JULIAN_MS_END:
        return None
    return _second_text(jd_ms // 1000 - _JULIAN_EPOCH_S)


def sql_datetimes(values: Iterable[float]) -> list[str | None]:
    """`sql_datetime` of many times at once (a batch of events), cheap for runs within one second."""
    out: list[str | None] = []
    append = out.append
    last, text = -1, ""
    jd_ms = float(_JULIAN_EPOCH_MS)
    for ts in values:
        if 0.0 <= ts < _FAST_END:
            second = int(ts * 1000.0 + jd_ms + 0.5) // 1000
            if second != last:
                last, text = second, _second_text(second - _JULIAN_EPOCH_S)
            append(text)
        else:
            append(sql_datetime(ts))
    return out


@functools.lru_cache(maxsize=1024)
def _second_text(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
