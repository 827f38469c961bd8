"""Report math (pure): provider buckets vs agent-reported usage, periods, averages, attribution."""

from __future__ import annotations

import datetime as dt

import pytest

from halswarm.core.cost import Bucket, SessionUsage, day_of, merge
from halswarm.supervisor.features.cost.anthropic import parse_costs as a_costs
from halswarm.supervisor.features.cost.anthropic import parse_usage as a_usage
from halswarm.supervisor.features.cost.estimates import estimate, find_rate, provider_of, split_model
from halswarm.supervisor.features.cost.openai import model_of_line_item
from halswarm.supervisor.features.cost.openai import parse_costs as o_costs
from halswarm.supervisor.features.cost.openai import parse_usage as o_usage
from halswarm.supervisor.features.cost.report import UNATTRIBUTED, BadPeriod, build_report, empty_report
from halswarm.supervisor.features.cost.settings import CostSettings, Rate

TODAY = dt.date(2025, 8, 10)


def d(offset: int) -> str:
    return (TODAY - dt.timedelta(days=offset)).isoformat()


def test_empty_report_has_every_field_with_zeros() -> None:
    rep = build_report("week", TODAY, [], {}, [], [])
    assert rep == empty_report("week")
    assert set(rep) == {"period", "total_tokens", "total_cost_usd", "daily_average_usd", "by_provider", "by_model",
                        "by_project", "degraded_providers"}


def test_unknown_period_is_refused() -> None:
    with pytest.raises(BadPeriod):
        build_report("year", TODAY, [], {}, [], [])
    with pytest.raises(BadPeriod):
        empty_report("yesterday")


def test_provider_buckets_totals_and_average() -> None:
    buckets = [
        Bucket("anthropic", d(0), "claude-sonnet-4", "wrk", 1000, 500, 1.5),
        Bucket("anthropic", d(1), "claude-sonnet-4", "wrk", 2000, 0, 2.0),
        Bucket("openai", d(6), "gpt-4o", "proj", 100, 100, 0.5),
        Bucket("openai", d(7), "gpt-4o", "proj", 100, 100, 9.0),  # outside the week
    ]
    covered = {"anthropic": {d(0), d(1)}, "openai": {d(6), d(7)}}
    rep = build_report("week", TODAY, buckets, covered, [], [])
    assert rep["total_cost_usd"] == pytest.approx(4.0)
    assert rep["total_tokens"] == 1500 + 2000 + 200
    assert rep["daily_average_usd"] == pytest.approx(4.0 / 7)
    assert rep["by_provider"] == [{"provider": "anthropic", "tokens": 3500, "cost_usd": 3.5},
                                  {"provider": "openai", "tokens": 200, "cost_usd": 0.5}]
    assert rep["by_model"][0] == {"provider": "anthropic", "model": "claude-sonnet-4", "tokens": 3500, "cost_usd": 3.5}
    # Nothing attributed to fleet projects: all of it is unattributed org usage.
    assert rep["by_project"] == [{"project": UNATTRIBUTED, "tokens": 3700, "cost_usd": 4.0}]
    today = build_report("today", TODAY, buckets, covered, [], [])
    assert today["total_cost_usd"] == pytest.approx(1.5) and today["daily_average_usd"] == pytest.approx(1.5)
    month = build_report("month", TODAY, buckets, covered, [], [])
    assert month["total_cost_usd"] == pytest.approx(13.0)
    assert month["daily_average_usd"] == pytest.approx(13.0 / 30)


def test_sessions_fill_in_days_without_provider_data_and_are_not_double_counted() -> None:
    buckets = [Bucket("anthropic", d(0), "claude-sonnet-4", "wrk", 1000, 0, 3.0)]
    sessions = [
        SessionUsage(d(0), "s1", "alpha", "anthropic", "claude-sonnet-4", 900, 2.5),  # inside the bucket
        SessionUsage(d(1), "s1", "alpha", "anthropic", "claude-sonnet-4", 400, 1.0),  # day not covered
        SessionUsage(d(0), "s2", "beta", "fake", "fake-model", 50, 0.25),  # provider without reports
    ]
    rep = build_report("week", TODAY, buckets, {"anthropic": {d(0)}}, sessions, ["anthropic"])
    assert rep["total_cost_usd"] == pytest.approx(3.0 + 1.0 + 0.25)
    assert rep["total_tokens"] == 1000 + 400 + 50
    assert {r["provider"]: r["cost_usd"] for r in rep["by_provider"]} == {"anthropic": 4.0, "fake": 0.25}
    projects = {r["project"]: r for r in rep["by_project"]}
    assert projects["alpha"]["cost_usd"] == pytest.approx(3.5)
    assert projects["beta"]["cost_usd"] == pytest.approx(0.25)
    assert projects[UNATTRIBUTED]["cost_usd"] == pytest.approx(0.5)
    assert sum(p["cost_usd"] for p in rep["by_project"]) == pytest.approx(rep["total_cost_usd"])
    assert rep["degraded_providers"] == ["anthropic"]


def test_anthropic_parsers_real_shapes() -> None:
    buckets = [{"starting_at": "2025-08-09T00:00:00Z", "ending_at": "2025-08-10T00:00:00Z", "results": [
        {"uncached_input_tokens": 100, "cache_read_input_tokens": 20,
         "cache_creation": {"ephemeral_1h_input_tokens": 5, "ephemeral_5m_input_tokens": 7},
         "output_tokens": 50, "server_tool_use": {"web_search_requests": 0}, "model": "claude-x",
         "workspace_id": None, "api_key_id": None, "service_tier": None, "context_window": None}]}]
    assert a_usage(buckets) == {("2025-08-09", "claude-x", "default"): (132, 50)}
    costs = [{"starting_at": "2025-08-09T00:00:00Z", "ending_at": "2025-08-10T00:00:00Z", "results": [
        {"currency": "USD", "amount": "123.45", "workspace_id": None, "description": "x", "cost_type": "tokens",
         "model": "claude-x", "token_type": "output_tokens", "context_window": None, "service_tier": None},
        {"currency": "USD", "amount": "10", "workspace_id": None, "description": "web", "cost_type": "web_search",
         "model": None, "token_type": None, "context_window": None, "service_tier": None}]}]
    assert a_costs(costs) == {("2025-08-09", "claude-x", "default"): pytest.approx(1.2345),
                              ("2025-08-09", "unknown", "default"): pytest.approx(0.10)}
    merged = merge("anthropic", a_usage(buckets), a_costs(costs))
    assert [(b.model, b.tokens, round(b.cost_usd, 4)) for b in merged] == [("claude-x", 182, 1.2345),
                                                                           ("unknown", 0, 0.1)]


def test_openai_parsers_real_shapes() -> None:
    usage = [{"object": "bucket", "start_time": 1754697600, "end_time": 1754784000, "results": [
        {"object": "organization.usage.completions.result", "input_tokens": 1000, "output_tokens": 500,
         "input_cached_tokens": 800, "num_model_requests": 5, "project_id": "proj_a", "user_id": None,
         "api_key_id": None, "model": "gpt-4o", "batch": None}]}]
    assert o_usage(usage) == {("2025-08-09", "gpt-4o", "proj_a"): (1000, 500)}
    costs = [{"object": "bucket", "start_time": 1754697600, "end_time": 1754784000, "results": [
        {"object": "organization.costs.result", "amount": {"value": 0.06, "currency": "usd"},
         "line_item": "gpt-4o, input", "project_id": "proj_a"},
        {"object": "organization.costs.result", "amount": {"value": 0.04, "currency": "usd"},
         "line_item": "gpt-4o, output", "project_id": "proj_a"}]}]
    assert o_costs(costs) == {("2025-08-09", "gpt-4o", "proj_a"): pytest.approx(0.10)}
    assert model_of_line_item(None) == "unknown" and model_of_line_item("Image models") == "Image models"


def test_day_of_and_model_mapping() -> None:
    assert day_of("2025-08-09T00:00:00Z") == "2025-08-09"
    assert day_of(1754697600) == "2025-08-09"
    assert day_of("garbage") is None
    assert split_model("anthropic/claude-sonnet-4-5") == ("anthropic", "claude-sonnet-4-5")
    rates = {"anthropic": {"claude-sonnet-4-5": Rate(0.003, 0.015)}, "openai": {"o3": Rate(0.002, 0.008)}}
    assert provider_of("claude-sonnet-4-5-20250929", rates) == ("anthropic", "claude-sonnet-4-5-20250929")
    assert provider_of("o3", rates) == ("openai", "o3")
    assert provider_of("gpt-5", rates) == ("openai", "gpt-5")
    assert provider_of("fake/fake-model", rates) == ("fake", "fake-model")
    assert provider_of(None, rates) == ("unknown", "unknown")
    assert find_rate("claude-sonnet-4-5-20250929", rates["anthropic"]) == Rate(0.003, 0.015)
    assert find_rate("claude-haiku", rates["anthropic"]) is None


def test_estimates_from_model_rates() -> None:
    rate = Rate(0.003, 0.015)
    assert estimate(rate, 1000, 1000) == pytest.approx(0.018)
    assert estimate(rate, 0, 0, 2000) == pytest.approx(0.018)  # Go rule: blended average for totals
    assert estimate(Rate(0.0, 0.01), 0, 0, 1000) == pytest.approx(0.01)
    assert estimate(None, 1000, 1000) == 0.0


def test_settings_go_key_rules() -> None:
    s = CostSettings.parse({"poll_interval_minutes": 0.5, "providers": {
        "anthropic": {"admin_api_key": "k1", "base_url": "http://127.0.0.1:1/v1/"},
        "openai": {"org_api_key": "k2", "enabled": False},
        "google": {"api_key": "k3"}}})
    assert [p.name for p in s.enabled] == ["anthropic"]
    assert s.providers["anthropic"].root == "http://127.0.0.1:1"
    assert s.poll_interval_s == 30
    assert CostSettings.parse(None).enabled == []


def test_provisional_days_of_a_degraded_provider_count_the_larger_of_provider_and_sessions() -> None:
    buckets = [Bucket("anthropic", d(0), "claude-sonnet-4", "wrk", 1000, 0, 1.0),
               Bucket("anthropic", d(1), "claude-sonnet-4", "wrk", 9000, 0, 9.0)]
    sessions = [SessionUsage(d(0), "s1", "alpha", "anthropic", "claude-sonnet-4", 5000, 50.0),
                SessionUsage(d(1), "s1", "alpha", "anthropic", "claude-sonnet-4", 800, 2.0)]
    covered = {"anthropic": {d(0), d(1)}}
    # not provisional: the provider's numbers, sessions inside them
    rep = build_report("week", TODAY, buckets, covered, sessions, ["anthropic"])
    assert rep["total_cost_usd"] == pytest.approx(10.0)
    # both days provisional: today the sessions are larger (spend after the last good poll), yesterday the provider
    rep = build_report("week", TODAY, buckets, covered, sessions, ["anthropic"],
                       {"anthropic": {d(0), d(1)}})
    assert rep["total_cost_usd"] == pytest.approx(50.0 + 9.0)
    assert rep["total_tokens"] == 5000 + 9000
    assert rep["by_model"] == [{"provider": "anthropic", "model": "claude-sonnet-4", "tokens": 14000,
                                "cost_usd": 59.0}]
    assert sum(p["cost_usd"] for p in rep["by_project"]) == pytest.approx(rep["total_cost_usd"])
