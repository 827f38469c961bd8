"""Built-in triggers of the real supervisor beyond agent-crashed.

agent-high-memory started by the real supervisor itself: a simulated agent whose heartbeats report
memory above `remediation.memory_percent` gets the real `halctl remediate agent-high-memory` (real
ansible-runner, local connection) on its inventory host, once per window: the heartbeats keep coming,
the detector fires again, and that firing is throttled. A node below the threshold gets nothing.

This host runs no hal-agent.service, so the playbook's honest outcome is whatever it diagnoses; the test
asserts the mechanism, not that outcome.

cost-data-discrepancy: a cost provider that keeps failing (fake provider answering 500) gets the real
`halctl remediate cost-data-discrepancy` on the supervisor host once, however many polls keep failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import pytest

from halswarm.protocol import Heartbeat, encode
from tests.fakes.fake_providers import ANTHROPIC_KEY, fake_providers
from tests.fakes.receivers import Receiver, receivers
from tests.support.agentsim import SimAgent
from tests.support.waiting import until

pytest.importorskip("ansible_runner")

HOT, COOL = "hot-node", "cool-node"


def _events(hook: Receiver, etype: str) -> list[dict[str, Any]]:
    return [b["event"] for b in hook.bodies() if b["event"]["type"] == etype]


async def _beat(agents: dict[SimAgent, float], stop: asyncio.Event) -> None:
    """Heartbeats with the given memory share, every 0.15 s, until told to stop."""
    while not stop.is_set():
        for agent, pct in agents.items():
            await agent.send_raw(encode(Heartbeat({"cpu_percent": 1.0, "ram_used_mb": pct * 10, "ram_total_mb": 1000,
                                                   "disk_used_gb": 1, "disk_total_gb": 2})))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.15)


@pytest.mark.timeout(150)
async def test_high_memory_heartbeats_run_agent_high_memory_once_per_window(make_supervisor: Any,
                                                                           tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[hal_agents]\n{HOT} ansible_connection=local ansible_python_interpreter={sys.executable}\n"
                   f"{COOL} ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    with receivers("ok") as (hook,):
        sup = make_supervisor(
            # offline_minutes sets the pass interval (0.25 s here); agent-crashed itself is not listed
            remediation={"inventory": str(inv), "auto": ["agent-high-memory"], "offline_minutes": 0.02,
                         "memory_percent": 80, "memory_heartbeats": 3, "window_minutes": 60, "timeout_minutes": 2},
            routes=[{"match": "remediation.*", "target": f"webhook:{hook.url}/rem"}],
            routing={"backoff_base_ms": 50, "timeout_seconds": 2}).start()
        hot, cool = SimAgent(sup.ws_url, sup.agent_token, HOT), SimAgent(sup.ws_url, sup.agent_token, COOL)
        await hot.connect()
        await cool.connect()
        stop = asyncio.Event()
        beats = asyncio.create_task(_beat({hot: 92.0, cool: 40.0}, stop))
        try:
            await until(lambda: _events(hook, "remediation.started"), "remediation.started", 30, interval=0.2)
            # the share stays high: the detector fires again inside the window -> throttled, not run
            await until(lambda: _events(hook, "remediation.throttled"), "remediation.throttled", 30, interval=0.2)
            done = ("remediation.completed", "remediation.escalated", "remediation.failed")
            await until(lambda: any(_events(hook, t) for t in done), "the run to finish", 90, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {[b['event']['type'] for b in hook.bodies()]}\n{sup.log_tail()}") from None
        finally:
            stop.set()
            await beats
            await hot.close()
            await cool.close()

        (started,) = _events(hook, "remediation.started")
        assert started["node_id"] == HOT and started["data"]["incident"] == "agent-high-memory"
        assert started["data"]["actor"] == "auto" and "memory at 92%" in started["data"]["trigger"]
        throttled = _events(hook, "remediation.throttled")
        assert {t["node_id"] for t in throttled} == {HOT} and len(throttled) == 1
        with sup.client() as c:
            items = c.get("/api/v1/remediations").json()["data"]
        assert [(r["incident"], r["actor"]) for r in items] == [("agent-high-memory", "auto")], items
        final = next(b["event"] for b in hook.bodies() if b["event"]["type"] in done)
        assert final["node_id"] == HOT and final["data"]["id"] == items[0]["id"], final
        assert final["data"]["status"] == items[0]["status"] and final["data"]["actor"] == "auto"
        print(f"agent-high-memory outcome on this host: {items[0]['status']} ({items[0].get('error')})")


def _failed_polls(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('hal_o_swarm_cost_polls_total{provider="anthropic",status="failure"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.timeout(150)
async def test_failing_cost_polls_run_cost_data_discrepancy_once(make_supervisor: Any, tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[hal_supervisors]\n"
                   f"sup-local ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    with fake_providers() as fake, receivers("ok") as (hook,):
        fake.down.add("anthropic")
        sup = make_supervisor(
            cost={"poll_interval_minutes": 60, "degraded_retry_seconds": 1, "request_timeout_seconds": 2,
                  "max_retries": 1, "backoff_base_ms": 10,
                  "providers": {"anthropic": {"admin_api_key": ANTHROPIC_KEY, "base_url": fake.url,
                                              "model_rates": {"claude-sonnet-4-5": {"input": 0.003,
                                                                                    "output": 0.015}}}}},
            remediation={"inventory": str(inv), "auto": ["cost-data-discrepancy"], "offline_minutes": 0.02,
                         "cost_failures": 2, "window_minutes": 60, "timeout_minutes": 2},
            routes=[{"match": "remediation.*", "target": f"webhook:{hook.url}/rem"}],
            routing={"backoff_base_ms": 50, "timeout_seconds": 2}).start()
        done = ("remediation.completed", "remediation.escalated", "remediation.failed")
        with sup.client() as c:
            try:
                await until(lambda: _events(hook, "remediation.started"), "remediation.started", 30, interval=0.2)
                await until(lambda: any(_events(hook, t) for t in done), "the run to finish", 90, interval=0.2)
                # the provider keeps failing past the threshold (retries back off 1, 2, 4, 8 s): still one run
                await until(lambda: _failed_polls(c.get("/metrics").text) >= 5, "5 failed polls", 60, interval=0.3)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {[b['event']['type'] for b in hook.bodies()]}\n{sup.log_tail()}") \
                    from None
            items = c.get("/api/v1/remediations").json()["data"]
        (started,) = _events(hook, "remediation.started")
        assert started["data"]["incident"] == "cost-data-discrepancy"
        assert started["data"]["hosts"] == ["hal_supervisors"]
        assert "cost provider anthropic" in started["data"]["trigger"], started
        assert [(r["incident"], r["actor"]) for r in items] == [("cost-data-discrepancy", "auto")], items
        print(f"cost-data-discrepancy outcome on this host: {items[0]['status']} ({items[0].get('error')})")
