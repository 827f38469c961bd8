"""Slack against the real supervisor (issue 20): slash commands and button presses signed with a signing
secret made here (form bodies as Slack sends them), a simulated agent answering session commands and
`permission_reply` like the real agent, and a loopback fake of Slack (chat.postMessage, chat.update,
usergroups.users.list, response_url) receiving what the supervisor sends."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from halswarm.protocol import Command, CommandResult
from halswarm.supervisor.features.chat.slack_signature import sign
from halswarm.supervisor.features.chat.slack_web import SlackWeb
from tests.fakes.slack_api import TEAM, FakeSlack, running_fake_slack
from tests.integration.test_approvals import Node
from tests.support.agentsim import SimAgent, session_state
from tests.support.supervisor_proc import ADMIN_NAME, SupervisorProc
from tests.support.waiting import wait_for

COMMANDS, INTERACTIONS = "/api/v1/chat/slack/commands", "/api/v1/chat/slack/interactions"
NODE, PROJECT, CHANNEL = "chat-node", "alpha", "C0APPROVE"
VIEWER, OPERATOR, ADMIN, STRANGER, IN_GROUP, GROUP = "U0VIEWER", "U0OPERATR", "U0ADMIN1", "U0STRANGE", "U0GRPMEM", \
    "S0ONCALL"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with running_fake_slack() as fake:
        fake.groups[GROUP] = [IN_GROUP]
        yield fake


def _secret_file(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def _config(tmp: Path, fake: FakeSlack, secret: str, **over: Any) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    return {"slack": {"signing_secret_file": _secret_file(tmp / "slack-signing", secret),
                      "bot_token_file": _secret_file(tmp / "slack-bot", fake.bot_token), "channel": CHANNEL,
                      "api_base": fake.api_base, "response_base": fake.base,
                      "users": {VIEWER: "viewer", OPERATOR: "operator", ADMIN: "admin"},
                      "groups": {GROUP: "operator"}} | over}


def _signed(secret: str, fields: dict[str, str], ts: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = urlencode(fields).encode()
    stamp = str(int(time.time() if ts is None else ts))
    return body, {"X-Slack-Signature": sign(secret, stamp, body), "X-Slack-Request-Timestamp": stamp,
                  "Content-Type": "application/x-www-form-urlencoded",
                  "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}


def _slash(fake: FakeSlack, text: str, user: str, command: str = "/hal") -> dict[str, str]:
    return {"token": "legacy-verification-token", "team_id": TEAM, "team_domain": "halswarm",
            "channel_id": CHANNEL, "channel_name": "ops", "user_id": user, "user_name": user.lower(),
            "command": command, "text": text, "api_app_id": "A0HALSWRM", "is_enterprise_install": "false",
            "response_url": fake.response_url("commands"), "trigger_id": f"{secrets.randbelow(10**9)}.1.abc"}


def _press(fake: FakeSlack, message: dict[str, Any], action_id: str, user: str) -> dict[str, str]:
    """A block_actions payload as Slack sends it for a press on the message the supervisor posted."""
    button = next(e for b in message["blocks"] if b.get("type") == "actions" for e in b["elements"]
                  if e["action_id"] == action_id)
    payload = {"type": "block_actions", "user": {"id": user, "username": user.lower(), "name": user.lower(),
                                                 "team_id": TEAM},
               "api_app_id": "A0HALSWRM", "token": "legacy-verification-token",
               "container": {"type": "message", "message_ts": message["ts"], "channel_id": CHANNEL,
                             "is_ephemeral": False},
               "trigger_id": f"{secrets.randbelow(10**9)}.1.def", "team": {"id": TEAM, "domain": "halswarm"},
               "enterprise": None, "is_enterprise_install": False, "channel": {"id": CHANNEL, "name": "ops"},
               "message": message, "state": {"values": {}}, "response_url": fake.response_url("actions"),
               "actions": [{"action_id": action_id, "block_id": "hal_actions", "text": button["text"],
                            "value": button["value"], "style": button.get("style", "default"), "type": "button",
                            "action_ts": f"{time.time():.6f}"}]}
    return {"payload": json.dumps(payload)}


def _agent_answer(cmd: Command) -> CommandResult:
    if cmd.type == "create_session":
        return CommandResult(cmd.command_id, "success", session_state("ses_chat", PROJECT, "running"))
    if cmd.type == "prompt_session":
        return CommandResult(cmd.command_id, "success", {"accepted": True})
    if cmd.type == "kill_session":
        return CommandResult(cmd.command_id, "success", session_state(cmd.target.session_id or "", PROJECT, "killed"))
    return CommandResult(cmd.command_id, "failure", error=f"unexpected {cmd.type}")


def _groups_loaded(sup: SupervisorProc) -> None:
    wait_for(lambda: f"slack: user group {GROUP} has 1 members" in sup.log_path.read_text(),
             "the Slack user group read", 60)


async def test_slack_commands_against_the_real_supervisor(make_supervisor, fake_slack, tmp_path):
    secret = secrets.token_hex(16)
    sup: SupervisorProc = make_supervisor(chatops=_config(tmp_path / "s", fake_slack, secret))
    sup.start()
    await asyncio.to_thread(_groups_loaded, sup)
    agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [(PROJECT, "/srv/alpha")])
    agent.handler = _agent_answer
    await agent.connect(sessions=[session_state("ses_old", PROJECT, "idle")])
    try:
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            async def post(fields: dict[str, str], ts: float | None = None, key: str = secret) -> httpx.Response:
                body, headers = _signed(key, fields, ts)
                return await c.post(COMMANDS, content=body, headers=headers)

            # a viewer's read, answered at once in Block Kit
            r = await post(_slash(fake_slack, "nodes", VIEWER))
            assert r.status_code == 200, r.text
            nodes = r.json()
            assert nodes["response_type"] == "in_channel" and nodes["blocks"][0]["type"] == "header"
            assert nodes["blocks"][0]["text"]["text"].endswith("Agent Nodes")
            assert f"`{NODE}` ({NODE}.test) - online" in nodes["blocks"][1]["text"]["text"]
            # the same request again, a stale one, a forged one, a tampered one and a bearer token: 401
            fields = _slash(fake_slack, "nodes", VIEWER)
            body, headers = _signed(secret, fields)
            assert (await c.post(COMMANDS, content=body, headers=headers)).status_code == 200
            r = await c.post(COMMANDS, content=body, headers=headers)
            assert (r.status_code, r.json()["code"]) == (401, "AUTH_REQUIRED") and "replayed" in r.json()["error"]
            assert (await post(_slash(fake_slack, "nodes", VIEWER), ts=time.time() - 600)).status_code == 401
            assert (await post(_slash(fake_slack, "nodes", VIEWER), key="not-the-secret")).status_code == 401
            body, headers = _signed(secret, _slash(fake_slack, "nodes", VIEWER))
            tampered = body.replace(VIEWER.encode(), ADMIN.encode())
            assert (await c.post(COMMANDS, content=tampered, headers=headers)).status_code == 401
            bearer = {"Authorization": f"Bearer {sup.token}", "Content-Type": "application/x-www-form-urlencoded"}
            assert (await c.post(COMMANDS, content=urlencode(_slash(fake_slack, "nodes", ADMIN)),
                                 headers=bearer)).status_code == 401
            assert (await c.post(INTERACTIONS, content=b"payload=%7B%7D", headers=bearer)).status_code == 401

            # /hal kill by a viewer and by someone with no role: ephemeral refusals, nothing reaches the agent
            for user in (VIEWER, STRANGER):
                r = await post(_slash(fake_slack, "kill ses_old", user))
                assert r.json()["response_type"] == "ephemeral" and "operator" in r.json()["text"], r.json()
            assert agent.commands == []

            # /hal start by an operator through a Slack user group: acknowledged, result at its response_url
            fields = _slash(fake_slack, f"start {PROJECT} write the tests", IN_GROUP)
            r = await post(fields)
            assert r.json()["response_type"] == "in_channel" and "/start" in r.json()["text"]
            started = (await asyncio.to_thread(fake_slack.wait_response, fields["response_url"]))[0]
            assert started["response_type"] == "in_channel" and ":white_check_mark:" in \
                started["blocks"][0]["text"]["text"], started
            assert "ses_chat" in started["blocks"][1]["text"]["text"]
            create = agent.commands[0]
            assert (create.type, create.target.project, create.args.get("prompt")) == (
                "create_session", PROJECT, "write the tests")

            # /inject (the message is the rest of the line, unescaped) and /kill, one Slack command per name
            fields = _slash(fake_slack, "ses_chat carry on &amp; commit", OPERATOR, command="/inject")
            await post(fields)
            await asyncio.to_thread(fake_slack.wait_response, fields["response_url"])
            prompt = agent.commands[-1]
            assert (prompt.type, prompt.target.session_id, prompt.args["message"]) == (
                "prompt_session", "ses_chat", "carry on & commit")
            fields = _slash(fake_slack, "kill ses_chat", OPERATOR)
            await post(fields)
            killed = (await asyncio.to_thread(fake_slack.wait_response, fields["response_url"]))[0]
            assert killed["blocks"][0]["text"]["text"].endswith("Killed ses_chat")
            assert (agent.commands[-1].type, agent.commands[-1].target.session_id) == ("kill_session", "ses_chat")

            # viewer reads: logs, cost, env drift; a typo is explained to its author only
            r = await post(_slash(fake_slack, "logs ses_old 5", VIEWER))
            assert r.json()["blocks"][0]["text"]["text"].endswith("Logs of ses_old")
            r = await post(_slash(fake_slack, "cost week", VIEWER))
            assert r.json()["blocks"][0]["text"]["text"].endswith("Cost (week)")
            r = await post(_slash(fake_slack, "env drift", VIEWER))
            assert r.json()["blocks"][0]["text"]["text"].endswith("Environment drift")
            r = await post(_slash(fake_slack, "logs ses_old plenty", VIEWER))
            assert r.json()["response_type"] == "ephemeral" and "whole number" in r.json()["text"]

            # every command is audited as slack:<user>, and the dispatched kill carries that actor
            admin = {"Authorization": f"Bearer {sup.token}"}
            rows = (await c.get("/api/v1/audit", params={"actor": f"slack:{OPERATOR}"}, headers=admin)).json()["data"]
            assert {(r["action"], r["target"], r["result"]) for r in rows} >= {
                ("chat_command", "/kill", "success"), ("chat_command", "/inject", "success")}
            assert any(r["action"] != "chat_command" and "kill" in json.dumps(r) for r in rows), rows
            denied = (await c.get("/api/v1/audit", params={"actor": f"slack:{STRANGER}"}, headers=admin)).json()
            assert [(r["target"], r["result"]) for r in denied["data"]] == [("/kill", "denied")]
        # response_urls are credentials: the supervisor's debug log shows none of them
        log_text = sup.log_path.read_text()
        assert fake_slack.bot_token not in log_text and secret not in log_text
        assert not any(r.split("/")[-1] in log_text for r in fake_slack.responses)
    finally:
        await agent.close()


async def test_an_approval_from_a_slack_button(make_supervisor, fake_slack, tmp_path):
    """permission.asked is posted with buttons; a viewer's press is refused, an operator's approves through
    the agent and replaces the message; an approval answered through the API updates its message."""
    secret = secrets.token_hex(16)
    sup: SupervisorProc = make_supervisor(chatops=_config(tmp_path / "s", fake_slack, secret))
    sup.start()
    node = Node(sup)
    await node.connect()
    try:
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            async def press(fields: dict[str, str]) -> httpx.Response:
                body, headers = _signed(secret, fields)
                return await c.post(INTERACTIONS, content=body, headers=headers)

            await node.ask("per_one1", "ses_a", "echo hi")
            posted = (await asyncio.to_thread(fake_slack.wait_posted, 1))[0]
            assert posted["channel"] == CHANNEL and "per_one1" in posted["text"]
            actions = posted["blocks"][-1]
            assert [e["text"]["text"] for e in actions["elements"]] == ["Approve", "Always", "Deny"]
            message = next(iter(fake_slack.messages.values()))

            refused = _press(fake_slack, message, "hal_approve_once", VIEWER)
            r = await press(refused)
            assert (r.status_code, r.text) == (200, "")
            answer = (await asyncio.to_thread(fake_slack.wait_response, json.loads(refused["payload"])[
                "response_url"]))[0]
            assert answer["response_type"] == "ephemeral" and answer["replace_original"] is False
            assert "operator" in answer["text"] and node.replies == []

            approved = _press(fake_slack, message, "hal_approve_once", OPERATOR)
            assert (await press(approved)).status_code == 200
            done = (await asyncio.to_thread(fake_slack.wait_response, json.loads(approved["payload"])[
                "response_url"]))[0]
            assert done["replace_original"] is True
            outcome = done["blocks"][-1]["elements"][-1]["text"]
            assert "Approved (once)" in outcome and f"<@{OPERATOR}>" in outcome, done
            assert not any(b.get("type") == "actions" for b in done["blocks"])
            reply = node.replies[-1]
            assert (reply.args["permission_id"], reply.args["reply"]) == ("per_one1", "once")
            replied = (await c.get("/api/v1/events", params={"type": "approval.replied"},
                                   headers={"Authorization": f"Bearer {sup.token}"})).json()["data"]
            assert [(e["data"]["id"], e["data"]["actor"]) for e in replied] == [("per_one1", f"slack:{OPERATOR}")]
            audit = (await c.get("/api/v1/audit", params={"actor": f"slack:{OPERATOR}"},
                                 headers={"Authorization": f"Bearer {sup.token}"})).json()["data"]
            assert {(a["action"], a["result"]) for a in audit} >= {("chat_action", "success")}
            assert any("permission_reply" in json.dumps(a) for a in audit), audit
            # the same press again (a second person): Slack's message says it was already answered
            again = _press(fake_slack, message, "hal_approve_reject", ADMIN)
            await press(again)
            late = (await asyncio.to_thread(fake_slack.wait_response, json.loads(again["payload"])[
                "response_url"]))[0]
            assert "already answered" in late["blocks"][-1]["elements"][-1]["text"], late
            assert len(node.replies) == 1

            # answered elsewhere (the API): the posted message is updated through chat.update
            await node.ask("per_two2", "ses_b", "rm -rf build")
            await asyncio.to_thread(fake_slack.wait_posted, 2)
            r = await c.post("/api/v1/approvals/per_two2", json={"reply": "reject"},
                             headers={"Authorization": f"Bearer {sup.token}"})
            assert r.status_code == 200, r.text
            update = (await asyncio.to_thread(lambda: wait_for(lambda: fake_slack.calls_to("/api/chat.update"),
                                                               "chat.update", 30)))[0].body
            assert update["channel"] == CHANNEL and f"Denied by {ADMIN_NAME}" in update["text"]
            assert not any(b.get("type") == "actions" for b in update["blocks"])
    finally:
        await node.agent.close()


async def test_a_hanging_slack_holds_neither_ingest_nor_commands(make_supervisor, fake_slack, tmp_path):
    """chat.postMessage hangs at Slack: the agent's events are still acked, a command is still answered,
    and once Slack answers the message goes out."""
    secret = secrets.token_hex(16)
    sup: SupervisorProc = make_supervisor(chatops=_config(tmp_path / "s", fake_slack, secret, http_timeout_sec=60,
                                                          groups={}))
    sup.start()
    node = Node(sup)
    await node.connect()
    fake_slack.hang = True
    try:
        await node.ask("per_slow1", "ses_a")
        await asyncio.to_thread(lambda: wait_for(lambda: fake_slack.calls_to("/api/chat.postMessage"),
                                                 "the post at Slack", 30))
        for _ in range(20):
            await node.send("session.status", "ses_a", {"status": "busy"})  # each waits for its ack
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            body, headers = _signed(secret, _slash(fake_slack, "nodes", VIEWER))
            r = await c.post(COMMANDS, content=body, headers=headers)
            assert r.json()["blocks"][0]["text"]["text"].endswith("Agent Nodes")
        assert fake_slack.messages == {}  # still held at Slack
        fake_slack.release.set()
        await asyncio.to_thread(lambda: wait_for(lambda: fake_slack.messages, "the message at Slack", 30))
    finally:
        await node.agent.close()


async def test_the_web_client_retries_once_refuses_foreign_urls_and_is_bounded_in_time():
    """SlackWeb against the fake: a 429 is retried once after Retry-After; `ok: false` is None (logged);
    a response_url outside `response_base` is never requested; a hanging Slack costs one timeout."""
    with running_fake_slack() as fake:
        web = SlackWeb(fake.api_base, fake.bot_token, fake.base, timeout=1.0)
        try:
            fake.rate_limit_next = 1
            sent = await web.call("chat.postMessage", {"channel": CHANNEL, "text": "hi"})
            assert sent is not None and sent["channel"] == CHANNEL
            assert len(fake.calls_to("/api/chat.postMessage")) == 2
            assert await web.call("chat.postMessage", {"channel": "C0NOWHERE", "text": "hi"}) is None
            assert await web.call("chat.update", {"channel": CHANNEL, "ts": "1.2", "text": "x"}) is None
            assert await web.call("usergroups.users.list", {"usergroup": GROUP}, form=True) is None  # unknown
            fake.groups[GROUP] = [IN_GROUP]
            assert (await web.call("usergroups.users.list", {"usergroup": GROUP}, form=True) or {})["users"] == [
                IN_GROUP]
            url = fake.response_url("actions")
            assert await web.respond(url, {"text": "done"})
            assert await web.respond("http://169.254.169.254/latest/meta-data", {"text": "x"}) is False
            assert await web.respond(url.replace("/actions/", "/actions/ x"), {"text": "x"}) is False
            before = len(fake.calls)
            fake.hang = True
            assert await web.respond(fake.response_url("commands"), {"text": "slow"}) is False  # timed out
            assert len(fake.calls) <= before + 1  # no retry after a timeout
            wrong = SlackWeb(fake.api_base, "xoxb-wrong-token", fake.base, timeout=1.0)
            fake.release.set()
            fake.hang = False
            assert await wrong.call("chat.postMessage", {"channel": CHANNEL, "text": "hi"}) is None
            await wrong.close()
        finally:
            await web.close()


async def test_a_request_nobody_answers_is_rejected_and_its_message_updated(make_supervisor, fake_slack, tmp_path):
    """The approvals policy rejects an unanswered request after `approvals.timeout_minutes`; its Slack
    message loses the buttons and says so (chat.update)."""
    secret = secrets.token_hex(16)
    sup: SupervisorProc = make_supervisor(chatops=_config(tmp_path / "s", fake_slack, secret, groups={}),
                                          approvals={"timeout_minutes": 0.05, "on_timeout": "reject"})
    sup.start()
    node = Node(sup)
    await node.connect()
    try:
        await node.ask("per_late1", "ses_a")
        await asyncio.to_thread(fake_slack.wait_posted, 1)
        update = (await asyncio.to_thread(lambda: wait_for(lambda: fake_slack.calls_to("/api/chat.update"),
                                                           "chat.update after the timeout", 60)))[0].body
        assert "Denied by approvals-policy" in update["text"], update
        assert not any(b.get("type") == "actions" for b in update["blocks"])
        [message] = fake_slack.messages.values()
        assert message["text"] == update["text"]
        assert node.replies[-1].args["reply"] == "reject"
    finally:
        await node.agent.close()
