"""Console actions against a real supervisor and a protocol-speaking agent: start, prompt, resume,
handover and kill from the page's forms (the agent receives the commands, the audit names the operator);
the live event stream with the login cookie; remediation check first, then apply."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from halswarm.protocol import Command, CommandResult
from tests.integration.test_console import OPERATOR_TOKEN, PROJECT, _with_roles, admin_get, browser, login
from tests.support.agentsim import SimAgent, session_state

pytestmark = pytest.mark.timeout(120)
NODE = "act-node"


def answer(cmd: Command) -> CommandResult:
    """The outputs the real agent's contract gives for each command."""
    sid = cmd.target.session_id or cmd.args.get("session_id") or "ses_old"
    outputs = {
        "create_session": session_state("ses_new", PROJECT, "running"),
        "prompt_session": {"accepted": True},
        "handover": {"old_session": session_state(sid, PROJECT, "killed"),
                     "session": session_state(sid + "-next", PROJECT, "running")},
        "kill_session": session_state(sid, PROJECT, "killed"),
    }
    return CommandResult(cmd.command_id, "success", outputs.get(cmd.type, session_state(sid, PROJECT, "running")))


async def test_start_prompt_resume_handover_kill_from_the_page(make_supervisor):
    sup = _with_roles(make_supervisor()).start()
    agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [(PROJECT, "/srv/alpha")])
    seen: list[Command] = []

    async def handler(cmd: Command) -> CommandResult:
        seen.append(cmd)
        return answer(cmd)

    agent.handler = handler
    await agent.connect(sessions=[session_state("ses_old", PROJECT, "idle")])
    try:
        async with browser(sup) as c:
            csrf = await login(c, OPERATOR_TOKEN)
            page = await c.get("/ui/sessions")
            assert 'id="start-session"' in page.text and 'id="start-submit"' in page.text
            r = await c.post("/ui/sessions", data={"csrf": csrf, "node_id": NODE, "project": PROJECT,
                                                   "prompt": "fix the build"})
            assert (r.status_code, r.headers["location"]) == (303, "/ui/sessions/ses_new"), r.text
            live = await c.get("/ui/sessions/ses_new/live")
            assert 'id="flash"' not in live.text  # a live fragment leaves the message for the page
            assert "session ses_new started on act-node" in (await c.get("/ui/sessions/ses_new")).text
            assert (seen[-1].type, seen[-1].args) == ("create_session", {"project": PROJECT, "prompt": "fix the build"})
            r = await c.post("/ui/sessions", data={"csrf": csrf, "project": ""})
            assert r.status_code == 400 and "project" in r.text

            page = await c.get("/ui/sessions/ses_old")
            for marker in ('id="prompt-form"', 'id="prompt-submit"', 'id="resume"', 'id="kill"', 'id="handover"',
                           'id="live" data-state="closed"'):
                assert marker in page.text, marker
            r = await c.post("/ui/sessions/ses_old/prompt", data={"csrf": csrf, "prompt": "and add a test"})
            assert (r.status_code, r.headers["location"]) == (303, "/ui/sessions/ses_old")
            assert (seen[-1].type, seen[-1].args["message"]) == ("prompt_session", "and add a test")
            for verb, ctype, then in (("resume", "resume", "/ui/sessions/ses_old"),
                                      ("handover", "handover", "/ui/sessions/ses_old-next"),  # the new session
                                      ("kill", "kill_session", "/ui/sessions/ses_old")):
                r = await c.post(f"/ui/sessions/ses_old/{verb}", data={"csrf": csrf})
                assert (r.status_code, r.headers["location"]) == (303, then), (verb, r.text)
                assert seen[-1].type == ctype
            r = await c.post("/ui/sessions/ses_old/explode", data={"csrf": csrf})
            assert r.status_code == 404
            r = await c.post("/ui/sessions/ses_nope/kill", data={"csrf": csrf})
            assert r.status_code == 404 and 'id="action-error"' in r.text
        rows = (await admin_get(sup, "/api/v1/audit?actor=oncall")).json()["data"]
        done = {a["action"] for a in rows if a["client_actor"] == "console"}
        assert {"create_session", "prompt_session", "resume", "handover", "kill_session"} <= done, done
    finally:
        await agent.close()


async def test_live_stream_with_the_login_cookie(make_supervisor):
    sup = _with_roles(make_supervisor()).start()
    agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [(PROJECT, "/srv/alpha")])
    await agent.connect(sessions=[session_state("ses_live", PROJECT, "running")])
    try:
        async with browser(sup) as c:
            await login(c, OPERATOR_TOKEN)
            async with c.stream("GET", "/ui/events/stream", params={"session_id": "ses_live"}) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                lines = r.aiter_lines()

                async def first_data() -> dict:
                    async for line in lines:
                        if line.startswith("data:"):
                            return json.loads(line[5:])
                    raise AssertionError("stream ended")

                reader = asyncio.ensure_future(first_data())
                await asyncio.sleep(0.3)
                await agent.send_event(1, "message.part.updated", session_id="ses_live", project=PROJECT,
                                       data={"part": {"id": "prt_1", "messageID": "msg_1", "type": "text",
                                                      "text": "hello"}})
                got = await asyncio.wait_for(reader, 60)
                assert (got["type"], got["session_id"]) == ("message.part.updated", "ses_live")
            live = await c.get("/ui/sessions/ses_live/live")
            assert live.status_code == 200 and 'data-role="assistant"' in live.text and "hello" in live.text
            assert "<html" not in live.text  # a fragment
    finally:
        await agent.close()


async def test_remediation_check_first_then_apply(make_supervisor, tmp_path):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"{NODE} ansible_connection=local\n")
    sup = _with_roles(make_supervisor(remediation={"inventory": str(inventory)})).start()
    async with browser(sup) as c:
        csrf = await login(c, OPERATOR_TOKEN)
        page = await c.get("/ui/remediations")
        assert 'id="remediate"' in page.text and 'id="remediate-check"' in page.text
        incident = re.search(r'<option value="([a-z0-9-]+)">', page.text).group(1)
        form = {"csrf": csrf, "incident": "agent-crashed", "host": NODE}
        r = await c.post("/ui/remediate", data=form | {"mode": "apply"})
        assert r.status_code == 409 and "check first" in r.text
        r = await c.post("/ui/remediate", data=form | {"mode": "check"})
        assert r.status_code == 200, r.text
        assert 'data-mode="check"' in r.text and "--check" in r.text and 'id="remediate-apply"' in r.text
        r = await c.post("/ui/remediate", data=form | {"mode": "apply"})
        assert r.status_code == 200 and 'data-mode="apply"' in r.text and "--check" not in r.text
        r = await c.post("/ui/remediate", data=form | {"incident": "no-such-incident", "mode": "check"})
        assert r.status_code == 400 and "unknown incident" in r.text
        assert incident
    rows = (await admin_get(sup, "/api/v1/audit?action=console_remediate")).json()["data"]
    assert [(a["actor"], a["result"]) for a in rows] == [("oncall", "failure"), ("oncall", "success"),
                                                         ("oncall", "success"), ("oncall", "failure")]
    assert httpx  # the module's client is httpx (used through the helpers)
