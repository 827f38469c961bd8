"""Discord ChatOps through the whole real stack (issue 20): signed interactions -> supervisor -> hal-agent ->
opencode serve (`permission.bash=ask`) -> the loopback fake LLM, with the loopback fake of Discord's REST
API receiving the follow-ups and the bot's channel messages. `/start` a session whose bash tool call asks
permission; the request is posted with buttons; an Approve press (a component interaction) unblocks it and
the tool runs; `/inject`, `/logs`, `/kill`. Forged, stale and unauthorised requests are refused, and a
hanging Discord holds neither ingest nor the session. Skipped only when the pinned opencode is missing."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from halswarm.core.chatops.embeds import SUCCESS
from tests.fakes.discord_api import FakeDiscord, component_problem, running_fake_discord
from tests.fakes.fake_llm import FakeLLM, opencode_config_content
from tests.support.agent_proc import AgentProc, api_get, opencode_env, session_events, wait_status
from tests.support.discord_interactions import ROUTE, command_doc, component_doc, opt, public_hex, signed
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NODE = "e2e-discord"
CHANNEL, GUILD = "60000000000000016", "70000000000000017"
VIEWER_ID, OPERATOR_ID = "20000000000000011", "20000000000000012"


@dataclass
class Stack:
    sup: SupervisorProc
    llm: FakeLLM
    discord: FakeDiscord
    key: Ed25519PrivateKey

    def post(self, doc: dict[str, Any], *, key: Ed25519PrivateKey | None = None,
             ts: float | None = None) -> httpx.Response:
        body, headers = signed(key or self.key, doc, ts)
        return httpx.post(self.sup.api + ROUTE, content=body, headers=headers, timeout=30)

    def command(self, name: str, options: list[dict[str, Any]], token: str, user: str = OPERATOR_ID) -> dict[str, Any]:
        return command_doc(self.discord.application_id, name, options, user, token, guild=GUILD, channel=CHANNEL)

    def run(self, name: str, options: list[dict[str, Any]], token: str) -> dict[str, Any]:
        """A deferred slash command: answered "thinking", then its follow-up embed at Discord."""
        r = self.post(self.command(name, options, token))
        assert r.json() == {"type": 5}, r.text
        return self.discord.wait_original(token, timeout=60)["embeds"][0]

    def request_message(self, sid: str) -> dict[str, Any] | None:
        """The bot's message of the session's permission request."""
        return next((m for m in self.discord.channel_messages(CHANNEL)
                     if m.get("embeds") and sid in str(m["embeds"][0].get("fields"))
                     and "permission.asked" in m["embeds"][0]["title"]), None)

    def tool_results(self, prompt: str) -> list[str]:
        return [str(m.get("content")) for r in self.llm.chat_requests() if r.last_user_text == prompt
                for m in r.body.get("messages", []) if m.get("role") == "tool"]


@pytest.fixture(scope="module")
def stack(opencode_bin: str, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("chatops")
    project = root / "projects" / "demo"
    project.mkdir(parents=True)
    key = Ed25519PrivateKey.generate()
    with running_fake_discord() as discord:
        sup = SupervisorProc(root / "sup", extra={
            "server": {"heartbeat_interval_sec": 1},
            "chatops": {"discord": {"public_key": public_hex(key), "api_base": discord.api_base,
                                    "users": {VIEWER_ID: "viewer", OPERATOR_ID: "operator"}}},
            "channels": {"discord": {"bot_token": discord.bot_token, "api_base": discord.api_base,
                                     "guild_id": GUILD, "console_url": "https://hal.example.com",
                                     "channels": {"approvals": CHANNEL}}},
            "routes": [{"match": "permission.asked", "target": "discord#approvals"}],
            "routing": {"backoff_base_ms": 100, "timeout_seconds": 60}}).start()
        env = opencode_env(root / "home", opencode_config_content(fake_llm.base_url, permission_ask_bash=True))
        agent = AgentProc(root / "agent", sup.ws_url, sup.agent_token, node_id=NODE,
                          projects=[("demo", str(project))], manage=True, binary=opencode_bin, env=env,
                          clean_env=True, opencode_port=0)
        try:
            agent.start()
            agent.wait_online(sup, timeout=60, sessions_available=True)
            yield Stack(sup, fake_llm, discord, key)
        finally:
            agent.cleanup()
            sup.stop()


def test_forged_stale_and_unauthorised_interactions_are_refused(stack: Stack) -> None:
    before = api_get(stack.sup, "/api/v1/sessions")
    start = stack.command("start", [opt("project", "demo")], "tok-refused")
    assert stack.post(start, key=Ed25519PrivateKey.generate()).status_code == 401  # another application's key
    assert stack.post(start, ts=time.time() - 900).status_code == 401  # stale
    viewer = stack.post(stack.command("start", [opt("project", "demo")], "tok-viewer", user=VIEWER_ID))
    assert viewer.json()["type"] == 4 and viewer.json()["data"]["flags"] == 64
    stranger = stack.post(stack.command("kill", [opt("session_id", "ses_x")], "tok-stranger", user="42"))
    assert stranger.json()["data"]["flags"] == 64
    assert api_get(stack.sup, "/api/v1/sessions") == before  # nothing started
    audit = api_get(stack.sup, "/api/v1/audit", actor=f"discord:{VIEWER_ID}", limit=10)
    assert [a["target"] for a in audit if a["action"] == "chat_command" and a["result"] == "denied"] == ["/start"]


def test_start_approve_from_a_button_inject_logs_kill(stack: Stack) -> None:
    prompt = "TOOLCALL from discord"
    started = stack.run("start", [opt("project", "demo"), opt("prompt", prompt)], "tok-start")
    assert started["color"] == SUCCESS, started
    sid = re.search(r"Session `([^`]+)`", started["description"]).group(1)  # type: ignore[union-attr]
    wait_status(stack.sup, sid, "waiting_input", timeout=60)
    assert stack.tool_results(prompt) == []  # nothing ran while waiting

    posted = wait_for(lambda: stack.request_message(sid), "the permission request posted with buttons", 60)
    assert component_problem(posted["components"]) is None
    buttons = {b["label"]: b for b in posted["components"][0]["components"]}
    assert set(buttons) == {"Approve", "Always", "Deny", "Session"}
    assert buttons["Session"]["url"] == f"https://hal.example.com/ui/sessions/{sid}"
    approval_id = buttons["Approve"]["custom_id"].rsplit(":", 1)[1]
    [pending] = api_get(stack.sup, "/api/v1/approvals", session_id=sid)
    assert pending["id"] == approval_id and pending["patterns"] == ["echo hi-from-tool"]

    stack.discord.press(posted["id"], "tok-press")
    press = component_doc(stack.discord.application_id, posted, buttons["Approve"]["custom_id"], OPERATOR_ID,
                          "tok-press", guild=GUILD)
    assert stack.post(press).json() == {"type": 6}
    wait_status(stack.sup, sid, "idle", timeout=60)
    assert any("hi-from-tool" in t for t in stack.tool_results(prompt))  # the tool ran
    edited = wait_for(lambda: (m := stack.discord.messages[posted["id"]])["components"] == [] and m, "edited", 30)
    assert edited["embeds"][0]["fields"][-1] == {"name": "Outcome", "value": f"Approved by <@{OPERATOR_ID}>",
                                                 "inline": False}
    replied = wait_for(lambda: session_events(stack.sup, sid, "approval.replied"), "approval.replied stored", 30)
    assert replied[0]["data"]["actor"] == f"discord:{OPERATOR_ID}"

    injected = stack.run("inject", [opt("session_id", sid), opt("message", "hello from discord")], "tok-inject")
    assert injected["color"] == SUCCESS, injected
    wait_for(lambda: [r for r in stack.llm.chat_requests() if r.last_user_text == "hello from discord"],
             "the injected prompt at the model", 60)
    wait_status(stack.sup, sid, "idle", timeout=60)

    logs = stack.post(stack.command("logs", [opt("session_id", sid), opt("limit", 50, 4)], "tok-logs",
                                    user=VIEWER_ID)).json()["data"]["embeds"][0]
    assert logs["title"] == f"Logs of {sid}" and "session.idle" in logs["description"], logs
    assert {"name": "Node", "value": NODE, "inline": True} in logs["fields"]

    killed = stack.run("kill", [opt("session_id", sid)], "tok-kill")
    assert killed["title"] == f"Killed {sid}" and killed["color"] == SUCCESS, killed
    wait_status(stack.sup, sid, "killed", "completed", timeout=60)
    audit = api_get(stack.sup, "/api/v1/audit", actor=f"discord:{OPERATOR_ID}", limit=100)
    targets = {a["target"] for a in audit if a["action"] == "chat_command" and a["result"] == "success"}
    assert {"/start", "/approve", "/inject", "/kill"} <= targets, targets
    assert any(a["action"] == "permission_reply" for a in audit), audit


def test_a_hanging_discord_holds_neither_ingest_nor_the_session(stack: Stack) -> None:
    """Discord hangs on every call: the session's events are still stored, its request listed and answered
    through the API, the tool runs; the held post goes out once Discord answers."""
    stack.discord.release.clear()
    stack.discord.hang = True
    prompt = "TOOLCALL while discord hangs"
    before = {s["id"] for s in api_get(stack.sup, "/api/v1/sessions")}
    try:
        r = stack.post(stack.command("start", [opt("project", "demo"), opt("prompt", prompt)], "tok-hang"))
        assert r.json() == {"type": 5}
        sid = wait_for(lambda: next((s["id"] for s in api_get(stack.sup, "/api/v1/sessions")
                                     if s["id"] not in before), None), "the new session", 60)
        wait_status(stack.sup, sid, "waiting_input", timeout=60)
        [req] = wait_for(lambda: api_get(stack.sup, "/api/v1/approvals", session_id=sid), "the request listed", 30)
        assert stack.request_message(sid) is None  # the post is held at Discord
        answer = httpx.post(f"{stack.sup.api}/api/v1/approvals/{req['id']}", json={"reply": "once"},
                            headers={"Authorization": f"Bearer {stack.sup.token}"}, timeout=60)
        assert answer.status_code == 200, answer.text
        wait_status(stack.sup, sid, "idle", timeout=60)
        assert any("hi-from-tool" in t for t in stack.tool_results(prompt))
    finally:
        stack.discord.release.set()
    stack.discord.hang = False
    held = wait_for(lambda: stack.request_message(sid), "the held post, once Discord answers", 60)
    # the answer came before the post: the message is edited after it, in order
    wait_for(lambda: stack.discord.messages[held["id"]]["components"] == [], "the post edited with the answer", 60)
