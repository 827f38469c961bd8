"""Cost endpoints and `halctl cost` against the real supervisor, with fake provider APIs on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fakes.fake_providers import ANTHROPIC_KEY, OPENAI_KEY, fake_providers
from tests.support.agentsim import SimAgent, session_state
from tests.support.waiting import wait_for

TODAY = dt.datetime.now(dt.UTC).date()
# The supervisors of the tests keyed by the date see noon of TODAY (tests/support/noon_supervisor.py):
# a run crossing midnight UTC stays on the day the provider data was put on.
NOON = ["-m", "tests.support.noon_supervisor", TODAY.isoformat()]
FIELDS = {"period", "total_tokens", "total_cost_usd", "daily_average_usd", "by_provider", "by_model", "by_project",
          "degraded_providers"}

# The installed `halctl` console script (the real entry point, next to this interpreter).
HALCTL = str(Path(sys.executable).parent / "halctl")


def day(offset: int) -> str:
    return (TODAY - dt.timedelta(days=offset)).isoformat()


def halctl(sup: Any, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_")}
    env |= {"HOME": str(sup.workdir), "HALCTL_SUPERVISOR_URL": sup.api, "HALCTL_AUTH_TOKEN": sup.token}
    p = subprocess.run([HALCTL, *args], capture_output=True, text=True, env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


def providers(url: str) -> dict[str, Any]:
    return {"poll_interval_minutes": 60, "degraded_retry_seconds": 1, "request_timeout_seconds": 2,
            "max_retries": 1, "backoff_base_ms": 10,
            "providers": {
                "anthropic": {"admin_api_key": ANTHROPIC_KEY, "base_url": url,
                              "model_rates": {"claude-sonnet-4-5": {"input": 0.003, "output": 0.015}}},
                "openai": {"org_api_key": OPENAI_KEY, "base_url": url,
                           "model_rates": {"o3": {"input": 0.002, "output": 0.008}}}}}


def test_cost_without_providers_is_zeros_never_503(supervisor: Any) -> None:
    with supervisor.client() as c:
        for path in ("/api/v1/cost", "/api/v1/cost?period=week", "/api/v1/cost/today", "/api/v1/cost/week",
                     "/api/v1/cost/month"):
            r = c.get(path)
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            assert set(data) == FIELDS and data["total_cost_usd"] == 0 and data["by_provider"] == []
        assert c.get("/api/v1/cost?period=week").json()["data"]["period"] == "week"
        bad = c.get("/api/v1/cost/year")
        assert bad.status_code == 400 and bad.json()["code"] == "VALIDATION_ERROR"
    code, out, err = halctl(supervisor, "cost", "month", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["total_cost_usd"] == 0


async def test_cost_report_from_providers_and_agents_matches_halctl(make_supervisor: Any) -> None:
    with fake_providers(page_size=3) as fake:
        fake.anthropic_day(day(0), "claude-sonnet-4-5", 10_000, 2_000, cents=450)  # $4.50
        fake.anthropic_day(day(3), "claude-sonnet-4-5", 1_000, 1_000, cents=100)
        fake.openai_day(day(1), "o3", 5_000, 500, usd=1.25)
        fake.fail("anthropic", "usage", 429, retry_after="0")
        sup = make_supervisor(cost=providers(fake.url))
        sup.launcher = NOON
        sup.start()
        agent = SimAgent(sup.ws_url, sup.agent_token, "cost-node", [("alpha", "/srv/alpha")])
        await agent.connect(sessions=[session_state("ses_c1", "alpha", "idle", model="fake/fake-model",
                                                    tokens={"input": 300, "output": 200, "total": 500},
                                                    cost_usd=0.5)])
        try:
            with sup.client() as c:
                def polled() -> Any:
                    data = c.get("/api/v1/cost/week").json()["data"]
                    return data if {p["provider"] for p in data["by_provider"]} >= {"anthropic", "openai"} else None

                week = await asyncio.to_thread(wait_for, polled)
                meta = c.get("/api/v1/cost/week").json()["meta"]
            assert week["degraded_providers"] == [] and meta["providers"]["anthropic"]["degraded"] is False
            by_provider = {p["provider"]: p for p in week["by_provider"]}
            assert by_provider["anthropic"] == {"provider": "anthropic", "tokens": 14_000, "cost_usd": 5.5}
            assert by_provider["openai"] == {"provider": "openai", "tokens": 5_500, "cost_usd": 1.25}
            assert by_provider["fake"] == {"provider": "fake", "tokens": 500, "cost_usd": 0.5}  # agent-reported
            assert week["total_cost_usd"] == 7.25 and week["total_tokens"] == 20_000
            assert abs(week["daily_average_usd"] - 7.25 / 7) < 1e-6
            projects = {p["project"]: p["cost_usd"] for p in week["by_project"]}
            assert projects == {"(unattributed)": 6.75, "alpha": 0.5}
            # The CLI shows exactly what the API sends.
            code, out, err = await asyncio.to_thread(halctl, sup, "cost", "week", "-o", "json")
            assert code == 0, err
            assert json.loads(out) == week
            code, out, err = await asyncio.to_thread(halctl, sup, "cost", "week")
            assert code == 0, err
            # Piped with no --output: one `key: value` line per field and per item (issue 23).
            for text in ("total_cost_usd: 7.2500", "daily_average_usd: 1.0357", "by: provider  provider: anthropic",
                         "by: model  provider: anthropic  model: claude-sonnet-4-5",
                         "by: project  project: (unattributed)"):
                assert text in out.splitlines() or any(ln.startswith(text) for ln in out.splitlines()), out
            code, out, err = await asyncio.to_thread(halctl, sup, "-o", "table", "cost", "week")
            assert code == 0, err
            for text in ("TOTAL_COST_USD", "7.2500", "DAILY_AVERAGE_USD", "1.0357", "BY PROVIDER", "anthropic",
                         "BY MODEL", "claude-sonnet-4-5", "BY PROJECT", "(unattributed)"):
                assert text in out, out
            code, out, _ = await asyncio.to_thread(halctl, sup, "cost", "today", "-o", "yaml")
            assert code == 0 and "period: today" in out and "total_cost_usd: 5.0" in out
        finally:
            await agent.close()
            sup.stop()


async def test_failing_provider_is_degraded_then_recovers(make_supervisor: Any) -> None:
    with fake_providers() as fake:
        fake.down.add("anthropic")
        cost = providers(fake.url)
        del cost["providers"]["openai"]
        sup = make_supervisor(cost=cost)
        sup.launcher = NOON
        sup.start()
        agent = SimAgent(sup.ws_url, sup.agent_token, "cost-node", [("alpha", "/srv/alpha")])
        await agent.connect(sessions=[session_state("ses_d1", "alpha", "running",
                                                    model="anthropic/claude-sonnet-4-5",
                                                    tokens={"input": 1000, "output": 1000, "total": 2000})])
        try:
            with sup.client() as c:
                def degraded() -> Any:
                    data = c.get("/api/v1/cost/today").json()["data"]
                    return data if data["degraded_providers"] == ["anthropic"] else None

                today = await asyncio.to_thread(wait_for, degraded)
                # Estimate from model_rates: 1000 * 0.003/1k + 1000 * 0.015/1k.
                assert today["by_provider"] == [{"provider": "anthropic", "tokens": 2000, "cost_usd": 0.018}]
                assert today["by_project"] == [{"project": "alpha", "tokens": 2000, "cost_usd": 0.018}]
                fake.down.clear()
                fake.anthropic_day(day(0), "claude-sonnet-4-5", 40_000, 10_000, cents=300)

                def recovered() -> Any:
                    data = c.get("/api/v1/cost/today").json()["data"]
                    return data if not data["degraded_providers"] else None

                today = await asyncio.to_thread(wait_for, recovered, "the provider recovered", 20)
                assert today["by_provider"] == [{"provider": "anthropic", "tokens": 50_000, "cost_usd": 3.0}]
                metrics = c.get("/metrics").text
            assert 'hal_o_swarm_cost_polls_total{provider="anthropic",status="failure"}' in metrics
            assert 'hal_o_swarm_cost_provider_degraded{provider="anthropic"} 0.0' in metrics
            assert "degraded, using estimates" in sup.log_path.read_text()
            assert ANTHROPIC_KEY not in sup.log_path.read_text()
        finally:
            await agent.close()
            sup.stop()
