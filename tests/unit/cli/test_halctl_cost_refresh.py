"""`halctl cost PERIOD` refreshes first (the runbook's "force cost update"), with a bounded wait (issue 23)."""

from __future__ import annotations

import httpx

from tests.fakes.supervisor_api import FakeSupervisor, err

REPORT = {"period": "today", "total_tokens": 10, "total_cost_usd": 1.5, "daily_average_usd": 1.5,
          "by_provider": [{"provider": "anthropic", "tokens": 10, "cost_usd": 1.5}], "by_model": [],
          "by_project": [], "degraded_providers": ["openai"]}
HEALTH = {"providers": {"anthropic": {"degraded": False}, "openai": {"degraded": True, "reason": "HTTP 503"}}}


def paths(fake: FakeSupervisor) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in fake.requests]


def test_refresh_then_report_and_failed_provider_named(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("POST", "/api/v1/cost/refresh", {"results": {"anthropic": True, "openai": False}, "health": HEALTH})
    fake.reply("GET", "/api/v1/cost/today", REPORT)
    result = halctl("cost", "today")
    assert result.exit_code == 0, result.stderr
    assert paths(fake) == ["POST /api/v1/cost/refresh", "GET /api/v1/cost/today"]
    assert "provider openai failed (HTTP 503)" in result.stderr
    assert "openai" in result.stdout  # DEGRADED_PROVIDERS stays in the report itself
    assert "anthropic failed" not in result.stderr


def test_cached_skips_the_refresh(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/cost/week", {**REPORT, "period": "week"})
    result = halctl("cost", "week", "--cached")
    assert result.exit_code == 0, result.stderr
    assert paths(fake) == ["GET /api/v1/cost/week"]


def test_refresh_timeout_still_prints_the_report(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    def slow(request: httpx.Request) -> httpx.Response:
        assert request.extensions["timeout"]["read"] == 2.5  # the bound is the one asked for
        raise httpx.ReadTimeout("timed out", request=request)

    fake.route("POST", "/api/v1/cost/refresh", slow)
    fake.reply("GET", "/api/v1/cost/month", {**REPORT, "period": "month"})
    result = halctl("-o", "json", "cost", "month", "--refresh-timeout", "2.5")
    assert result.exit_code == 0, result.stderr
    assert "no answer within 2.5 s" in result.stderr
    assert result.json()["degraded_providers"] == ["openai"]


def test_refresh_refused_is_reported_not_fatal(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/cost/refresh", lambda _r: err(400, "VALIDATION_ERROR", "no provider"))
    fake.reply("GET", "/api/v1/cost/today", REPORT)
    result = halctl("cost", "today")
    assert result.exit_code == 0 and "cost refresh failed" in result.stderr


def test_unreachable_supervisor_is_still_an_error(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    fake.route("POST", "/api/v1/cost/refresh", down)
    fake.route("GET", "/api/v1/cost/today", down)
    assert halctl("cost", "today").exit_code != 0
