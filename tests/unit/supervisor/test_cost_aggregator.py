"""Cost aggregator against the fake provider APIs (loopback) and a real SQLite store."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from halswarm.core.cost import day_start
from halswarm.core.model import Session
from halswarm.store.reader import Reader
from halswarm.store.writer import Writer
from halswarm.supervisor.features.cost.aggregator import CostAggregator, days_to_poll, usage_delta
from halswarm.supervisor.features.cost.settings import CostSettings
from tests.fakes.fake_providers import ANTHROPIC_KEY, OPENAI_KEY, FakeProviders, fake_providers
from tests.support.store_engines import StoreDb
from tests.support.store_rig import running_store

pytestmark = pytest.mark.process  # fake provider APIs on loopback

TODAY = dt.datetime.now(dt.UTC).date()
# Noon of TODAY, not the wall clock: the tests move their clock by minutes to days and must stay on the
# UTC day they expect whatever time the suite runs at (at 23:xx UTC an hour later is the next day).
NOW = dt.datetime.combine(TODAY, dt.time(12), dt.UTC).timestamp()


def day(offset: int) -> str:
    return (TODAY - dt.timedelta(days=offset)).isoformat()


class Tracker:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}

    def add(self, sid: str, project: str, model: str, tin: int, tout: int, cost: float = 0.0) -> Session:
        s = Session(id=sid, node_id="n1", project=project, status="running", model=model, tokens_input=tin,
                    tokens_output=tout, tokens_total=tin + tout, cost_usd=cost, started_at=NOW)
        self.sessions[sid] = s
        return s

    def drain_changed(self) -> list[Session]:
        return list(self.sessions.values())  # a fake that cannot tell: every session may have changed

    def mark_changed(self, ids: object) -> None:
        pass


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def fake() -> Iterator[FakeProviders]:
    with fake_providers(page_size=2) as f:
        yield f


@pytest.fixture
async def db(store_db: StoreDb) -> AsyncIterator[tuple[Writer, Reader, StoreDb]]:
    """The aggregator's store on each engine (SQLite, PostgreSQL)."""
    async with running_store(store_db) as store:
        yield store


def config(fake: FakeProviders, *, retries: int = 2, anthropic: bool = True, openai: bool = True,
           key: str = ANTHROPIC_KEY) -> CostSettings:
    providers: dict[str, Any] = {}
    if anthropic:
        providers["anthropic"] = {"admin_api_key": key, "base_url": fake.url,
                                  "model_rates": {"claude-sonnet-4-5": {"input": 0.003, "output": 0.015}}}
    if openai:
        providers["openai"] = {"org_api_key": OPENAI_KEY, "base_url": fake.url + "/v1",
                               "model_rates": {"o3": {"input": 0.002, "output": 0.008}}}
    return CostSettings.parse({"poll_interval_minutes": 60, "request_timeout_seconds": 2, "max_retries": retries,
                               "backoff_base_ms": 10, "providers": providers})


def rows(db: StoreDb, sql: str) -> list[tuple[Any, ...]]:
    c = db.connect()
    try:
        return [tuple(r) for r in c.execute(sql).fetchall()]
    finally:
        c.close()


async def test_poll_follows_pages_and_stores_daily_buckets(fake: FakeProviders, db: Any) -> None:
    writer, reader, path = db
    fake.anthropic_day(day(0), "claude-sonnet-4-5", 1000, 500, cents=150)  # $1.50
    fake.anthropic_day(day(1), "claude-sonnet-4-5", 2000, 0, cents=200)
    fake.openai_day(day(5), "o3", 100, 100, usd=0.5)
    fake.openai_day(day(5), "o3", 100, 100, usd=0.25, project="proj_other")
    agg = CostAggregator(config(fake), Tracker(), writer, reader, clock=Clock())
    await agg.poll_all()
    # 31 days asked with 2 buckets per page: 16 pages per report, both reports, both providers.
    assert fake.count("anthropic", "usage") == 16 and fake.count("openai", "cost") == 16
    pages = [r["query"].get("page") for r in fake.requests if r["provider"] == "anthropic" and r["kind"] == "usage"]
    assert pages[0] is None and all(pages[1:])
    # Providers are polled concurrently: take the first request of Anthropic's usage report, not of the run.
    first = next(r["query"] for r in fake.requests if r["provider"] == "anthropic" and r["kind"] == "usage")
    assert first["bucket_width"] == ["1d"] and first["group_by[]"] == ["model", "workspace_id"]
    oa = next(r["query"] for r in fake.requests if r["provider"] == "openai" and r["kind"] == "usage")
    assert oa["group_by"] == ["model", "project_id"] and int(oa["end_time"][0]) == int(day_start(TODAY) + 86400)
    stored = [(*r[:5], round(r[5], 4)) for r in rows(
        path, "SELECT provider, date, model, project, tokens, cost_usd FROM costs ORDER BY 1,2,4")]
    assert stored == [
        ("anthropic", day(1), "claude-sonnet-4-5", "wrkspc_fleet", 2000, 2.0),
        ("anthropic", day(0), "claude-sonnet-4-5", "wrkspc_fleet", 1500, 1.5),
        ("openai", day(5), "o3", "proj_fleet", 200, 0.5),
        ("openai", day(5), "o3", "proj_other", 200, 0.25),
    ]
    assert rows(path, "SELECT COUNT(*) FROM cost_polls WHERE provider='anthropic'") == [(31,)]
    week = await agg.report("week")
    assert week["total_cost_usd"] == pytest.approx(4.25)
    assert week["total_tokens"] == 3500 + 400
    assert week["by_provider"] == [{"provider": "anthropic", "tokens": 3500, "cost_usd": 3.5},
                                   {"provider": "openai", "tokens": 400, "cost_usd": 0.75}]
    assert week["daily_average_usd"] == pytest.approx(4.25 / 7)
    assert week["degraded_providers"] == []
    assert (await agg.report("today"))["total_cost_usd"] == pytest.approx(1.5)
    assert agg.today_cost == pytest.approx(1.5)


async def test_backfill_asks_only_for_days_not_yet_final(fake: FakeProviders, db: Any) -> None:
    writer, reader, path = db
    clock = Clock()
    agg = CostAggregator(config(fake, openai=False), Tracker(), writer, reader, clock=clock)
    await agg.poll_all()
    starts = [r["query"]["starting_at"][0] for r in fake.requests if r["query"].get("page") is None]
    assert starts[0].startswith(day(30))
    fake.requests.clear()
    clock.t += 3600  # next poll an hour later: only today and yesterday are open
    await agg.poll_all()
    starts = [r["query"]["starting_at"][0] for r in fake.requests if r["query"].get("page") is None]
    assert starts and all(s.startswith(day(1)) for s in starts)
    fake.requests.clear()
    clock.t += 5 * 86400  # the supervisor was down for five days: the missed days are fetched
    fake.anthropic_day(day(-3), "claude-sonnet-4-5", 10, 10, cents=10)
    await agg.poll_all()
    starts = [r["query"]["starting_at"][0] for r in fake.requests if r["query"].get("page") is None]
    assert starts and all(s.startswith(day(1)) for s in starts)
    assert rows(path, f"SELECT tokens FROM costs WHERE date='{day(-3)}'") == [(20,)]
    assert days_to_poll(TODAY, {})[0].isoformat() == day(30)


async def test_429_with_retry_after_and_500_are_retried(fake: FakeProviders, db: Any) -> None:
    writer, reader, _ = db
    fake.anthropic_day(day(0), "claude-sonnet-4-5", 10, 10, cents=100)
    fake.fail("anthropic", "usage", 429, retry_after="1")
    fake.fail("anthropic", "cost", 500, times=2)
    agg = CostAggregator(config(fake, openai=False, retries=2), Tracker(), writer, reader, clock=Clock())
    started = time.monotonic()
    await agg.poll_all()
    assert time.monotonic() - started >= 0.95  # Retry-After: 1 was honoured
    assert agg.degraded() == []
    assert fake.count("anthropic", "usage") == 16 + 1 and fake.count("anthropic", "cost") == 16 + 2
    assert (await agg.report("today"))["total_cost_usd"] == pytest.approx(1.0)


async def test_client_errors_are_not_retried(fake: FakeProviders, db: Any) -> None:
    writer, reader, _ = db
    agg = CostAggregator(config(fake, openai=False, key="sk-ant-admin-wrong"), Tracker(), writer, reader,
                         clock=Clock())
    await agg.poll_all()
    assert fake.count("anthropic") == 1
    assert agg.degraded() == ["anthropic"]
    assert "HTTP 401" in (agg.state["anthropic"].reason or "")
    assert ANTHROPIC_KEY not in (agg.state["anthropic"].reason or "")


async def test_degraded_provider_falls_back_to_session_estimates_then_recovers(fake: FakeProviders, db: Any) -> None:
    writer, reader, _ = db
    tracker = Tracker()
    tracker.add("s1", "alpha", "anthropic/claude-sonnet-4-5", 1000, 1000)  # no reported cost: estimated
    tracker.add("s2", "beta", "fake/fake-model", 10, 5, cost=0.25)  # reported by the agent
    fake.down.add("anthropic")
    agg = CostAggregator(config(fake, openai=False, retries=1), tracker, writer, reader, clock=Clock())
    await agg.poll_all()
    assert fake.count("anthropic") == 2  # one try + one retry, then degraded
    rep = await agg.report("today")
    assert rep["degraded_providers"] == ["anthropic"]
    assert {r["provider"]: r["cost_usd"] for r in rep["by_provider"]} == {"anthropic": 0.018, "fake": 0.25}
    assert {r["project"]: r["cost_usd"] for r in rep["by_project"]} == {"alpha": 0.018, "beta": 0.25}
    assert rep["total_cost_usd"] == pytest.approx(0.268)
    assert rep["total_tokens"] == 2015
    # The provider comes back; its numbers replace the estimates (the session is inside them).
    fake.down.clear()
    fake.anthropic_day(day(0), "claude-sonnet-4-5", 5000, 1000, cents=500)
    await agg.poll_all()
    rep = await agg.report("today")
    assert rep["degraded_providers"] == []
    assert {r["provider"]: r["cost_usd"] for r in rep["by_provider"]} == {"anthropic": 5.0, "fake": 0.25}
    projects = {r["project"]: r["cost_usd"] for r in rep["by_project"]}
    assert projects["alpha"] == 0.018 and projects["(unattributed)"] == pytest.approx(5.0 - 0.018)


async def test_session_usage_is_counted_once_across_samples_and_restarts(fake: FakeProviders, db: Any) -> None:
    writer, reader, path = db
    tracker = Tracker()
    s = tracker.add("s1", "alpha", "openai/o3", 1000, 0, cost=0.5)
    agg = CostAggregator(CostSettings(), tracker, writer, reader, clock=Clock())
    await agg.start()
    try:
        assert await agg.sample() == 1
        assert await agg.sample() == 0
        s.tokens_input, s.tokens_total, s.cost_usd = 1500, 1500, 0.75
        assert await agg.sample() == 1
    finally:
        await agg.stop()
    again = CostAggregator(CostSettings(), tracker, writer, reader, clock=Clock())
    await again.start()
    try:
        assert await again.sample() == 0
        rep = await again.report("today")
    finally:
        await again.stop()
    assert rep["total_cost_usd"] == pytest.approx(0.75) and rep["total_tokens"] == 1500
    assert rows(path, "SELECT session_id, tokens, cost_usd FROM session_usage") == [("s1", 1500, 0.75)]
    assert usage_delta((5, 0, 5, 0.0), (10, 0, 10, 0.0)) == (0, 0, 0, 0.0)


async def test_nothing_configured_reports_zeros(db: Any) -> None:
    writer, reader, _ = db
    agg = CostAggregator(CostSettings(), Tracker(), writer, reader)
    await agg.start()
    try:
        rep = await agg.report("month")
    finally:
        await agg.stop()
    assert rep == {"period": "month", "total_tokens": 0, "total_cost_usd": 0.0, "daily_average_usd": 0.0,
                   "by_provider": [], "by_model": [], "by_project": [], "degraded_providers": []}


async def test_provider_failing_after_a_good_poll_today_does_not_hide_later_spend(fake: FakeProviders,
                                                                                  db: Any) -> None:
    """Reviewer's repro: provider polled OK at $1 this morning, sessions since spent $50 (agent-reported),
    then the provider fails: today's total must include the $50, and recovery must not count it twice."""
    writer, reader, _ = db
    clock = Clock()
    tracker = Tracker()
    s = tracker.add("s1", "alpha", "anthropic/claude-sonnet-4-5", 100, 100, cost=0.5)
    fake.anthropic_day(day(0), "claude-sonnet-4-5", 1000, 0, cents=100)  # $1 (s1's $0.5 inside)
    agg = CostAggregator(config(fake, openai=False, retries=1), tracker, writer, reader, clock=clock)
    await agg.poll_all()
    assert (await agg.report("today"))["total_cost_usd"] == pytest.approx(1.0)
    clock.t += 600
    s.tokens_input, s.tokens_output, s.tokens_total, s.cost_usd = 100_000, 100_000, 200_000, 50.0
    fake.down.add("anthropic")
    await agg.poll_all()
    rep = await agg.report("today")
    assert rep["degraded_providers"] == ["anthropic"]
    assert rep["total_cost_usd"] == pytest.approx(50.0)
    assert {r["project"]: r["cost_usd"] for r in rep["by_project"]} == {"alpha": 50.0}
    assert await agg.daily_cost() == pytest.approx(50.0)  # what kill_on_cost daily and `cost.daily` see
    # Recovery: the provider's re-polled numbers count again, the sessions are inside them (no double count).
    fake.down.clear()
    fake.data["anthropic"]["usage"].clear()
    fake.data["anthropic"]["cost"].clear()
    fake.anthropic_day(day(0), "claude-sonnet-4-5", 200_000, 100_000, cents=5200)  # $52
    clock.t += 600
    await agg.poll_all()
    rep = await agg.report("today")
    assert rep["degraded_providers"] == []
    assert rep["total_cost_usd"] == pytest.approx(52.0)
    projects = {r["project"]: r["cost_usd"] for r in rep["by_project"]}
    assert projects["alpha"] == pytest.approx(50.0) and projects["(unattributed)"] == pytest.approx(2.0)
