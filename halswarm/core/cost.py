"""Cost records (provider buckets, agent-reported session usage) and UTC-day helpers, shared by the
provider clients, the cost repository (store/repos/cost.py) and the report. Pure, stdlib only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

UNKNOWN_MODEL = "unknown"
DEFAULT_PROJECT = "default"
Key = tuple[str, str, str]  # (date, model, project)
Mark = tuple[int, int, int, float]  # cumulative (input, output, total, cost) of a session already accounted for


@dataclass
class Bucket:
    """One provider's usage and cost for one UTC day, model and provider-side project."""

    provider: str
    date: str  # YYYY-MM-DD (UTC)
    model: str
    project: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class SessionUsage:
    """One session's usage on one UTC day (an increment, not a cumulative counter)."""

    date: str
    session_id: str
    project: str
    provider: str
    model: str
    tokens: int
    cost_usd: float


def utc_day(ts: float) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def day_start(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def rfc3339(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def day_of(value: object) -> str | None:
    """The UTC date of a bucket start: RFC 3339 text (Anthropic) or unix seconds (OpenAI)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return utc_day(float(value)).isoformat()
    if isinstance(value, str) and len(value) >= 10:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                return dt.date.fromisoformat(value[:10]).isoformat()
            except ValueError:
                return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC).date().isoformat()
    return None


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Inclusive range of days."""
    n = (last - first).days
    return [first + dt.timedelta(days=i) for i in range(n + 1)] if n >= 0 else []


def merge(provider: str, usage: dict[Key, tuple[int, int]], costs: dict[Key, float]) -> list[Bucket]:
    """Tokens from the usage report and USD from the cost report, joined on (date, model, project)."""
    out = []
    for key in sorted(set(usage) | set(costs)):
        date, model, project = key
        inp, outp = usage.get(key, (0, 0))
        out.append(Bucket(provider, date, model, project, inp, outp, round(costs.get(key, 0.0), 8)))
    return out


def add(acc: dict[Key, tuple[int, int]], key: Key, inp: int, outp: int) -> None:
    a, b = acc.get(key, (0, 0))
    acc[key] = (a + inp, b + outp)


def as_int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0


def total_cost(buckets: Iterable[Bucket]) -> float:
    return sum(b.cost_usd for b in buckets)
