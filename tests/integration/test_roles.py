"""Identities and roles (issue 14), against the real supervisor: the role matrix of every /api/v1 route,
agent tokens on the operator API, a spoofed actor, the shared token claiming a per-node id, and
failed-auth throttling that never locks out a valid credential."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from websockets.asyncio.client import connect

from halswarm.core.roles import Role
from halswarm.protocol import Register, decode, encode
from tests.support.supervisor_proc import ADMIN_NAME, SupervisorProc
from tests.support.waiting import wait_for

V, OP, A = Role.viewer, Role.operator, Role.admin

# The minimum role of every /api/v1 route. A route missing here fails the matrix: no route can be added
# without deciding (and documenting, docs/security.md) who may call it.
EXPECTED: dict[tuple[str, str], Role] = {
    ("GET", "/api/v1/nodes"): V, ("GET", "/api/v1/nodes/{node_id}"): V, ("GET", "/api/v1/nodes/{node_id}/auth"): V,
    ("GET", "/api/v1/sessions"): V, ("GET", "/api/v1/sessions/{session_id}"): V,
    ("POST", "/api/v1/sessions"): OP, ("POST", "/api/v1/sessions/{session_id}/prompt"): OP,
    ("POST", "/api/v1/sessions/{session_id}/resume"): OP, ("POST", "/api/v1/sessions/{session_id}/restart"): OP,
    ("POST", "/api/v1/sessions/{session_id}/handover"): OP, ("DELETE", "/api/v1/sessions/{session_id}"): OP,
    ("GET", "/api/v1/events"): V, ("GET", "/api/v1/events/stream"): V,
    ("POST", "/api/v1/commands"): OP, ("GET", "/api/v1/commands/{command_id}"): V,
    ("GET", "/api/v1/audit"): V,
    ("GET", "/api/v1/cost"): V, ("GET", "/api/v1/cost/{period}"): V, ("GET", "/api/v1/cost/status"): V,
    ("POST", "/api/v1/cost/refresh"): OP,
    ("GET", "/api/v1/policies"): V, ("GET", "/api/v1/dependencies"): V,
    ("GET", "/api/v1/auth/drift"): V, ("POST", "/api/v1/oauth/trigger"): A,
    ("POST", "/api/v1/commands/credentials/push"): A,
    ("GET", "/api/v1/env/manifest"): V, ("PUT", "/api/v1/env/manifest"): A,
    ("GET", "/api/v1/env/status"): V, ("GET", "/api/v1/env/status/{node_id}"): V, ("GET", "/api/v1/env/drift"): V,
    ("POST", "/api/v1/env/check/{node_id}"): OP, ("POST", "/api/v1/env/provision/{node_id}"): OP,
    ("POST", "/api/v1/env/approve/{node_id}"): A,
    ("GET", "/api/v1/agent-md/{project}"): V, ("GET", "/api/v1/agent-md/{project}/diff"): V,
    ("GET", "/api/v1/agent-md/{project}/template"): V, ("POST", "/api/v1/agent-md/sync"): OP,
    ("GET", "/api/v1/remediations"): V, ("POST", "/api/v1/remediations"): OP,
    ("GET", "/api/v1/approvals"): V, ("POST", "/api/v1/approvals/{approval_id}"): OP,
    ("POST", "/api/v1/alerts"): A,  # or the dedicated alerts.token (ALERT_TOKEN below), which opens nothing else
}
# The only route the alert token (`alerts.token`, least privilege) opens.
ALERT_ROUTES = {("POST", "/api/v1/alerts")}
# Routes no bearer token opens, whatever its role: they admit only a request signed by the chat platform
# (tests/integration/test_chatops_discord.py, test_chatops_slack.py), so every token here gets 401.
SIGNED_ROUTES = {("POST", "/api/v1/chat/discord/interactions"), ("POST", "/api/v1/chat/slack/commands"),
                 ("POST", "/api/v1/chat/slack/interactions")}

# The web console (/ui, issue 19): HTML pages authenticated by the login cookie, not in the OpenAPI
# document (tests/integration/test_openapi_doc.py checks that), so listed here from its router. None: open
# to anyone (the login form, static files); V: any logged-in role; OP: operator+ (plus CSRF). A console
# route missing here fails test_console_role_matrix_covers_every_route.
CONSOLE: dict[tuple[str, str], Role | None] = {
    ("GET", "/ui/login"): None, ("POST", "/ui/login"): None, ("GET", "/ui/static/{name}"): None,
    ("GET", "/ui/whoami"): None,  # answers 204/401 only: whether the cookie is a login
    ("POST", "/ui/logout"): V,
    ("GET", "/ui/"): V, ("GET", "/ui/fleet/live"): V, ("GET", "/ui/sessions"): V,
    ("GET", "/ui/sessions/live"): V, ("GET", "/ui/sessions/{session_id}"): V,
    ("GET", "/ui/sessions/{session_id}/live"): V, ("GET", "/ui/approvals"): V, ("GET", "/ui/approvals/live"): V,
    ("GET", "/ui/cost"): V, ("GET", "/ui/remediations"): V, ("GET", "/ui/audit"): V,
    ("GET", "/ui/events/stream"): V,
    ("POST", "/ui/sessions"): OP, ("POST", "/ui/sessions/{session_id}/prompt"): OP,
    ("POST", "/ui/sessions/{session_id}/{verb}"): OP, ("POST", "/ui/approvals/{approval_id}"): OP,
    ("POST", "/ui/remediate"): OP,
}

VIEWER_TOKEN, OPERATOR_TOKEN = "v" * 8 + "0123456789abcdef" * 3, "o" * 8 + "fedcba9876543210" * 3
ALERT_TOKEN = "a" * 8 + "00112233445566778899aabb" * 2


def _operators(sup: SupervisorProc) -> dict[str, object]:
    return {"operators": [{"name": ADMIN_NAME, "role": "admin", "token": sup.token},
                          {"name": "dash", "role": "viewer", "token": VIEWER_TOKEN},
                          {"name": "oncall", "role": "operator", "token": OPERATOR_TOKEN}]}


@pytest.fixture
def roles_sup(make_supervisor):  # type: ignore[no-untyped-def]
    sup = make_supervisor(alerts={"token": ALERT_TOKEN})
    sup.extra["security"] = _operators(sup)
    return sup.start()


async def _status(c: httpx.AsyncClient, method: str, path: str, token: str | None) -> tuple[int, str]:
    """Status and error code of one call; streams are not read past the headers."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kw = {"json": {}} if method in ("POST", "PUT") else {}
    async with c.stream(method, path, headers=headers, **kw) as r:
        if r.status_code in (401, 403, 429):
            await r.aread()
            return r.status_code, r.json().get("code", "")
        return r.status_code, ""


async def test_role_matrix_covers_every_route(roles_sup):
    sup = roles_sup
    schema = (await asyncio.to_thread(httpx.get, sup.api + "/openapi.json", timeout=10)).json()
    routes = sorted((m.upper(), p) for p, ops in schema["paths"].items() if p.startswith("/api/v1/")
                    for m in ops)
    missing = [r for r in routes if r not in EXPECTED and r not in SIGNED_ROUTES]
    assert not missing, f"routes without a row in the role matrix (add one, and to docs/security.md): {missing}"
    assert sorted([*EXPECTED, *SIGNED_ROUTES]) == routes  # and no stale rows
    tokens = {"none": (None, None), "wrong": ("wrong-" + "w" * 40, None), "agent": (sup.agent_token, None),
              "viewer": (VIEWER_TOKEN, V), "operator": (OPERATOR_TOKEN, OP), "admin": (sup.token, A),
              "alert": (ALERT_TOKEN, None)}
    bad: list[str] = []
    for i, (method, path) in enumerate(routes):
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        # A source address per route: its 3 failing calls stay under the failed-auth throttle. Plain http on
        # loopback: no TLS context to build per client.
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.{i // 250}.{2 + i % 250}", verify=False)
        async with httpx.AsyncClient(base_url=sup.api, transport=transport, timeout=30) as c:
            results = {who: await _status(c, method, concrete, token) for who, (token, _) in tokens.items()}
        needed = EXPECTED.get((method, path), A)
        for who, (_token, role) in tokens.items():
            status, code = results[who]
            if (method, path) in SIGNED_ROUTES:
                want = "401 AUTH_REQUIRED (no signature)"
                ok = (status, code) == (401, "AUTH_REQUIRED")
            elif who == "alert":
                allowed = (method, path) in ALERT_ROUTES
                want = "allowed" if allowed else "403 FORBIDDEN"
                ok = status not in (401, 403, 429) if allowed else (status, code) == (403, "FORBIDDEN")
            elif role is None:
                want = "401 AUTH_REQUIRED"
                ok = (status, code) == (401, "AUTH_REQUIRED")
            elif role < needed:
                want = "403 FORBIDDEN"
                ok = (status, code) == (403, "FORBIDDEN")
            else:
                want = "allowed"
                ok = status not in (401, 403, 429)
            if not ok:
                bad.append(f"{method} {path} as {who}: {status} {code}, want {want}")
    assert not bad, "\n".join(bad)


def _console_routes() -> list[tuple[str, str]]:
    from fastapi.routing import APIRoute

    from halswarm.supervisor.features.console.api import router

    return sorted((m, r.path) for r in router.routes if isinstance(r, APIRoute) for m in r.methods)


async def _console_login(c: httpx.AsyncClient, token: str) -> str:
    r = await c.post("/ui/login", data={"token": token})
    assert r.status_code == 303, r.text
    return re.search(r'name="csrf" value="([0-9a-f]+)"', (await c.get("/ui/")).text).group(1)


async def test_console_role_matrix_covers_every_route(roles_sup):
    """Every /ui route: anonymous visitors are sent to the login page (401 for the stream), any role reads,
    only operator+ acts (a viewer's action is 403 even with its CSRF token)."""
    sup = roles_sup
    routes = _console_routes()
    assert routes == sorted(CONSOLE), "a /ui route without a row in CONSOLE (or a stale row)"
    bad: list[str] = []
    async with httpx.AsyncClient(base_url=sup.api, timeout=30) as anon, \
            httpx.AsyncClient(base_url=sup.api, timeout=30) as viewer, \
            httpx.AsyncClient(base_url=sup.api, timeout=30) as operator:
        csrf = {"viewer": await _console_login(viewer, VIEWER_TOKEN),
                "operator": await _console_login(operator, OPERATOR_TOKEN)}
        for method, path in routes:
            needed = CONSOLE[(method, path)]
            if needed is None or path == "/ui/logout":
                continue
            url = re.sub(r"\{[^}]+\}", "x", path).replace("/ui/static/x", "/ui/static/console.js")
            for who, c in (("anon", anon), ("viewer", viewer), ("operator", operator)):
                data = {"csrf": csrf.get(who, "")} if method == "POST" else None
                async with c.stream(method, url, data=data) as r:
                    status = r.status_code
                    location = r.headers.get("location", "")
                refused_login = status == 401 or (status == 303 and location == "/ui/login")
                if who == "anon":
                    ok = refused_login
                elif needed == OP and who == "viewer":
                    ok = status == 403
                else:
                    ok = not refused_login and status != 403
                if not ok:
                    bad.append(f"{method} {path} as {who}: {status} {location}")
    assert not bad, "\n".join(bad)


async def test_credential_commands_need_an_admin_on_the_generic_route(roles_sup):
    body = {"type": "push_credentials", "target": {"node_id": "x"}, "args": {"env_vars": {"K": "v"}}}
    async with httpx.AsyncClient(base_url=roles_sup.api, timeout=30) as c:
        r = await c.post("/api/v1/commands", json=body, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert (r.status_code, r.json()["code"]) == (403, "FORBIDDEN"), r.text
        r = await c.post("/api/v1/commands", json=body, headers={"Authorization": f"Bearer {roles_sup.token}"})
        assert r.status_code not in (401, 403), r.text


async def test_agent_tokens_never_open_the_operator_api(make_supervisor):
    """Go-era config: only the shared auth_token. It is an agent token; nothing in /api/v1 opens with it."""
    node_token = "n" * 8 + "0f1e2d3c4b5a6978" * 3
    sup = make_supervisor()
    sup.extra["security"] = {"agent_tokens": {"node-1": node_token}, "allow_shared_agent_token": True}
    sup.start()
    async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
        for token in (sup.agent_token, node_token):
            r = await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {token}"})
            assert (r.status_code, r.json()["code"]) == (401, "AUTH_REQUIRED")
        assert (await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {sup.token}"})).status_code == 200
    go_era = make_supervisor("go")
    go_era.extra["security"] = {"operators": []}
    go_era.start()
    r = await asyncio.to_thread(httpx.get, go_era.api + "/api/v1/nodes", timeout=10,
                                headers={"Authorization": f"Bearer {go_era.agent_token}"})
    assert (r.status_code, r.json()["code"]) == (401, "AUTH_REQUIRED")
    assert "security.operators: none configured" in go_era.log_tail(200)


async def test_spoofed_actor_is_recorded_beside_the_token_name(roles_sup):
    hdr = {"Authorization": f"Bearer {OPERATOR_TOKEN}", "X-HAL-Actor": ADMIN_NAME}
    async with httpx.AsyncClient(base_url=roles_sup.api, timeout=30) as c:
        r = await c.post("/api/v1/sessions", json={"project": "ghost"}, headers=hdr)  # rejected: no node has it
        assert r.status_code >= 400
        rows = (await c.get("/api/v1/audit", headers={"Authorization": f"Bearer {roles_sup.token}"})).json()["data"]
    assert [(a["action"], a["actor"], a["client_actor"]) for a in rows] == [("create_session", "oncall", ADMIN_NAME)]


async def test_shared_token_cannot_register_a_node_that_has_its_own_token(make_supervisor):
    node_token = "n" * 8 + "0f1e2d3c4b5a6978" * 3
    sup = make_supervisor()
    sup.extra["security"] = {"agent_tokens": {"owner": node_token}, "allow_shared_agent_token": True}
    sup.start()
    hdr = {"Authorization": f"Bearer {sup.agent_token}"}
    async with connect(sup.ws_url, additional_headers=hdr) as ws:
        await ws.send(encode(Register(node_id="owner")))
        env = decode(await asyncio.wait_for(ws.recv(), 10))
        assert env.type == "error" and env.payload.code == "not_registered", env
        assert "own token" in env.payload.message
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1008
    async with connect(sup.ws_url, additional_headers=hdr) as ws:  # the opt-in shared token still works for others
        await ws.send(encode(Register(node_id="free")))
        assert decode(await asyncio.wait_for(ws.recv(), 10)).type == "registered"
    async with httpx.AsyncClient(base_url=sup.api, timeout=10) as c:
        nodes = await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {sup.token}"})
        metrics = (await c.get("/metrics")).text
    assert [n["id"] for n in nodes.json()["data"]] == ["free"]
    assert 'hal_o_swarm_connections_total{status="forbidden"} 1.0' in metrics
    wait_for(lambda: "cannot register node owner" in sup.log_tail(400), timeout=10, what="the refusal logged")


async def test_shared_token_is_off_once_nodes_have_their_own(make_supervisor):
    node_token = "n" * 8 + "0f1e2d3c4b5a6978" * 3
    sup = make_supervisor()
    sup.extra["security"] = {"agent_tokens": {"owner": node_token}}
    sup.start()
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        async with connect(sup.ws_url, additional_headers={"Authorization": f"Bearer {sup.agent_token}"}):
            pass
    assert info.value.response.status_code == 401


async def test_bad_tokens_never_lock_out_a_valid_credential(roles_sup):
    async with httpx.AsyncClient(base_url=roles_sup.api, timeout=30) as c:
        statuses = [(await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer bad-{i:040d}"})).status_code
                    for i in range(25)]
        assert statuses[:20] == [401] * 20 and statuses[20:] == [429] * 5
        for token in (VIEWER_TOKEN, roles_sup.token):
            assert (await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        assert (await c.get("/api/v1/nodes", headers={"Authorization": "Bearer bad"})).status_code == 429
