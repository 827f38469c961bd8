"""Router + delivery in-process against local HTTP receivers: formats per target, retries, drops,
time-based conditions and one-message-per-incident."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from halswarm.core.model import Session
from halswarm.supervisor.notify import NotifySettings, Router
from tests.fakes.receivers import Receiver, receivers
from tests.support.waiting import on_loop

pytestmark = pytest.mark.process  # HTTP receivers on loopback


class Tracker:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}

    def get(self, sid: str) -> Session | None:
        return self.sessions.get(sid)

    def live(self) -> list[Session]:
        return [s for s in self.sessions.values() if not s.terminal]


def ev(type_: str, n: int = 1, **kw: Any) -> dict[str, Any]:
    base = {"id": n, "node_id": "node-1", "seq": n, "event_id": f"e{n}", "session_id": "ses_1", "project": "alpha",
            "type": type_, "data": {"n": n}, "timestamp": "2025-08-10T12:00:00.000Z"}
    return base | kw


def sample(reg: CollectorRegistry, target: str, status: str) -> float:
    return reg.get_sample_value("hal_o_swarm_route_deliveries_total", {"target": target, "status": status}) or 0.0


@pytest.fixture
async def started() -> AsyncIterator[list[Router]]:
    made: list[Router] = []
    yield made
    for r in made:
        await r.stop()


def make(made: list[Router], raw: dict[str, Any], tracker: Any = None, **kw: Any) -> tuple[Router, CollectorRegistry]:
    reg = CollectorRegistry()
    raw = {"routing": {"backoff_base_ms": 10, "timeout_seconds": 2, **raw.pop("routing", {})}, **raw}
    settings = NotifySettings.parse(raw.get("routes"), raw.get("channels"), raw.get("routing"))
    r = Router(settings, tracker or Tracker(), reg, **kw)
    r.start()
    made.append(r)
    return r, reg


async def test_each_target_gets_its_format(started: list[Router]) -> None:
    with receivers("ok", "ok", {"mode": "ok", "ok_body": {"ok": True}}, "ok", "ok") as (disc, slack, slack_api,
                                                                                         n8n, hook):
        raw = {
            "channels": {"discord": {"channels": {"alerts": disc.url + "/api/webhooks/1/tok"}},
                         "slack": {"channels": {"alerts": slack.url + "/services/T/B/x", "dev-log": "C0DEV"},
                                   "bot_token": "xoxb-test", "api_base": slack_api.url + "/api"},
                         "n8n": {"webhook_url": n8n.url + "/webhook/hal"}},
            "routes": [{"match": "session.error", "target": "discord#alerts"},
                       {"match": "node.*", "target": "slack#alerts"},
                       {"match": "node.offline", "target": "slack#dev-log"},
                       {"match": "policy.*|remediation.*", "target": "n8n"},
                       {"match": "*", "target": f"webhook:{hook.url}/hook"}]}
        router, reg = make(started, raw)
        router.on_event(ev("session.error", 1, data={"message": "boom"}))
        router.on_event(ev("node.offline", 2, session_id=None, project=None))
        router.on_event(ev("policy.action", 3, data={"policy": "kill_on_cost", "action": "kill_session",
                                                     "result": "success"}))
        router.on_event(ev("session.state", 4))
        (d,) = await disc.until(1)
        assert d.path == "/api/webhooks/1/tok" and d.body["embeds"][0]["description"] == "boom"
        (s,) = await slack.until(1)
        assert s.body["blocks"][0]["text"]["text"] == "node.offline · node-1"
        (api,) = await slack_api.until(1)
        assert api.path == "/api/chat.postMessage" and api.body["channel"] == "C0DEV"
        assert api.headers["authorization"] == "Bearer xoxb-test"
        (n,) = await n8n.until(1)
        assert n.body["event"]["type"] == "policy.action" and n.body["target"] == "n8n"
        assert [r.body["event"]["id"] for r in await hook.until(4)] == [1, 2, 3, 4]  # in order
        await on_loop(lambda: sample(reg, "discord#alerts", "sent") == 1, "one discord delivery")
        hook_label = f"webhook:http://127.0.0.1:{hook.server.server_address[1]}"
        await on_loop(lambda: sample(reg, hook_label, "sent") == 4, "four webhook deliveries")


async def test_failures_are_retried_with_backoff_and_retry_after(started: list[Router]) -> None:
    with receivers({"mode": "flaky", "fail_times": 2}, {"mode": "ratelimit", "fail_times": 1,
                                                        "retry_after": "1"}) as (flaky, limited):
        raw = {"routes": [{"match": "a", "target": f"webhook:{flaky.url}"},
                          {"match": "b", "target": f"webhook:{limited.url}"}]}
        router, reg = make(started, raw)
        t0 = time.monotonic()
        router.on_event(ev("a"))
        router.on_event(ev("b"))
        await flaky.until(1)
        assert flaky.attempts == 3
        await limited.until(1)
        assert time.monotonic() - t0 >= 0.95 and limited.attempts == 2
        label = f"webhook:http://127.0.0.1:{flaky.server.server_address[1]}"
        await on_loop(lambda: sample(reg, label, "sent") == 1, "one delivery")
        assert sample(reg, label, "retried") == 2 and sample(reg, label, "failed") == 0


async def test_dead_target_fails_and_is_logged_without_its_url(started: list[Router],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with receivers({"mode": "fail", "fail_status": 500}, {"mode": "fail", "fail_status": 404}) as (dead, gone):
        raw = {"routing": {"max_retries": 2}, "routes": [{"match": "x", "target": f"webhook:{dead.url}/s3cr3t"},
                                                         {"match": "x", "target": f"webhook:{gone.url}/s3cr3t"}]}
        router, _ = make(started, raw)
        with caplog.at_level(logging.WARNING):
            router.on_event(ev("x"))
            await on_loop(lambda: router.delivery.failed == 2, "two failed deliveries")
        assert dead.attempts == 3 and gone.attempts == 1  # 4xx other than 429 is not retried
        lines = [r.getMessage() for r in caplog.records if "route delivery" in r.getMessage()]
        assert len(lines) == 2 and all("s3cr3t" not in line for line in lines)
        assert any("HTTP 500 (after 3 attempts)" in line and "event x id=1" in line for line in lines)


async def test_hanging_target_never_blocks_and_drops_oldest(started: list[Router]) -> None:
    with receivers("hang", "ok") as (hang, ok):
        raw = {"routing": {"queue_size": 5, "timeout_seconds": 0.5, "max_retries": 0},
               "routes": [{"match": "*", "target": f"webhook:{hang.url}"},
                          {"match": "*", "target": f"webhook:{ok.url}"}]}
        router, reg = make(started, raw)
        router.on_event(ev("x", 0))
        await asyncio.sleep(0.1)  # the hanging worker now holds event 0
        t0 = time.perf_counter()
        for i in range(1, 1001):
            router.on_event(ev("x", i))
        elapsed = time.perf_counter() - t0
        assert elapsed < 2.0, f"1000 routed events took {elapsed:.3f} s"
        label = f"webhook:http://127.0.0.1:{hang.server.server_address[1]}"
        assert sample(reg, label, "dropped") == 1000 - 5
        assert router.delivery.depth()[label] == 5
        # The healthy target is unaffected (its own queue keeps the newest five too).
        await ok.until(5)
        await on_loop(lambda: router.delivery.failed >= 1, "the hung request to time out and fail", 5)


async def test_stuck_condition_waits_for_a_quiet_session(started: list[Router]) -> None:
    now = [1_000_000.0]
    tracker = Tracker()
    s = tracker.sessions["ses_1"] = Session(id="ses_1", node_id="node-1", project="alpha", status="idle",
                                            last_activity=now[0])
    with receivers("ok") as (rec,):
        raw = {"routes": [{"match": "session.idle && stuck > 5m", "target": f"webhook:{rec.url}"}]}
        router, _ = make(started, raw, tracker, clock=lambda: now[0])
        router.on_event(ev("session.idle", 1, timestamp=None))
        router.check_pending(now[0] + 299)
        s.last_activity = now[0] + 200  # it did something meanwhile
        router.check_pending(now[0] + 301)
        await asyncio.sleep(0.2)
        assert rec.received == []
        router.check_pending(now[0] + 501)
        (got,) = await rec.until(1)
        assert got.body["conditions"] == {"stuck > 5m": pytest.approx(301)}
        router.check_pending(now[0] + 900)  # fired once
        await asyncio.sleep(0.2)
        assert len(rec.received) == 1


async def test_error_loop_notifies_once_per_incident(started: list[Router]) -> None:
    now = [1_000_000.0]
    with receivers("ok") as (rec,):
        raw = {"routes": [{"match": "session.error && errors >= 3 in 10m", "target": f"webhook:{rec.url}"}]}
        router, _ = make(started, raw, clock=lambda: now[0])
        for i in range(5):
            router.on_event(ev("session.error", i))
            now[0] += 10
        (first,) = await rec.until(1)
        assert first.body["event"]["id"] == 2 and first.body["conditions"] == {"errors >= 3 in 10m": 3.0}
        now[0] += 700  # the loop stopped; a lone error re-arms the route
        router.on_event(ev("session.error", 10))
        for i in range(11, 13):
            router.on_event(ev("session.error", i))
        second = (await rec.until(2))[1]
        assert second.body["event"]["id"] == 12
        router.on_event(ev("session.error", 13, session_id="ses_other"))  # other subject: count 1
        await asyncio.sleep(0.2)
        assert len(rec.received) == 2


async def test_condition_only_routes_are_swept(started: list[Router]) -> None:
    cost = [5.0]
    tracker = Tracker()
    tracker.sessions["ses_1"] = Session(id="ses_1", node_id="node-1", project="alpha", status="running",
                                        last_activity=time.time() - 400)
    tracker.sessions["ses_2"] = Session(id="ses_2", node_id="node-1", project="alpha", status="running",
                                        last_activity=time.time())
    with receivers("ok", "ok") as (costs, stuck):
        raw = {"routes": [{"match": "cost.daily > 20", "target": f"webhook:{costs.url}"},
                          {"match": "stuck > 5m", "target": f"webhook:{stuck.url}"}]}
        router, _ = make(started, raw, tracker, daily_cost=lambda: cost[0])
        router.sweep(time.time())
        cost[0] = 25.0
        router.sweep(time.time())
        router.sweep(time.time())
        (c,) = await costs.until(1)
        assert c.body["event"]["type"] == "condition" and c.body["conditions"] == {"cost.daily > 20": 25.0}
        assert c.body["title"] == "Condition met: cost.daily > 20"
        (st,) = await stuck.until(1)
        assert st.body["event"]["session_id"] == "ses_1"
        cost[0] = 1.0
        router.sweep(time.time())
        cost[0] = 30.0
        router.sweep(time.time())
        await costs.until(2)
        await asyncio.sleep(0.2)
        assert len(stuck.received) == 1


async def test_misconfigured_routes_are_disabled_not_fatal(started: list[Router]) -> None:
    raw = {"routes": [{"match": "session.error", "target": "slack#nowhere"}, {"match": "mood > 3", "target": "n8n"}]}
    router, _ = make(started, raw)
    assert not router.active
    assert [r["active"] for r in router.status()["routes"]] == [False, False]
    router.on_event(ev("session.error"))  # no-op


def test_receiver_helper_is_importable() -> None:
    assert Receiver().mode == "ok"
