"""The cost report (pure): provider buckets where a provider delivered data, agent-reported usage
(with `model_rates` estimates) everywhere else.

Rules, per provider and UTC day of the period:
- a day the provider's reports covered (a successful poll) counts the provider's buckets; the
  sessions of that provider on that day are already inside those numbers and are not added again;
- any other day (provider not configured, not polled yet, degraded) counts the sessions' usage as the
  agents reported it, with the cost estimated from `model_rates` when the agent reported none;
- a day a degraded provider had polled before the day's data was final (`provisional`, e.g. polled OK
  this morning, failing since) counts whichever is larger, the provider's buckets or the sessions'
  usage: spend after the last good poll is not lost, and nothing is counted twice. Once the provider
  recovers, its (re-polled) buckets count again.
`by_project` is the fleet's own projects (agent-reported usage); provider usage the fleet cannot
attribute (other API users of the organization, provider lag) appears as `(unattributed)`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from halswarm.core.cost import Bucket, SessionUsage

PERIOD_DAYS = {"today": 1, "week": 7, "month": 30}
UNATTRIBUTED = "(unattributed)"


class BadPeriod(ValueError):
    pass


def period_days(period: str, today: dt.date) -> list[str]:
    n = PERIOD_DAYS.get(period)
    if n is None:
        raise BadPeriod(f"period must be one of {', '.join(PERIOD_DAYS)} (got {period!r})")
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(n - 1, -1, -1)]


def _sorted(rows: Mapping[Any, list[float]], names: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for key, (tokens, cost) in rows.items():
        parts = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(names, parts, strict=True)), "tokens": int(tokens), "cost_usd": round(cost, 6)})
    out.sort(key=lambda r: (-r["cost_usd"], -r["tokens"], tuple(str(r[n]) for n in names)))
    return out


def build_report(period: str, today: dt.date, buckets: Iterable[Bucket], covered: Mapping[str, set[str]],
                 sessions: Iterable[SessionUsage], degraded: Iterable[str],
                 provisional: Mapping[str, set[str]] | None = None) -> dict[str, Any]:
    """`covered[provider]` = the days that provider's reports were polled successfully;
    `provisional[provider]` = covered days whose provider data may be incomplete (see the module doc)."""
    days = period_days(period, today)
    in_period = set(days)
    buckets = [b for b in buckets if b.date in in_period]
    sessions = [s for s in sessions if s.date in in_period]
    provider_sum: dict[tuple[str, str], list[float]] = {}
    session_sum: dict[tuple[str, str], list[float]] = {}
    for b in buckets:
        acc = provider_sum.setdefault((b.provider, b.date), [0.0, 0])
        acc[0] += b.cost_usd
        acc[1] += b.tokens
    for s in sessions:
        acc = session_sum.setdefault((s.provider, s.date), [0.0, 0])
        acc[0] += s.cost_usd
        acc[1] += s.tokens

    def provider_counts(provider: str, date: str) -> bool:
        if date not in covered.get(provider, set()):
            return False
        if provisional and date in provisional.get(provider, set()):
            key = (provider, date)
            return provider_sum.get(key, [0.0, 0]) >= session_sum.get(key, [0.0, 0])
        return True

    by_provider: dict[str, list[float]] = {}
    by_model: dict[tuple[str, str], list[float]] = {}
    by_project: dict[str, list[float]] = {}

    def add(target: dict[Any, list[float]], key: Any, tokens: float, cost: float) -> None:
        acc = target.setdefault(key, [0, 0.0])
        acc[0] += tokens
        acc[1] += cost

    for b in buckets:
        if provider_counts(b.provider, b.date):
            add(by_provider, b.provider, b.tokens, b.cost_usd)
            add(by_model, (b.provider, b.model), b.tokens, b.cost_usd)
    for s in sessions:
        add(by_project, s.project or "-", s.tokens, s.cost_usd)
        if provider_counts(s.provider, s.date):
            continue
        add(by_provider, s.provider, s.tokens, s.cost_usd)
        add(by_model, (s.provider, s.model), s.tokens, s.cost_usd)

    total_tokens = int(sum(v[0] for v in by_provider.values()))
    total_cost = sum(v[1] for v in by_provider.values())
    rest_tokens = total_tokens - sum(v[0] for v in by_project.values())
    rest_cost = total_cost - sum(v[1] for v in by_project.values())
    if rest_cost > 5e-7 or (rest_cost > -5e-7 and rest_tokens > 0):
        by_project[UNATTRIBUTED] = [max(0, rest_tokens), max(0.0, rest_cost)]
    return {
        "period": period,
        "total_tokens": total_tokens,
        "total_cost_usd": round(total_cost, 6),
        "daily_average_usd": round(total_cost / len(days), 6),
        "by_provider": _sorted(by_provider, ("provider",)),
        "by_model": _sorted(by_model, ("provider", "model")),
        "by_project": _sorted(by_project, ("project",)),
        "degraded_providers": sorted(set(degraded)),
    }


def empty_report(period: str) -> dict[str, Any]:
    if period not in PERIOD_DAYS:
        raise BadPeriod(f"period must be one of {', '.join(PERIOD_DAYS)} (got {period!r})")
    return {"period": period, "total_tokens": 0, "total_cost_usd": 0.0, "daily_average_usd": 0.0,
            "by_provider": [], "by_model": [], "by_project": [], "degraded_providers": []}
