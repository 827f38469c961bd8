"""Routing in the real supervisor: events reach local HTTP receivers in each target's format, and a
hanging or failing target does not slow ingestion (measured with the ingest benchmark's load
generator) while it is retried."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from typing import Any

import httpx
import psutil

from bench.ingest import _run_loadgen
from tests.fakes.receivers import receivers
from tests.support.agentsim import SimAgent, session_state

AGENTS, SECONDS = 20, 3.0


async def test_events_reach_targets_in_their_formats(make_supervisor: Any) -> None:
    with receivers("ok", "ok", "ok", "ok", {"mode": "flaky", "fail_times": 2}) as (disc, slack, n8n, hook, flaky):
        sup = make_supervisor(
            channels={"discord": {"channels": {"alerts": disc.url + "/api/webhooks/1/tok"}},
                      "slack": {"channels": {"dev-log": slack.url + "/services/T/B/x"}},
                      "n8n": {"webhook_url": n8n.url + "/webhook/hal"}},
            routes=[{"match": "session.error", "target": "discord#alerts"},
                    {"match": "node.*", "target": "slack#dev-log"},
                    {"match": "session.error && errors >= 3 in 10m", "target": "n8n"},
                    {"match": "env.*", "target": f"webhook:{hook.url}/env"},
                    {"match": "session.error", "target": f"webhook:{flaky.url}/flaky"}],
            routing={"backoff_base_ms": 50, "timeout_seconds": 2}).start()
        agent = SimAgent(sup.ws_url, sup.agent_token, "route-node", [("alpha", "/srv/alpha")])
        await agent.connect(sessions=[session_state("ses_r1", "alpha", "running")])
        try:
            for seq in range(1, 4):
                await agent.send_event(seq, "session.error", session_id="ses_r1", project="alpha",
                                       data={"error": {"name": "APIError", "data": {"message": f"boom {seq}"}}})
            await agent.send_event(4, "env.drift", project="alpha", data={"message": "AGENT.md differs"})
            await agent.send_event(5, "session.state", session_id="ses_r1", project="alpha",
                                   data=session_state("ses_r1", "alpha", "idle"))
            await agent.wait_acked(5)
            got = await asyncio.to_thread(disc.wait_for, 3)
            embeds = [r.body["embeds"][0] for r in got]
            assert [e["description"] for e in embeds] == ["APIError: boom 1", "APIError: boom 2", "APIError: boom 3"]
            assert embeds[0]["title"] == "session.error · alpha" and embeds[0]["color"] == 0xCC3333
            (online,) = await asyncio.to_thread(slack.wait_for, 1)
            assert online.body["blocks"][0]["text"]["text"] == "node.online · route-node"
            (loop,) = await asyncio.to_thread(n8n.wait_for, 1)  # the error loop: one message, at the 3rd error
            assert loop.body["event"]["data"]["error"]["data"]["message"] == "boom 3"
            assert loop.body["conditions"] == {"errors >= 3 in 10m": 3.0}
            (env,) = await asyncio.to_thread(hook.wait_for, 1)
            assert env.path == "/env" and env.body["text"] == "AGENT.md differs"
            await asyncio.to_thread(flaky.wait_for, 3)  # retried through two 500s
            await agent.close()
            await asyncio.to_thread(slack.wait_for, 2)  # node.offline
            assert slack.received[1].body["blocks"][0]["text"]["text"] == "node.offline · route-node"
            with sup.client() as c:
                metrics = c.get("/metrics").text
            flaky_label = f'webhook:http://127.0.0.1:{flaky.server.server_address[1]}'
            assert f'hal_o_swarm_route_deliveries_total{{status="retried",target="{flaky_label}"}} 2.0' in metrics
            assert 'hal_o_swarm_route_deliveries_total{status="sent",target="discord#alerts"} 3.0' in metrics
        finally:
            await agent.close()
            sup.stop()


def _stored(sup: Any) -> int:
    db = sqlite3.connect(sup.db_path)
    try:
        return db.execute("SELECT COUNT(*) FROM events WHERE seq IS NOT NULL").fetchone()[0]
    finally:
        db.close()


def _measure(sup: Any) -> dict[str, Any]:
    """Ingest benchmark load against `sup`: durable events/s and supervisor CPU per stored event."""
    proc = psutil.Process(sup.proc.pid)
    before, n0 = proc.cpu_times(), _stored(sup)
    res = _run_loadgen(sup.ws_url, sup.agent_token, AGENTS, SECONDS, False, 120)
    assert res["error_count"] == 0, res["errors"]
    time.sleep(0.5)
    after, n1 = proc.cpu_times(), _stored(sup)
    # Every event acknowledged during the measured window is in the store.
    assert n1 - n0 >= res["events_per_s"] * SECONDS
    cpu = (after.user - before.user) + (after.system - before.system)
    metrics = httpx.get(sup.api + "/metrics", timeout=10).text

    def total(status: str) -> float:
        pattern = rf'hal_o_swarm_route_deliveries_total{{status="{status}",[^}}]*}} (\S+)'
        return sum(float(v) for v in re.findall(pattern, metrics))

    return {"rate": res["events_per_s"], "p99": res["p99_ms"], "cpu_us": cpu / max(1, n1 - n0) * 1e6,
            "sent": total("sent"), "failed": total("failed"), "dropped": total("dropped"),
            "retried": total("retried")}


def test_hanging_and_failing_targets_do_not_slow_ingest(make_supervisor: Any, capsys: Any) -> None:
    """Catch-all routes (every event of the benchmark is routed): a hanging and a failing target cost
    ingestion no more than a healthy one; the no-routes run shows the routing overhead itself."""
    results: dict[str, dict[str, Any]] = {}
    routing = {"queue_size": 100, "timeout_seconds": 1, "max_retries": 2, "backoff_base_ms": 100}
    with receivers("ok", "hang", {"mode": "fail", "fail_status": 500}) as (ok, hang, dead):
        runs = {
            "no routes": {},
            "healthy target": {"routes": [{"match": "*", "target": f"webhook:{ok.url}/ok"}], "routing": routing},
            "hanging + 500 targets": {"routes": [{"match": "*", "target": f"webhook:{hang.url}/hang"},
                                                 {"match": "message.*", "target": f"webhook:{dead.url}/dead"}],
                                      "routing": routing},
        }
        for i, (name, extra) in enumerate(runs.items()):
            sup = make_supervisor(f"run{i}", log={"level": "warning"}, **extra).start()
            try:
                results[name] = _measure(sup)
            finally:
                sup.stop()
        dead_attempts = dead.attempts
    base, good, bad = results["no routes"], results["healthy target"], results["hanging + 500 targets"]
    with capsys.disabled():
        print(f"\n[routing vs ingest] bench/ingest.py load, {AGENTS} agents x {SECONDS:g} s, {os.cpu_count()} CPUs")
        for name, r in results.items():
            print(f"  {name:22s} {r['rate']:7.0f} events/s  ack p99 {r['p99']:6.1f} ms  {r['cpu_us']:6.1f} us CPU/event"
                  f"  sent {r['sent']:.0f} failed {r['failed']:.0f} dropped {r['dropped']:.0f}"
                  f" retried {r['retried']:.0f}")
        print(f"  ratio hanging+500 / healthy: {bad['rate'] / good['rate']:.2f} (CPU/event "
              f"{bad['cpu_us'] / good['cpu_us']:.2f});  hanging+500 / no routes: {bad['rate'] / base['rate']:.2f} "
              f"(CPU/event {bad['cpu_us'] / base['cpu_us']:.2f})")
    # Throughput on a shared machine is noisy; CPU per stored event is the stable signal.
    assert bad["cpu_us"] <= good["cpu_us"] * 1.25, results
    assert bad["dropped"] > 0 and bad["retried"] > 0 and bad["failed"] > 0 and dead_attempts >= 3


async def test_policy_env_and_daily_cost_events_reach_their_targets(make_supervisor: Any) -> None:
    """`policy.*` and `env.check.fail` through configured routes, end to end: the policy engine's actions,
    an env check result the node reports (answering the supervisor's `env_check` as hal-agent does) and a
    kill_on_cost daily limit (only `daily_limit_usd` set: no per-session default threshold applies)."""
    from halswarm.protocol import Command, CommandResult
    from tests.support.simfleet import SimFleet

    with receivers("ok", "ok") as (pol, disc):
        sup = make_supervisor(
            policies={"check_interval_seconds": 1,
                      "resume_on_idle": {"enabled": True, "idle_threshold_seconds": 3, "max_retries": 1},
                      "kill_on_cost": {"enabled": True, "daily_limit_usd": 20}},
            channels={"discord": {"channels": {"alerts": disc.url + "/api/webhooks/1/tok"}}},
            routes=[{"match": "policy.*", "target": f"webhook:{pol.url}/policy"},
                    {"match": "env.check.fail", "target": "discord#alerts"}],
            routing={"backoff_base_ms": 50, "timeout_seconds": 2}).start()
        fleet = SimFleet(sup, "route-policy-node")

        async def handle(cmd: Command) -> CommandResult:
            if cmd.type == "env_check":
                drift = [{"category": "tools", "item": "haltool", "expected": ">=1.2", "actual": None,
                          "status": "fail", "drift": True}]
                return CommandResult(cmd.command_id, "success", {"results": [
                    {"project": "alpha", "status": "missing", "manifest_version": "1.0",
                     "details": {"drift": drift}}]})
            return await fleet.handle(cmd)

        fleet.agent.handler = handle
        await fleet.connect()
        try:
            # resume_on_idle: one resume (policy.action); the session answers and idles again, and at
            # max_retries 1 the next resume is stopped: policy.retry_cap
            idle = await fleet.idle_session()
            got = await asyncio.to_thread(pol.wait_for, 2, 20)
            assert [r.body["event"]["type"] for r in got] == ["policy.action", "policy.retry_cap"]
            assert all(r.path == "/policy" and r.body["event"]["session_id"] == idle for r in got)
            assert got[0].body["text"].startswith("resume_on_idle: resume → success (idle for ")
            assert got[0].body["event"]["data"]["result"] == "success"
            assert got[1].body["text"].endswith("after 1 attempts: last attempt success"), got[1].body["text"]

            # env check: the manifest is pushed to the online node; its failing project is routed
            with sup.client() as c:
                manifest = {"version": "1.0", "defaults": {"tools": {"haltool": ">=1.2"}}, "projects": {}}
                r = c.put("/api/v1/env/manifest", json=manifest)
                assert r.status_code in (200, 201), r.text
            (env,) = await asyncio.to_thread(disc.wait_for, 1)
            embed = env.body["embeds"][0]
            assert embed["title"] == "env.check.fail · alpha" and "tools:haltool" in embed["description"]

            # daily limit: two sessions at $12 each (agent-reported) -> today's cost $24 >= $20: every live
            # session is killed, each kill routed with the daily reason; $12 alone killed nothing.
            first = await fleet.costly_session()  # $7.50: under the daily limit, and no per-session threshold
            await fleet.report(fleet.sessions[first] | {"cost_usd": 12.0})
            await asyncio.sleep(2.5)  # a couple of checks: nothing killed at $12 (+ the idle one's cent)
            assert fleet.sent("kill_session", first) == 0
            second = await fleet.costly_session()
            await fleet.report(fleet.sessions[second] | {"cost_usd": 12.0})
            kills = await asyncio.to_thread(pol.wait_for, 5)
            killed = {r.body["event"]["session_id"] for r in kills[2:]
                      if r.body["event"]["data"].get("action") == "kill_session"}
            assert killed == {idle, first, second}
            assert all("daily cost $24.01 >= limit $20.00" in r.body["text"] for r in kills[2:])
            with sup.client() as c:
                metrics = c.get("/metrics").text
            assert f'hal_o_swarm_route_deliveries_total{{status="sent",target="webhook:{pol.url}"}}' in metrics
        finally:
            await fleet.close()
            sup.stop()
