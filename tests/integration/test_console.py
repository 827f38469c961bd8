"""The web console (issue 19) over HTTP against a real supervisor: login (good and bad token), the cookie's
flags, CSRF and cross-site refusals, logout, roles (a viewer sees no buttons and is refused), every page
rendered with seeded data, paging and filters, an approval answered through the console form with an
agent answering `permission_reply`, the escaping of hostile names, and the static assets.

The real-browser tests (chromium) are tests/integration/test_console_browser*.py."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from halswarm.protocol import Command, CommandResult
from tests.support.agentsim import SimAgent, session_state
from tests.support.supervisor_proc import ADMIN_NAME, SupervisorProc
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)

VIEWER_TOKEN, OPERATOR_TOKEN = "v" * 8 + "0123456789abcdef" * 3, "o" * 8 + "fedcba9876543210" * 3
NODE, PROJECT = "con-node", "alpha"
HOSTILE = '<script>alert("x")</script>'
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def _with_roles(sup: SupervisorProc) -> SupervisorProc:
    sup.extra["security"] = {"operators": [{"name": ADMIN_NAME, "role": "admin", "token": sup.token},
                                           {"name": "dash", "role": "viewer", "token": VIEWER_TOKEN},
                                           {"name": "oncall", "role": "operator", "token": OPERATOR_TOKEN}]}
    return sup


def browser(sup: SupervisorProc) -> httpx.AsyncClient:
    """A client that keeps cookies like a browser and sends the Origin a same-site form post carries."""
    return httpx.AsyncClient(base_url=sup.api, timeout=30, follow_redirects=False)


async def admin_get(sup: SupervisorProc, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sup.api, timeout=30,
                                 headers={"Authorization": f"Bearer {sup.token}"}) as c:
        return await c.get(path)


async def login(c: httpx.AsyncClient, token: str) -> str:
    """Log in; returns the page's CSRF token."""
    r = await c.post("/ui/login", data={"token": token})
    assert r.status_code == 303 and r.headers["location"] == "/ui/", r.text
    page = await c.get("/ui/")
    assert page.status_code == 200, page.text
    m = CSRF.search(page.text)
    assert m, page.text[:500]
    return m.group(1)


def asked(rid: str, sid: str, command: str = "echo hi") -> dict[str, Any]:
    return {"id": rid, "sessionID": sid, "permission": "bash", "patterns": [command], "always": ["echo *"],
            "metadata": {"command": command}, "tool": {"messageID": "msg_1", "callID": "call_1"}}


class Agent:
    """A node whose sessions ask permissions; answers `permission_reply` as the real agent does."""

    def __init__(self, sup: SupervisorProc, node: str = NODE, projects: list[tuple[str, str]] | None = None) -> None:
        self.agent = SimAgent(sup.ws_url, sup.agent_token, node, projects or [(PROJECT, "/srv/alpha")])
        self.agent.handler = self.handle
        self.seq = 0
        self.pending: dict[str, str] = {}
        self.commands: list[Command] = []

    async def connect(self, sessions: list[dict[str, Any]]) -> None:
        await self.agent.connect(sessions=sessions, last_acked_seq=self.seq)

    async def send(self, ev_type: str, sid: str, data: dict[str, Any]) -> None:
        self.seq += 1
        await self.agent.send_event(self.seq, ev_type, session_id=sid, project=PROJECT, data=data)
        await self.agent.wait_acked(self.seq)

    async def ask(self, rid: str, sid: str, command: str = "echo hi") -> None:
        self.pending[rid] = sid
        await self.send("permission.asked", sid, asked(rid, sid, command))

    async def handle(self, cmd: Command) -> CommandResult:
        self.commands.append(cmd)
        if cmd.type == "permission_reply":
            rid, sid = cmd.args.get("permission_id"), cmd.target.session_id or cmd.args.get("session_id")
            if self.pending.pop(str(rid), None) != sid:
                return CommandResult(cmd.command_id, "failure", None, f"permission request is not pending: {rid}")
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self.send(
                "permission.replied", sid, {"sessionID": sid, "requestID": rid, "reply": cmd.args["reply"]})))
            return CommandResult(cmd.command_id, "success", {"session_id": sid, "permission_id": rid,
                                                             "reply": cmd.args["reply"], "accepted": True})
        if cmd.type == "prompt_session":
            return CommandResult(cmd.command_id, "success", {"session_id": cmd.args["session_id"]})
        return CommandResult(cmd.command_id, "failure", None, f"unsupported {cmd.type}")

    async def close(self) -> None:
        await self.agent.close()


async def test_login_cookie_logout_and_redirects(make_supervisor):
    sup = _with_roles(make_supervisor()).start()
    async with browser(sup) as c:
        # every page but the login page and the static files sends an anonymous visitor to the login page
        for path in ("/ui/", "/ui/sessions", "/ui/sessions/nope", "/ui/approvals", "/ui/cost", "/ui/remediations",
                     "/ui/audit"):
            r = await c.get(path)
            assert (r.status_code, r.headers.get("location")) == (303, "/ui/login"), path
        r = await c.get("/ui/login")
        assert r.status_code == 200 and 'id="login"' in r.text and 'name="token" type="password"' in r.text
        assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"
        assert "script-src 'self'" in r.headers["content-security-policy"] and "unsafe-inline" not in r.text
        assert (await c.get("/ui/events/stream")).status_code == 401
        assert (await c.get("/ui/whoami")).status_code == 401

        bad = await c.post("/ui/login", data={"token": "wrong-token-" + "x" * 40})
        assert bad.status_code == 401 and 'id="login-error"' in bad.text and "set-cookie" not in bad.headers
        r = await c.post("/ui/login", data={"token": OPERATOR_TOKEN})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("hal_console=") and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace(
            "Strict", "strict") and "Path=/ui" in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback; TLS sets it
        page = await c.get("/ui/")
        assert page.status_code == 200 and 'data-page="fleet"' in page.text
        assert OPERATOR_TOKEN not in page.text and OPERATOR_TOKEN not in cookie
        assert (await c.get("/ui/whoami")).status_code == 204
        assert (await c.get("/ui/login")).status_code == 303  # already logged in
        csrf = CSRF.search(page.text).group(1)

        # logout needs the CSRF token; then the session is gone on the server, not just in this browser
        old = c.cookies.get("hal_console")
        assert (await c.post("/ui/logout", data={})).status_code == 403
        r = await c.post("/ui/logout", data={"csrf": csrf})
        assert (r.status_code, r.headers["location"]) == (303, "/ui/login")
        assert (await c.get("/ui/")).status_code == 303
    async with browser(sup) as replay:  # the old cookie, replayed: refused
        replay.cookies.set("hal_console", old, path="/ui")
        assert (await replay.get("/ui/")).status_code == 303

    # the audit log names who logged in and out, from the console
    r = await admin_get(sup, "/api/v1/audit?actor=oncall")
    actions = [(a["action"], a["client_actor"]) for a in r.json()["data"]]
    assert ("console_login", "console") in actions and ("console_logout", "console") in actions


async def test_failed_logins_are_throttled_without_locking_out_a_valid_token(make_supervisor):
    sup = _with_roles(make_supervisor()).start()
    async with browser(sup) as c:
        statuses = [(await c.post("/ui/login", data={"token": f"guess-{i:02d}-" + "g" * 40})).status_code
                    for i in range(22)]
        assert statuses[:20] == [401] * 20 and statuses[20:] == [429, 429]
        assert (await c.post("/ui/login", data={"token": VIEWER_TOKEN})).status_code == 303
        assert (await c.post("/ui/login", data={"token": "guess-again-" + "g" * 40})).status_code == 429
        # the API shares the count: a guess there is refused too
        r = await c.get("/api/v1/nodes", headers={"Authorization": "Bearer " + "h" * 48})
        assert r.status_code == 429


async def test_login_survives_a_restart(make_supervisor):
    sup = _with_roles(make_supervisor()).start()
    async with browser(sup) as c:
        await login(c, VIEWER_TOKEN)
        sup.stop()
        sup.start()
        r = await c.get("/ui/sessions")
        assert r.status_code == 200 and 'data-page="sessions"' in r.text


async def test_csrf_cross_site_and_viewer_refusals(make_supervisor):
    sup = _with_roles(make_supervisor()).start()
    agent = Agent(sup)
    await agent.connect([session_state("ses_v1", PROJECT, "waiting_input")])
    try:
        await agent.ask("per_v1", "ses_v1")
        async with browser(sup) as c:
            csrf = await login(c, OPERATOR_TOKEN)
            for data in ({"reply": "once"}, {"reply": "once", "csrf": "0" * 64}):
                r = await c.post("/ui/approvals/per_v1", data=data)
                assert r.status_code == 403 and 'id="action-error"' in r.text and "CSRF" in r.text
            r = await c.post("/ui/approvals/per_v1", data={"reply": "once", "csrf": csrf},
                             headers={"Origin": "https://evil.example"})
            assert r.status_code == 403
            for headers in ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                            {"Origin": "null"}):
                r = await c.post("/ui/approvals/per_v1", data={"reply": "once", "csrf": csrf}, headers=headers)
                assert r.status_code == 403 and "cross-site" in r.text, headers
            r = await c.post("/ui/login", data={"token": OPERATOR_TOKEN}, headers={"Origin": "https://evil.example"})
            assert r.status_code == 403 and "set-cookie" not in r.headers  # no login CSRF either
            r = await c.post("/ui/approvals/per_v1", content=b'{"reply":"once"}',
                             headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
            assert r.status_code == 400
        async with browser(sup) as v:
            csrf = await login(v, VIEWER_TOKEN)
            for path in ("/ui/sessions", "/ui/sessions/ses_v1", "/ui/approvals", "/ui/remediations"):
                page = await v.get(path)
                assert page.status_code == 200, path
                for marker in ("<button type=\"submit\" name=\"reply\"", 'id="start-session"', 'id="prompt-form"',
                               'id="kill"', 'id="resume"', 'id="handover"', 'id="remediate"'):
                    assert marker not in page.text, (path, marker)
                assert 'id="logout"' in page.text
            for path, data in (("/ui/approvals/per_v1", {"reply": "once"}), ("/ui/sessions/ses_v1/kill", {}),
                               ("/ui/sessions/ses_v1/prompt", {"prompt": "hi"}),
                               ("/ui/sessions", {"project": PROJECT}),
                               ("/ui/remediate", {"incident": "disk-full", "mode": "check"})):
                r = await v.post(path, data=data | {"csrf": csrf})
                assert r.status_code == 403 and "needs operator" in r.text, (path, r.text[:300])
        assert not agent.commands  # nothing reached the agent
    finally:
        await agent.close()


async def test_approve_and_deny_through_the_console(make_supervisor):
    sup = _with_roles(make_supervisor()).start()
    agent = Agent(sup)
    await agent.connect([session_state("ses_a", PROJECT, "waiting_input"),
                         session_state("ses_b", PROJECT, "waiting_input")])
    try:
        await agent.ask("per_one1", "ses_a", "echo hi")
        await agent.ask("per_two2", "ses_b", "rm -rf build")
        async with browser(sup) as c:
            csrf = await login(c, OPERATOR_TOKEN)
            page = await c.get("/ui/approvals")
            assert page.text.count('data-testid="approval-row"') == 2
            assert 'data-approval-id="per_one1"' in page.text and 'data-action="always"' in page.text
            sess = await c.get("/ui/sessions/ses_a")
            assert 'data-role="permission" data-approval-id="per_one1" data-pending="true"' in sess.text
            assert 'id="session-status"' in sess.text and ">waiting_input<" in sess.text

            r = await c.post("/ui/approvals/per_one1", data={"reply": "once", "csrf": csrf,
                                                             "back": "/ui/sessions/ses_a"})
            assert (r.status_code, r.headers["location"]) == (303, "/ui/sessions/ses_a"), r.text
            shown = await c.get("/ui/sessions/ses_a")
            assert '<p id="flash" class="flash" role="status">per_one1: once sent</p>' in shown.text
            assert 'id="flash"' not in (await c.get("/ui/sessions/ses_a")).text  # shown once
            r = await c.post("/ui/approvals/per_two2", data={"reply": "reject", "csrf": csrf,
                                                             "back": "https://evil.example/"})
            assert (r.status_code, r.headers["location"]) == (303, "/ui/approvals")  # never an outside URL
            assert [(cmd.args["permission_id"], cmd.args["reply"]) for cmd in agent.commands] == [
                ("per_one1", "once"), ("per_two2", "reject")]
            page = await c.get("/ui/approvals")
            assert 'data-testid="approval-row"' not in page.text
            # a second answer: the API's 409, shown as a page
            r = await c.post("/ui/approvals/per_one1", data={"reply": "once", "csrf": csrf})
            assert r.status_code == 409 and "already answered" in r.text

            async def replied() -> bool:
                live = await c.get("/ui/sessions/ses_a/live")
                return 'data-pending="false"' in live.text and 'data-reply="once"' in live.text
            await until(replied, timeout=60)
        r = await admin_get(sup, "/api/v1/audit?actor=oncall&action=permission_reply")
        rows = r.json()["data"]
        assert len(rows) == 2 and {a["client_actor"] for a in rows} == {"console"}
    finally:
        await agent.close()


async def test_pages_render_seeded_data_paged_filtered_and_escaped(make_supervisor):
    sup = _with_roles(make_supervisor()).start()
    hostile_node = "n-" + "x" * 3  # node ids are validated; the hostile text goes in a title and a project
    agent = Agent(sup, hostile_node, [(PROJECT, "/srv/alpha"), ("beta", "/srv/beta")])
    sessions = [session_state(f"ses_{i:03d}", PROJECT if i % 2 else "beta", "idle" if i % 3 else "running",
                              started_at=1_700_000_000 + i) for i in range(120)]
    sessions.append(session_state("ses_evil", PROJECT, "idle", title=HOSTILE, started_at=1_800_000_000,
                                  model="anthropic/claude-sonnet-4", cost_usd=2.5,
                                  tokens={"input": 1000, "output": 500, "total": 1500}))
    await agent.connect(sessions)
    try:
        await agent.send("message.part.updated", "ses_evil", {"part": {
            "id": "prt_1", "messageID": "msg_1", "type": "text", "text": f"assistant says {HOSTILE}"}})
        await agent.send("message.part.updated", "ses_evil", {"part": {
            "id": "prt_2", "messageID": "msg_1", "type": "tool", "tool": "bash",
            "state": {"status": "completed", "input": {"command": "ls /"}, "output": "bin\netc"}}})
        await agent.ask("per_evil1", "ses_evil", HOSTILE)  # a hostile command in the approvals queue
        async with browser(sup) as c:
            await login(c, VIEWER_TOKEN)
            fleet = await c.get("/ui/")
            assert f'data-testid="node-row" data-node-id="{hostile_node}"' in fleet.text
            assert 'id="live" data-state="closed" data-stream="/ui/events/stream?type=node.*"' in fleet.text
            frag = await c.get("/ui/fleet/live", params={"status": "online"})
            assert f'data-node-id="{hostile_node}"' in frag.text and "<html" not in frag.text
            assert 'data-node-id' not in (await c.get("/ui/fleet/live", params={"status": "offline"})).text
            first = await c.get("/ui/sessions")
            assert first.text.count('data-testid="session-row"') == 50
            assert 'data-session-id="ses_evil"' in first.text  # newest first
            assert HOSTILE not in first.text and "&lt;script&gt;" in first.text
            nxt = re.search(r'data-testid="next-page" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
            second = await c.get("/ui/sessions" + nxt)
            ids1 = set(re.findall(r'data-session-id="([^"]+)"', first.text))
            ids2 = set(re.findall(r'data-session-id="([^"]+)"', second.text))
            assert len(ids2) == 50 and not ids1 & ids2
            # The page's live part: its own rows again (filters and cursor kept), a fragment, never more rows.
            assert 'data-stream="/ui/events/stream?type=session.*"' in first.text
            assert 'data-src="/ui/sessions/live' + nxt.replace("&", "&amp;") + '"' in second.text
            live2 = await c.get("/ui/sessions/live" + nxt)
            assert "<html" not in live2.text and set(re.findall(r'data-session-id="([^"]+)"', live2.text)) == ids2
            assert (await c.get("/ui/sessions/live", params={"after": "garbage"})).status_code == 400
            beta = await c.get("/ui/sessions", params={"project": "beta", "status": "running"})
            rows = re.findall(r'data-session-id="(ses_\d+)"', beta.text)
            assert rows and all(int(r[4:]) % 2 == 0 and int(r[4:]) % 3 == 0 for r in rows)
            live_beta = await c.get("/ui/sessions/live", params={"project": "beta", "status": "running"})
            assert re.findall(r'data-session-id="(ses_\d+)"', live_beta.text) == rows
            q = await c.get("/ui/sessions", params={"q": "ses_01"})
            assert sorted(re.findall(r'data-session-id="([^"]+)"', q.text)) == [f"ses_{i:03d}" for i in range(10, 20)]
            assert (await c.get("/ui/sessions", params={"after": "garbage"})).status_code == 400

            one = await c.get("/ui/sessions/ses_evil")
            assert one.status_code == 200 and HOSTILE not in one.text
            assert 'data-role="assistant"' in one.text and "assistant says &lt;script&gt;" in one.text
            assert 'data-role="tool"' in one.text and "bin\netc" in one.text
            assert 'data-approval-id="per_evil1"' in one.text and "echo" not in one.text
            queue = await c.get("/ui/approvals")
            assert 'data-approval-id="per_evil1"' in queue.text and HOSTILE not in queue.text
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in queue.text
            assert (await c.get("/ui/sessions/ses_nope")).status_code == 404
            cost = await c.get("/ui/cost?period=week")
            assert cost.status_code == 200 and 'id="cost-chart"' in cost.text
            assert '<td>alpha</td><td>1500</td><td>$2.50</td>' in cost.text, cost.text
            assert '<span class="value" data-period="today">$2.50</span>' in cost.text
            assert "claude-sonnet-4" in cost.text and "<rect" in cost.text
            for path, marker in (("/ui/approvals", 'data-page="approvals"'), ("/ui/cost", 'id="cost-chart"'),
                                 ("/ui/remediations", 'data-page="remediations"'),
                                 ("/ui/audit", 'data-testid="audit-row"')):
                r = await c.get(path)
                assert r.status_code == 200 and marker in r.text, path
                assert "<script>" not in r.text.replace('<script src="/ui/static/console.js" defer></script>', "")
    finally:
        await agent.close()


async def test_static_assets(make_supervisor):
    sup = make_supervisor().start()
    async with browser(sup) as c:
        js = await c.get("/ui/static/console.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "EventSource" in js.text
        css = await c.get("/ui/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        for bad in ("/ui/static/../api.py", "/ui/static/nope.js", "/ui/static/%2e%2e%2fapi.py"):
            assert (await c.get(bad)).status_code == 404, bad


async def test_console_can_be_turned_off(make_supervisor):
    sup = make_supervisor(console={"enabled": False}).start()
    async with browser(sup) as c:
        for path in ("/ui/login", "/ui/", "/ui/static/console.js"):
            assert (await c.get(path)).status_code == 404, path
        assert (await c.post("/ui/login", data={"token": sup.token})).status_code in (404, 405)
        assert (await c.get("/healthz")).status_code == 200


async def test_cookie_is_secure_over_tls(make_supervisor, tmp_path):
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    proc = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt), "-days",
        "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    sup = make_supervisor(security={"tls": {"enabled": True, "cert_path": str(crt), "key_path": str(key)}})
    sup.tls_ca = crt
    sup.start()
    async with httpx.AsyncClient(base_url=sup.api, timeout=30, verify=sup.verify) as c:
        r = await c.post("/ui/login", data={"token": sup.token})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/ui" in cookie
