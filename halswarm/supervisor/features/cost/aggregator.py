"""Cost aggregator: polls the providers' organization reports into daily buckets, back-fills missed
days, marks failing providers degraded, and folds the agents' reported session usage into per-day
rows so estimates fill in wherever provider data is missing.

Schedule: one poll at start, then every `cost.poll_interval_minutes`; while a provider is degraded
the poll is repeated sooner (`cost.degraded_retry_seconds`, 60 s, doubling up to the poll interval).
Each poll asks for every day of the last BACKFILL_DAYS that was never covered, plus today and
yesterday (providers finalize data late).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from halswarm.core.cost import Bucket, Mark, SessionUsage, day_start, days_between, utc_day
from halswarm.core.secret_values import SECRETS
from halswarm.core.timeutil import iso
from halswarm.store.repos import cost as repo
from halswarm.supervisor.features.cost.anthropic import AnthropicSource
from halswarm.supervisor.features.cost.estimates import estimate, find_rate, provider_of
from halswarm.supervisor.features.cost.http import ProviderError, RetryPolicy
from halswarm.supervisor.features.cost.openai import OpenAISource
from halswarm.supervisor.features.cost.report import PERIOD_DAYS, build_report, period_days
from halswarm.supervisor.features.cost.settings import CostSettings, ProviderSettings

log = logging.getLogger(__name__)

BACKFILL_DAYS = 31
FINAL_AFTER_S = 2 * 86400  # a day's provider data is taken as final once polled this long after it began
SAMPLE_INTERVAL_S = 15.0
SOURCES: dict[str, Callable[[ProviderSettings, httpx.AsyncClient, RetryPolicy], Source]] = {
    "anthropic": AnthropicSource, "openai": OpenAISource,
}


class Source(Protocol):
    name: str

    async def fetch(self, first: dt.date, end_excl: dt.date) -> list[Bucket]: ...


@dataclass
class ProviderState:
    last_attempt: float | None = None
    last_success: float | None = None
    degraded_since: float | None = None
    reason: str | None = None
    failures: int = 0

    def to_api(self) -> dict[str, Any]:
        return {"degraded": self.degraded_since is not None, "reason": self.reason,
                "degraded_since": iso(self.degraded_since), "last_success": iso(self.last_success),
                "last_attempt": iso(self.last_attempt)}


def days_to_poll(today: dt.date, polled: dict[str, float]) -> list[dt.date]:
    """Days of the back-fill window never covered, or covered before they were final (data for a day is
    taken as final once polled two days after it began); today and yesterday are always asked again."""
    first = today - dt.timedelta(days=BACKFILL_DAYS - 1)
    out = []
    for day in days_between(first, today):
        at = polled.get(day.isoformat())
        if at is None or at < day_start(day) + FINAL_AFTER_S:
            out.append(day)
    return out


def usage_delta(cur: Mark, mark: Mark) -> Mark | None:
    """What a session used since its mark; None when nothing changed. A counter that went down (a reset
    on the agent side) starts a new baseline instead of counting negative usage."""
    if cur == mark:
        return None
    if any(c < m for c, m in zip(cur, mark, strict=True)):
        return (0, 0, 0, 0.0)
    return (cur[0] - mark[0], cur[1] - mark[1], cur[2] - mark[2], cur[3] - mark[3])


class CostAggregator:
    def __init__(self, settings: CostSettings, tracker: Any, writer: Any, reader: Any,
                 registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time,
                 sources: dict[str, Source] | None = None) -> None:
        self.settings = settings
        self.tracker = tracker
        self.writer = writer
        self.reader = reader
        self.clock = clock
        self.state: dict[str, ProviderState] = {p.name: ProviderState() for p in self.settings.enabled}
        self._sources = sources
        self._marks: dict[str, Mark] = {}
        self._stored_success: dict[str, float] = {}  # provider -> newest stored poll (loaded at start)
        self._sample_lock = asyncio.Lock()
        self._poll_locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._poller: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.today_cost = 0.0
        self.polls: Counter | None = None
        self.degraded_gauge: Gauge | None = None
        if registry is not None:
            self.polls = Counter("hal_o_swarm_cost_polls_total", "Cost report polls by provider and outcome",
                                 ["provider", "status"], registry=registry)
            self.degraded_gauge = Gauge("hal_o_swarm_cost_provider_degraded",
                                        "1 while a cost provider is degraded (estimates in use)", ["provider"],
                                        registry=registry)
            for p in self.settings.enabled:  # every series exists from the start: increase() sees the first
                for status in ("success", "failure"):
                    self.polls.labels(p.name, status)
            registry.register(_CostFreshness(self))

    # ----- lifecycle -----

    async def start(self, *, poll: bool = True) -> None:
        """Sample usage and, with `poll`, poll the providers. Several supervisors on one database sample
        their own sessions each but poll on the leader only (`start_polling`/`stop_polling`)."""
        self._marks = await self.reader.run(repo.load_marks)
        await self._load_last_success()
        self._tasks.append(asyncio.create_task(self._sample_loop(), name="cost-sampler"))
        if poll:
            self.start_polling()

    def start_polling(self) -> None:
        if self.settings.enabled and self._poller is None:
            self._poller = asyncio.create_task(self._poll_loop(), name="cost-poller")
            log.info("cost: polling %s every %g min", ", ".join(p.name for p in self.settings.enabled),
                     self.settings.poll_interval_s / 60)

    async def stop_polling(self) -> None:
        task, self._poller = self._poller, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def stop(self) -> None:
        await self.stop_polling()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        with contextlib.suppress(Exception):
            await self.sample()  # account for the last reported usage

    # ----- provider polling -----

    async def _load_last_success(self) -> None:
        """The newest stored poll of each provider, so the data's age survives a restart."""
        since = (utc_day(self.clock()) - dt.timedelta(days=BACKFILL_DAYS - 1)).isoformat()
        polled = await self.reader.run(lambda c: repo.polled_days(c, since))
        self._stored_success = {name: max(days.values()) for name, days in polled.items() if days}

    def data_ages(self) -> dict[str, float]:
        """Enabled provider -> seconds since its data was last updated (never polled: left out)."""
        now = self.clock()
        out: dict[str, float] = {}
        for p in self.settings.enabled:
            st = self.state.get(p.name)
            times = [t for t in (st.last_success if st else None, self._stored_success.get(p.name)) if t is not None]
            if times:
                out[p.name] = max(0.0, now - max(times))
        return out

    def _source(self, p: ProviderSettings) -> Source:
        if self._sources and p.name in self._sources:
            return self._sources[p.name]
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=False)
        retry = RetryPolicy(self.settings.max_retries, self.settings.backoff_base_s)
        return SOURCES[p.name](p, self._client, retry)

    async def poll_provider(self, p: ProviderSettings) -> bool:
        # One poll per provider at a time: a forced refresh never races the poll loop.
        async with self._poll_locks.setdefault(p.name, asyncio.Lock()):
            return await self._poll_provider(p)

    async def _poll_provider(self, p: ProviderSettings) -> bool:
        st = self.state.setdefault(p.name, ProviderState())
        now = self.clock()
        today = utc_day(now)
        st.last_attempt = now
        since = (today - dt.timedelta(days=BACKFILL_DAYS - 1)).isoformat()
        polled = (await self.reader.run(lambda c: repo.polled_days(c, since))).get(p.name, {})
        need = days_to_poll(today, polled)
        first = need[0] if need else today
        days = [d.isoformat() for d in days_between(first, today)]
        try:
            buckets = await self._source(p).fetch(first, today + dt.timedelta(days=1))
        except (ProviderError, httpx.HTTPError) as exc:
            st.failures += 1
            st.reason = SECRETS.scrub(str(exc)) or type(exc).__name__
            if st.degraded_since is None:
                st.degraded_since = now
                log.warning("cost: provider %s degraded, using estimates from model_rates: %s", p.name, st.reason)
            else:
                log.warning("cost: provider %s still failing: %s", p.name, st.reason)
            self._count(p.name, "failure")
            return False
        await self.writer.run(lambda c: repo.replace_days(c, p.name, days, buckets, now))
        if st.degraded_since is not None:
            log.info("cost: provider %s recovered after %d failed polls", p.name, st.failures)
        st.last_success, st.degraded_since, st.reason, st.failures = now, None, None, 0
        self._count(p.name, "success")
        log.info("cost: %s polled %s..%s: %d buckets", p.name, days[0], days[-1], len(buckets))
        return True

    def _count(self, provider: str, status: str) -> None:
        if self.polls is not None:
            self.polls.labels(provider, status).inc()
        if self.degraded_gauge is not None:
            self.degraded_gauge.labels(provider).set(1 if self.state[provider].degraded_since else 0)

    async def poll_all(self) -> None:
        await asyncio.gather(*(self.poll_provider(p) for p in self.settings.enabled))

    async def _poll_loop(self) -> None:
        interval = self.settings.poll_interval_s
        first_retry = retry_in = min(interval, self.settings.degraded_retry_s)
        while True:
            try:
                await self.poll_all()
            except Exception:
                log.exception("cost: poll failed")
            if self.degraded():
                delay = min(interval, retry_in)
                retry_in = min(interval, retry_in * 2)
            else:
                delay, retry_in = interval, first_retry
            await asyncio.sleep(delay)

    async def refresh(self, names: list[str] | None = None) -> dict[str, bool]:
        """Poll the enabled providers (or only ``names``) now, back-filling every day of the window that
        was never covered; provider -> success. The regular schedule is not changed."""
        chosen = [p for p in self.settings.enabled if names is None or p.name in names]
        results = await asyncio.gather(*(self.poll_provider(p) for p in chosen))
        return {p.name: ok for p, ok in zip(chosen, results, strict=True)}

    def running(self) -> bool:
        """The provider poll loop is alive (False when no provider is enabled: nothing to poll)."""
        return self._poller is not None and not self._poller.done()

    async def health(self) -> dict[str, Any]:
        """What the runbook's "Cost Data Discrepancy" diagnosis asks: is the aggregator polling, when did
        each provider's data last update, which days of the back-fill window (today excluded: it is
        polled again all day) were never covered, which providers are degraded."""
        now = self.clock()
        today = utc_day(now)
        first = today - dt.timedelta(days=BACKFILL_DAYS - 1)
        window = [d.isoformat() for d in days_between(first, today - dt.timedelta(days=1))]
        polled = await self.reader.run(lambda c: repo.polled_days(c, first.isoformat()))
        providers: dict[str, Any] = {}
        missing_all: set[str] = set()
        ages: list[float | None] = []
        for p in self.settings.enabled:
            st = self.state.setdefault(p.name, ProviderState())
            have = polled.get(p.name, {})
            last = max([t for t in (st.last_success, *have.values()) if t is not None], default=None)
            missing = [d for d in window if d not in have]
            missing_all.update(missing)
            age = None if last is None else round(max(0.0, now - last), 1)
            ages.append(age)
            providers[p.name] = st.to_api() | {"last_update": iso(last), "last_update_age_s": age,
                                               "missing_dates": missing}
        return {
            "running": self.running(),
            "poll_interval_s": self.settings.poll_interval_s,
            "providers_configured": [p.name for p in self.settings.enabled],
            "window": [window[0], window[-1]] if window else [],
            "last_update_age_s": None if not ages or None in ages else max(a for a in ages if a is not None),
            "missing_dates": sorted(missing_all),
            "degraded_providers": self.degraded(),
            "providers": providers,
        }

    def degraded(self) -> list[str]:
        return sorted(n for n, st in self.state.items() if st.degraded_since is not None)

    # ----- agent-reported usage -----

    def _rates(self) -> dict[str, Any]:
        return {name: p.rates for name, p in self.settings.providers.items()}

    def session_cost(self, s: Any) -> float:
        """A session's cost: what its agent reported, else the `model_rates` estimate of its tokens."""
        if s.cost_usd and s.cost_usd > 0:
            return float(s.cost_usd)
        provider, name = provider_of(s.model, self._rates())
        rate = find_rate(name, self.settings.rates_for(provider))
        return estimate(rate, s.tokens_input, s.tokens_output, s.tokens_total)

    async def sample(self) -> int:
        """Fold the tracker's cumulative session counters into today's per-session rows; returns the rows."""
        async with self._sample_lock:
            now = self.clock()
            date = utc_day(now).isoformat()
            rows: list[tuple[SessionUsage, int, int, bool]] = []
            marks: dict[str, Mark] = {}
            rates = self._rates()
            # Only the sessions changed since the last sample (issue 22: never every session ever seen).
            changed = self.tracker.drain_changed()
            for s in changed:
                cur = (s.tokens_input, s.tokens_output, max(s.tokens_total, s.tokens_input + s.tokens_output),
                       float(s.cost_usd or 0.0))
                mark = self._marks.get(s.id, (0, 0, 0, 0.0))
                delta = usage_delta(cur, mark)
                if delta is None:
                    continue
                marks[s.id] = cur
                d_in, d_out, d_total, d_cost = delta
                if d_total <= 0 and d_cost <= 0:
                    continue
                provider, name = provider_of(s.model, rates)
                estimated = d_cost <= 0
                if estimated:
                    d_cost = estimate(find_rate(name, self.settings.rates_for(provider)), d_in, d_out, d_total)
                rows.append((SessionUsage(date, s.id, s.project or "", provider, name, d_total, d_cost), d_in, d_out,
                             estimated))
            if marks:
                try:
                    await self.writer.run(lambda c: repo.add_session_usage(c, rows, marks))
                except BaseException:
                    self.tracker.mark_changed([s.id for s in changed])  # sampled again next time
                    raise
                self._marks.update(marks)
            return len(rows)

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            try:
                await self.sample()
                await self.report("today")
            except Exception as exc:
                log.warning("cost: sampling session usage failed: %s", exc)

    # ----- report -----

    async def report(self, period: str = "today") -> dict[str, Any]:
        """`{period, total_tokens, total_cost_usd, daily_average_usd, by_provider, by_model, by_project,
        degraded_providers}`; raises BadPeriod for an unknown period."""
        today = utc_day(self.clock())
        days = period_days(period, today)
        await self.sample()
        since = days[0]

        def load(c: Any) -> tuple[list[Bucket], dict[str, dict[str, float]], list[SessionUsage]]:
            return repo.load_buckets(c, since), repo.polled_days(c, since), repo.load_session_usage(c, since)

        buckets, polled, sessions = await self.reader.run(load)
        covered = {p: set(d) for p, d in polled.items() if p in self.state}
        degraded = self.degraded()
        # A degraded provider's days that were not final at its last good poll: spend since then is
        # only in the agents' reports (max of the two is taken, see report.py).
        provisional = {p: {d for d, at in polled.get(p, {}).items()
                           if at < day_start(dt.date.fromisoformat(d)) + FINAL_AFTER_S} for p in degraded}
        rep = build_report(period, today, buckets, covered, sessions, degraded, provisional)
        if period == "today":
            self.today_cost = rep["total_cost_usd"]
        return rep

    async def daily_cost(self) -> float:
        return (await self.report("today"))["total_cost_usd"]

    def status(self) -> dict[str, Any]:
        return {name: st.to_api() for name, st in sorted(self.state.items())}


__all__ = ["PERIOD_DAYS", "CostAggregator", "days_to_poll", "usage_delta"]


class _CostFreshness(Collector):
    """`hal_o_swarm_cost_data_age_seconds{provider}`, computed at scrape time (never a stale age)."""

    def __init__(self, aggregator: CostAggregator) -> None:
        self.aggregator = aggregator

    def collect(self) -> Iterable[Metric]:
        fam = GaugeMetricFamily("hal_o_swarm_cost_data_age_seconds",
                                "Seconds since the provider's cost data was last updated by a successful poll",
                                labels=["provider"])
        for name, age in self.aggregator.data_ages().items():
            fam.add_metric([name], age)
        yield fam
