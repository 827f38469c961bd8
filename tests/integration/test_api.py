"""Every core API route against the real supervisor, with a protocol-speaking agent on the other end."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading

import httpx
import pytest

from halswarm.protocol import Command, CommandResult
from tests.support.agentsim import SimAgent, session_state
from tests.support.supervisor_proc import ADMIN_NAME


def make_handler(sessions: dict):  # type: ignore[no-untyped-def]
    """A scripted agent: answers the session commands the way the real agent's contract says."""
    counter = {"n": 0}
    calls: list[Command] = []

    async def handler(cmd: Command) -> CommandResult | None:
        calls.append(cmd)
        if cmd.type == "create_session":
            counter["n"] += 1
            sid = f"ses_new{counter['n']}"
            sessions[sid] = session_state(sid, cmd.args["project"], "running", model=cmd.args.get("model"))
            return CommandResult(cmd.command_id, "success", sessions[sid])
        if cmd.type == "prompt_session":
            if cmd.args.get("message") == "please fail":
                return CommandResult(cmd.command_id, "failure", None, "opencode said no")
            if cmd.args.get("message") == "never answer":
                return None
            if cmd.args.get("message") == "slow":
                await asyncio.sleep(0.5)
            return CommandResult(cmd.command_id, "success", {"accepted": True})
        if cmd.type == "kill_session":
            sid = cmd.target.session_id
            return CommandResult(cmd.command_id, "success", session_state(sid, "alpha", "killed"))
        if cmd.type in ("resume", "restart_session", "handover", "session_status"):
            sid = cmd.target.session_id
            if cmd.type == "handover":
                new = session_state(sid + "-next", "alpha", "running")
                return CommandResult(cmd.command_id, "success",
                                     {"old_session": session_state(sid, "alpha", "killed"), "session": new})
            return CommandResult(cmd.command_id, "success", session_state(sid, "alpha", "running"))
        return CommandResult(cmd.command_id, "failure", None, f"unsupported {cmd.type}")

    return handler, calls


@pytest.fixture
async def live(supervisor):  # type: ignore[no-untyped-def]
    sessions: dict = {}
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "api-node", [("alpha", "/srv/alpha")])
    agent.handler, calls = make_handler(sessions)
    await agent.connect(sessions=[session_state("ses_old", "alpha", "idle")])
    try:
        yield supervisor, agent, calls
    finally:
        await agent.close()


async def call(sup, method: str, path: str, token: str | None = "default", **kw):  # type: ignore[no-untyped-def]
    headers = kw.pop("headers", {})
    if token == "default":
        token = sup.token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
        return await c.request(method, path, headers=headers, **kw)


AUTH_ROUTES = [
    ("GET", "/api/v1/nodes"), ("GET", "/api/v1/nodes/x"), ("GET", "/api/v1/nodes/x/auth"),
    ("GET", "/api/v1/sessions"), ("GET", "/api/v1/sessions/x"), ("POST", "/api/v1/sessions"),
    ("POST", "/api/v1/sessions/x/prompt"), ("POST", "/api/v1/sessions/x/resume"),
    ("POST", "/api/v1/sessions/x/restart"), ("POST", "/api/v1/sessions/x/handover"),
    ("DELETE", "/api/v1/sessions/x"), ("GET", "/api/v1/events"), ("GET", "/api/v1/events/stream"),
    ("POST", "/api/v1/commands"), ("GET", "/api/v1/commands/x"), ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/cost"), ("GET", "/api/v1/cost/week"), ("GET", "/api/v1/policies"),
    ("GET", "/api/v1/dependencies"), ("GET", "/api/v1/auth/drift"), ("POST", "/api/v1/oauth/trigger"),
    ("POST", "/api/v1/commands/credentials/push"), ("GET", "/api/v1/env/manifest"), ("PUT", "/api/v1/env/manifest"),
    ("GET", "/api/v1/env/status"), ("GET", "/api/v1/env/status/x"), ("GET", "/api/v1/env/drift"),
    ("POST", "/api/v1/env/check/x"), ("POST", "/api/v1/env/provision/x"), ("POST", "/api/v1/env/approve/x"),
    ("GET", "/api/v1/agent-md/x"), ("GET", "/api/v1/agent-md/x/diff"), ("POST", "/api/v1/agent-md/sync"),
    ("GET", "/api/v1/remediations"), ("POST", "/api/v1/remediations"),
]


@pytest.mark.parametrize(("method", "path"), AUTH_ROUTES)
async def test_every_api_route_requires_the_bearer_token(supervisor, method, path):
    for token in (None, "wrong-" + "x" * 40):
        r = await call(supervisor, method, path, token=token)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json() == {"error": "missing or invalid bearer token", "code": "AUTH_REQUIRED"}
        assert r.headers["content-type"].startswith("application/json")


async def test_health_ready_metrics_openapi_without_auth(supervisor):
    async with httpx.AsyncClient(base_url=supervisor.api) as c:
        assert (await c.get("/healthz")).json()["status"] == "alive"
        ready = await c.get("/readyz")
        assert ready.status_code == 200
        assert {k: v["status"] for k, v in ready.json()["components"].items()} == {
            "database": "ok", "websocket_hub": "ok", "command_dispatcher": "ok"}
        text = (await c.get("/metrics")).text
        for name in ("commands_total", "command_duration_seconds", "errors_total", "events_total",
                     "connections_total", "connections_active", "sessions_active", "nodes_online",
                     "event_processing_duration_seconds"):
            assert f"hal_o_swarm_{name}" in text, name
        spec = (await c.get("/openapi.json")).json()
        assert "/api/v1/sessions" in spec["paths"] and "/api/v1/events/stream" in spec["paths"]


def metric_samples(text: str) -> dict[str, float]:
    """{'name{label="v",...}': value} of a Prometheus text page (sample names include _count/_sum)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def metric_total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.split("{", 1)[0] == name)


async def test_metrics_values_move_with_real_traffic(live):
    sup, agent, _ = live
    for seq in range(1, 6):
        await agent.send_event(seq, "message.updated", session_id="ses_old", project="alpha")
    await agent.wait_acked(5)
    r = await call(sup, "POST", "/api/v1/sessions/ses_old/prompt", json={"message": "count me"})
    assert r.status_code == 200, r.text
    async with httpx.AsyncClient(base_url=sup.api) as c:
        samples = metric_samples((await c.get("/metrics")).text)
    p = "hal_o_swarm_"
    assert samples[p + 'events_total{type="message.updated"}'] == 5
    assert samples[p + 'event_processing_duration_seconds_count{type="message.updated"}'] == 5
    assert samples[p + 'commands_total{status="success",type="prompt_session"}'] == 1
    assert samples[p + 'command_duration_seconds_count{type="prompt_session"}'] == 1
    assert samples[p + "nodes_online{}"] == 1
    assert samples[p + "connections_active{}"] == 1
    assert samples[p + 'sessions_active{status="idle"}'] == 1
    assert metric_total(samples, p + "event_processing_duration_seconds_sum") > 0
    assert samples[p + 'connections_total{status="accepted"}'] >= 1


async def test_readyz_names_the_failing_component_and_recovers(live):
    """Another process holds the database's write lock (an operator's sqlite3 shell, a stuck backup):
    the supervisor's writes fail after the busy timeout, /readyz answers 503 naming the database, and
    200 again once a write succeeds."""
    sup, agent, _ = live
    async with httpx.AsyncClient(base_url=sup.api, timeout=10) as c:
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        holder = sqlite3.connect(sup.db_path, timeout=1, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            await agent.heartbeat()  # the supervisor persists liveness: that write now fails
            body = None
            for _ in range(150):
                r = await c.get("/readyz")
                if r.status_code == 503:
                    body = r.json()
                    break
                await asyncio.sleep(0.1)
            assert body is not None, "readyz never reported the locked database"
            assert body["code"] == "SERVICE_UNAVAILABLE" and body["status"] == "unavailable"
            assert body["error"] == "not ready: database"
            assert body["components"]["database"]["status"] == "error"
            assert "locked" in body["components"]["database"]["error"]
            assert body["components"]["websocket_hub"] == {"status": "ok"}
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for _ in range(100):
            await agent.heartbeat()  # the next write succeeds and clears the error
            r = await c.get("/readyz")
            if r.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_unknown_route_and_bad_params_use_the_error_envelope(supervisor):
    r = await call(supervisor, "GET", "/api/v1/nope")
    assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND")
    r = await call(supervisor, "GET", "/api/v1/sessions/ses_missing")
    assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND")
    r = await call(supervisor, "GET", "/api/v1/nodes/nobody")
    assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND")
    for params in ({"limit": 0}, {"limit": 10001}, {"offset": -1}, {"limit": "many"}):
        r = await call(supervisor, "GET", "/api/v1/events", params=params)
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_ERROR"), params
    r = await call(supervisor, "GET", "/api/v1/events", params={"since": "last tuesday"})
    assert r.status_code == 400 and "since" in r.json()["error"]
    r = await call(supervisor, "POST", "/api/v1/sessions", content=b"{not json", headers={"content-type":
                                                                                          "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_ERROR")
    r = await call(supervisor, "POST", "/api/v1/sessions", json={"prompt": "no project"})
    assert r.status_code == 400 and "project" in r.json()["error"]
    r = await call(supervisor, "POST", "/api/v1/commands", json={"type": "make_coffee", "target": "alpha"})
    assert (r.status_code, r.json()["code"]) == (400, "BAD_REQUEST")
    # SPEC 6 has no code for 413 or 405: an oversized body is BAD_REQUEST with HTTP 413, a wrong method
    # BAD_REQUEST (400), each with a clear message.
    r = await call(supervisor, "POST", "/api/v1/sessions", content=b"x" * (1024 * 1024 + 1),
                   headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (413, "BAD_REQUEST")
    assert "1048576 bytes" in r.json()["error"] and "too large" in r.json()["error"]
    for method, path in (("PUT", "/api/v1/nodes"), ("DELETE", "/api/v1/audit"), ("PATCH", "/healthz")):
        r = await call(supervisor, method, path)
        assert (r.status_code, r.json()["code"]) == (400, "BAD_REQUEST"), (method, path, r.text)
        assert r.json()["error"] == f"method {method} is not allowed on {path}"


async def test_repeated_bad_tokens_are_rate_limited(supervisor):
    for _ in range(20):
        r = await call(supervisor, "GET", "/api/v1/nodes", token="wrong-" + "x" * 40)
        assert (r.status_code, r.json()["code"]) == (401, "AUTH_REQUIRED")
    for token in ("wrong-" + "x" * 40, None):  # the address is throttled for every failing request now
        r = await call(supervisor, "GET", "/api/v1/nodes", token=token)
        assert r.status_code == 429, r.text
        assert r.json() == {"error": "too many failed authentications; retry later", "code": "RATE_LIMITED"}
    # ...but never for a valid credential from the same address (issue 14: no lockout of the operator).
    assert (await call(supervisor, "GET", "/api/v1/nodes")).status_code == 200
    assert (await call(supervisor, "GET", "/api/v1/nodes", token="wrong-" + "x" * 40)).status_code == 429
    async with httpx.AsyncClient(base_url=supervisor.api) as c:  # health stays reachable
        assert (await c.get("/healthz")).status_code == 200


async def test_unhandled_exception_is_internal_error_with_the_envelope():
    """In-process: no route of the real API is known to crash, so a route that raises stands in."""
    from fastapi import FastAPI

    from halswarm.supervisor.apikit.envelope import ApiError
    from halswarm.supervisor.http.errors import install_error_handling

    crashes: list[int] = []
    app = FastAPI()
    install_error_handling(app, 100, on_internal=lambda: crashes.append(1))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom: secret detail")

    @app.get("/legacy")
    async def legacy() -> None:
        raise ApiError("PAYLOAD_TOO_LARGE", "report exceeds 10 bytes")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as c:
        r = await c.get("/boom")
        assert r.status_code == 500
        assert r.json() == {"error": "internal error; see the supervisor log", "code": "INTERNAL_ERROR"}
        assert crashes == [1]
        r = await c.get("/legacy")  # a non-SPEC code raised by a route module is folded into the SPEC list
        assert (r.status_code, r.json()) == (413, {"error": "report exceeds 10 bytes", "code": "BAD_REQUEST"})
        r = await c.post("/boom", content=b"y" * 101)
        assert (r.status_code, r.json()["code"]) == (413, "BAD_REQUEST")


async def test_session_lifecycle_through_the_api(live):
    sup, _agent, calls = live
    r = await call(sup, "POST", "/api/v1/sessions", json={"project": "alpha", "prompt": "hi", "model": "fake/m"})
    assert r.status_code == 201, r.text
    new = r.json()["data"]
    assert new["id"] == "ses_new1" and new["node_id"] == "api-node" and new["project"] == "alpha"
    assert new["status"] == "running" and new["model"] == "fake/m"
    assert calls[-1].type == "create_session" and calls[-1].args == {"project": "alpha", "prompt": "hi",
                                                                    "model": "fake/m"}
    r = await call(sup, "GET", "/api/v1/sessions", params={"project": "alpha", "status": "running"})
    assert [s["id"] for s in r.json()["data"]] == ["ses_new1"]
    r = await call(sup, "GET", "/api/v1/sessions", params={"node_id": "api-node"})
    assert r.json()["meta"]["total"] == 2

    r = await call(sup, "POST", "/api/v1/sessions/ses_new1/prompt", json={"message": "do it"})
    assert r.status_code == 200 and r.json()["data"]["status"] == "success"
    assert calls[-1].target.session_id == "ses_new1" and calls[-1].args["message"] == "do it"

    for action in ("resume", "restart"):
        r = await call(sup, "POST", f"/api/v1/sessions/ses_new1/{action}")
        assert r.status_code == 200, r.text
    r = await call(sup, "POST", "/api/v1/sessions/ses_new1/handover")
    assert r.status_code == 200
    r = await call(sup, "GET", "/api/v1/sessions/ses_new1-next")
    assert r.json()["data"]["status"] == "running"
    assert (await call(sup, "GET", "/api/v1/sessions/ses_new1")).json()["data"]["status"] == "killed"

    r = await call(sup, "DELETE", "/api/v1/sessions/ses_old")
    assert r.status_code == 200
    assert (await call(sup, "GET", "/api/v1/sessions/ses_old")).json()["data"]["status"] == "killed"
    assert [c.type for c in calls] == ["create_session", "prompt_session", "resume", "restart_session",
                                       "handover", "kill_session"]


async def test_failures_timeouts_and_offline_targets_map_to_error_codes(make_supervisor):
    sup = make_supervisor(commands={"default_timeout_sec": 1}).start()
    agent = SimAgent(sup.ws_url, sup.agent_token, "n", [("alpha", "/a")])
    agent.handler, _ = make_handler({})
    await agent.connect(sessions=[session_state("ses_1", "alpha", "idle")])
    try:
        r = await call(sup, "POST", "/api/v1/sessions/ses_1/prompt", json={"message": "please fail"})
        assert (r.status_code, r.json()["code"]) == (502, "DISPATCH_ERROR")
        assert "opencode said no" in r.json()["error"]
        loop = asyncio.get_running_loop()
        started = loop.time()
        r = await call(sup, "POST", "/api/v1/sessions/ses_1/prompt", json={"message": "never answer"})
        elapsed = loop.time() - started
        assert (r.status_code, r.json()["code"]) == (504, "TIMEOUT")
        # The command's timeout (1 s here) is the API's deadline, not timeout + grace (was 3 s).
        assert elapsed < 2.5, elapsed
        r = await call(sup, "POST", "/api/v1/sessions", json={"project": "no-such-project"})
        assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND")
        # Generic Go-compatible route: results (also failures) come back as data.status.
        r = await call(sup, "POST", "/api/v1/commands",
                       json={"type": "/inject", "target": {"session_id": "ses_1"}, "args": {"message": "please fail"}})
        assert r.status_code == 200 and r.json()["data"]["status"] == "failure"
        assert r.json()["data"]["type"] == "prompt_session"
        r = await call(sup, "POST", "/api/v1/commands", json={"type": "status", "target": {"session_id": "ses_1"},
                                                             "wait": False})
        assert r.status_code == 202
        cid = r.json()["data"]["command_id"]
        for _ in range(50):
            got = (await call(sup, "GET", f"/api/v1/commands/{cid}")).json()["data"]
            if got["status"] != "pending":
                break
            await asyncio.sleep(0.1)
        assert got["status"] == "success" and got["type"] == "session_status"
    finally:
        await agent.close()
    await asyncio.sleep(0.3)
    r = await call(sup, "POST", "/api/v1/sessions/ses_1/prompt", json={"message": "anyone?"})
    assert (r.status_code, r.json()["code"]) == (502, "DISPATCH_ERROR")
    assert "offline" in r.json()["error"]


async def test_idempotency_replays_only_successes(live):
    sup, _agent, calls = live
    body = {"message": "once", "idempotency_key": "k-1"}
    first = await call(sup, "POST", "/api/v1/sessions/ses_old/prompt", json=body)
    second = await call(sup, "POST", "/api/v1/sessions/ses_old/prompt", json=body)
    assert first.status_code == second.status_code == 200
    assert first.json()["data"]["command_id"] == second.json()["data"]["command_id"]
    assert second.json()["data"]["idempotent_replay"] is True
    assert sum(1 for c in calls if c.args.get("message") == "once") == 1
    # Same key, different payload: runs again.
    await call(sup, "POST", "/api/v1/sessions/ses_old/prompt", json={"message": "twice", "idempotency_key": "k-1"})
    assert sum(1 for c in calls if c.args.get("message") == "twice") == 1
    # A failure is never cached: the retry is sent again.
    fail = {"message": "please fail", "idempotency_key": "k-2"}
    assert (await call(sup, "POST", "/api/v1/sessions/ses_old/prompt", json=fail)).status_code == 502
    assert (await call(sup, "POST", "/api/v1/sessions/ses_old/prompt", json=fail)).status_code == 502
    assert sum(1 for c in calls if c.args.get("message") == "please fail") == 2


async def test_every_command_is_audited_with_actor_and_outcome(live):
    sup, _agent, _calls = live
    await call(sup, "POST", "/api/v1/sessions/ses_old/prompt", json={"message": "hello"},
               headers={"X-HAL-Actor": "alice"})
    await call(sup, "POST", "/api/v1/sessions/ses_old/prompt", json={"message": "please fail"})
    await call(sup, "POST", "/api/v1/sessions", json={"project": "ghost"})
    await call(sup, "POST", "/api/v1/commands", json={"type": "credential_push", "target": {"node_id": "api-node"},
                                                      "args": {"env_vars": {"API_KEY": "sk-very-secret"}}})
    r = await call(sup, "GET", "/api/v1/audit")
    rows = r.json()["data"]
    assert r.json()["meta"]["total"] == 4
    by_action = {(a["action"], a["result"]) for a in rows}
    assert {("prompt_session", "success"), ("prompt_session", "failure"), ("create_session", "rejected"),
            ("credential_push", "failure")} == by_action
    # The actor is the token's name; what the client claims (X-HAL-Actor) is recorded beside it (issue 14).
    assert (await call(sup, "GET", "/api/v1/audit", params={"actor": "alice"})).json()["meta"]["total"] == 0
    alice = [a for a in rows if a["client_actor"] == "alice"]
    assert len(alice) == 1 and alice[0]["target"].startswith("ses_old@api-node")
    assert alice[0]["actor"] == ADMIN_NAME and {a["actor"] for a in rows} == {ADMIN_NAME}
    assert "sk-very-secret" not in json.dumps(rows)
    db = sqlite3.connect(sup.db_path)
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert "sk-very-secret" not in dump


async def test_event_stream_delivers_live_events_with_filters(live):
    sup, agent, _ = live
    received: list[dict] = []
    ready = threading.Event()

    def consume() -> None:
        with httpx.stream("GET", sup.api + "/api/v1/events/stream", params={"session_id": "ses_old"},
                          headers={"Authorization": f"Bearer {sup.token}"}, timeout=10) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    ready.set()
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    if len(received) == 3:
                        return

    t = asyncio.create_task(asyncio.to_thread(consume))
    await asyncio.to_thread(ready.wait, 5)
    await agent.send_event(1, "other", session_id="ses_other")
    for seq in range(2, 5):
        await agent.send_event(seq, "message.updated", session_id="ses_old", project="alpha")
    await asyncio.wait_for(t, 10)
    assert [e["seq"] for e in received] == [2, 3, 4]
    assert all(e["session_id"] == "ses_old" and e["node_id"] == "api-node" for e in received)
    # Reconnecting with `since` replays what was stored.
    r = await call(sup, "GET", "/api/v1/events", params={"session_id": "ses_old", "order": "desc", "limit": 1})
    assert r.json()["data"][0]["seq"] == 4


async def test_node_auth_route_shows_reported_states(live):
    sup, agent, _ = live
    from halswarm.protocol import AuthState, AuthStateEntry, encode

    await agent.send_raw(encode(AuthState([AuthStateEntry("codex", "unauthenticated", "Not logged in", 1.0),
                                           AuthStateEntry("claude_code", "authenticated", "", 1.0)])))
    for _ in range(50):
        data = (await call(sup, "GET", "/api/v1/nodes/api-node/auth")).json()["data"]
        if data["auth_states"]:
            break
        await asyncio.sleep(0.1)
    assert data["node_id"] == "api-node"
    assert data["auth_states"]["codex"]["status"] == "unauthenticated"
    assert data["credential_sync"] == "unknown"
    node = (await call(sup, "GET", "/api/v1/nodes/api-node")).json()["data"]
    assert node["auth"] == {"claude_code": "authenticated", "codex": "unauthenticated"}
