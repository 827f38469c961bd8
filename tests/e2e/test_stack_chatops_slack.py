"""Slack ChatOps through the whole real stack (issue 20): signed slash commands and button presses ->
supervisor -> hal-agent -> opencode serve (`permission.bash=ask`) -> the loopback fake LLM, with the loopback
fake of Slack receiving the messages with buttons, their updates and the response_url answers. `/hal start`
a session whose bash tool call asks permission; the request is posted with buttons; an Approve press
unblocks it and the tool runs; `/hal inject`, `/hal logs`, `/hal kill`. Skipped only when the pinned
opencode is missing."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from halswarm.supervisor.features.chat.slack_signature import sign
from tests.fakes.fake_llm import FakeLLM, opencode_config_content
from tests.fakes.slack_api import TEAM, FakeSlack, running_fake_slack
from tests.support.agent_proc import AgentProc, api_get, opencode_env, session_events, wait_status
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NODE, CHANNEL = "e2e-slack", "C0E2EAPPR"
VIEWER, OPERATOR = "U0E2EVIEW", "U0E2EOPER"
COMMANDS, INTERACTIONS = "/api/v1/chat/slack/commands", "/api/v1/chat/slack/interactions"


@dataclass
class Stack:
    sup: SupervisorProc
    llm: FakeLLM
    slack: FakeSlack
    secret: str

    def post(self, route: str, fields: dict[str, str], *, ts: float | None = None) -> httpx.Response:
        body = urlencode(fields).encode()
        stamp = str(int(time.time() if ts is None else ts))
        headers = {"X-Slack-Signature": sign(self.secret, stamp, body), "X-Slack-Request-Timestamp": stamp,
                   "Content-Type": "application/x-www-form-urlencoded"}
        return httpx.post(self.sup.api + route, content=body, headers=headers, timeout=30)

    def slash(self, text: str, user: str = OPERATOR) -> tuple[dict[str, Any], str]:
        url = self.slack.response_url("commands")
        r = self.post(COMMANDS, {"token": "legacy", "team_id": TEAM, "channel_id": CHANNEL, "user_id": user,
                                 "user_name": user.lower(), "command": "/hal", "text": text, "api_app_id": "A0E2E",
                                 "response_url": url, "trigger_id": "1.2.3"})
        assert r.status_code == 200, r.text
        return r.json(), url

    def run(self, text: str) -> dict[str, Any]:
        """A slash command that waits for an agent: acknowledged, then its result at the response_url."""
        ack, url = self.slash(text)
        assert ack["response_type"] == "in_channel" and ack["text"].startswith(":hourglass"), ack
        return self.slack.wait_response(url, timeout=60)[0]

    def tool_results(self, prompt: str) -> list[str]:
        return [str(m.get("content")) for r in self.llm.chat_requests() if r.last_user_text == prompt
                for m in r.body.get("messages", []) if m.get("role") == "tool"]


@pytest.fixture(scope="module")
def stack(opencode_bin: str, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("slackops")
    project = root / "projects" / "demo"
    project.mkdir(parents=True)
    secret = secrets.token_hex(16)
    with running_fake_slack() as slack:
        slack.channels.add(CHANNEL)
        files = {}
        for name, value in (("signing", secret), ("bot", slack.bot_token)):
            files[name] = root / f"slack-{name}"
            files[name].write_text(value)
            files[name].chmod(0o600)
        sup = SupervisorProc(root / "sup", extra={
            "server": {"heartbeat_interval_sec": 1},
            "chatops": {"slack": {"signing_secret_file": str(files["signing"]), "bot_token_file": str(files["bot"]),
                                  "channel": CHANNEL, "api_base": slack.api_base, "response_base": slack.base,
                                  "users": {VIEWER: "viewer", OPERATOR: "operator"}}}}).start()
        env = opencode_env(root / "home", opencode_config_content(fake_llm.base_url, permission_ask_bash=True))
        agent = AgentProc(root / "agent", sup.ws_url, sup.agent_token, node_id=NODE,
                          projects=[("demo", str(project))], manage=True, binary=opencode_bin, env=env,
                          clean_env=True, opencode_port=0)
        try:
            agent.start()
            agent.wait_online(sup, timeout=60, sessions_available=True)
            yield Stack(sup, fake_llm, slack, secret)
        finally:
            agent.cleanup()
            sup.stop()


def test_stale_and_unauthorised_commands_are_refused(stack: Stack) -> None:
    fields = {"command": "/hal", "text": "start demo", "user_id": OPERATOR,
              "response_url": stack.slack.response_url("commands")}
    assert stack.post(COMMANDS, fields, ts=time.time() - 900).status_code == 401
    answer, _url = stack.slash("start demo", user=VIEWER)
    assert answer["response_type"] == "ephemeral" and "operator" in answer["text"]
    assert api_get(stack.sup, "/api/v1/sessions") == []  # nothing started


def test_start_approve_from_a_button_inject_logs_kill(stack: Stack) -> None:
    prompt = "TOOLCALL from slack"
    started = stack.run(f"start demo {prompt}")
    sid = re.search(r"Session `([^`]+)`", started["blocks"][1]["text"]["text"]).group(1)  # type: ignore[union-attr]
    wait_status(stack.sup, sid, "waiting_input", timeout=60)
    assert stack.tool_results(prompt) == []  # nothing ran while waiting

    def request_message() -> dict[str, Any] | None:
        return next((m for m in stack.slack.messages.values() if sid in json.dumps(m["blocks"])), None)

    message = wait_for(request_message, "the permission request posted with buttons", 60)
    actions = message["blocks"][-1]
    approve = next(e for e in actions["elements"] if e["action_id"] == "hal_approve_once")
    [pending] = api_get(stack.sup, "/api/v1/approvals", session_id=sid)
    assert pending["id"] == approve["value"] and pending["patterns"] == ["echo hi-from-tool"]

    response_url = stack.slack.response_url("actions")
    payload = {"type": "block_actions", "user": {"id": OPERATOR, "username": "oper", "team_id": TEAM},
               "api_app_id": "A0E2E", "token": "legacy", "team": {"id": TEAM, "domain": "hal"},
               "container": {"type": "message", "message_ts": message["ts"], "channel_id": CHANNEL},
               "channel": {"id": CHANNEL, "name": "approvals"}, "message": message, "response_url": response_url,
               "trigger_id": "4.5.6", "actions": [{"action_id": approve["action_id"], "block_id": actions["block_id"],
                                                   "value": approve["value"], "type": "button",
                                                   "text": approve["text"], "action_ts": f"{time.time():.6f}"}]}
    r = stack.post(INTERACTIONS, {"payload": json.dumps(payload)})
    assert (r.status_code, r.text) == (200, "")
    wait_status(stack.sup, sid, "idle", timeout=60)
    assert any("hi-from-tool" in t for t in stack.tool_results(prompt))  # the tool ran
    replaced = stack.slack.wait_response(response_url, timeout=30)[0]
    assert replaced["replace_original"] is True and "Approved (once)" in json.dumps(replaced["blocks"])
    replied = wait_for(lambda: session_events(stack.sup, sid, "approval.replied"), "approval.replied stored", 30)
    assert replied[0]["data"]["actor"] == f"slack:{OPERATOR}"

    injected = stack.run(f"inject {sid} hello from slack")
    assert injected["blocks"][0]["text"]["text"].startswith(":white_check_mark:"), injected
    wait_for(lambda: [r for r in stack.llm.chat_requests() if r.last_user_text == "hello from slack"],
             "the injected prompt at the model", 60)
    wait_status(stack.sup, sid, "idle", timeout=60)

    logs, _url = stack.slash(f"logs {sid} 50", user=VIEWER)
    assert logs["blocks"][0]["text"]["text"].endswith(f"Logs of {sid}")
    assert "session.idle" in logs["blocks"][1]["text"]["text"], logs

    killed = stack.run(f"kill {sid}")
    assert killed["blocks"][0]["text"]["text"] == f":white_check_mark: Killed {sid}", killed
    wait_status(stack.sup, sid, "killed", "completed", timeout=60)
    audit = api_get(stack.sup, "/api/v1/audit", actor=f"slack:{OPERATOR}", limit=100)
    assert {(a["action"], a["result"]) for a in audit} >= {("chat_command", "success"), ("chat_action", "success")}
