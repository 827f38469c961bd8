"""Discord interactions against the real supervisor (issue 20): signed requests from a key pair made here,
a simulated agent answering the session commands, and a loopback fake of Discord's REST API receiving the
follow-ups of deferred commands and halctl's command registration."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from halswarm.core.chatops.embeds import INFO, SUCCESS
from halswarm.protocol import Command, CommandResult
from tests.fakes.discord_api import FakeDiscord, running_fake_discord
from tests.support.agentsim import SimAgent, session_state
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import wait_for

ROUTE = "/api/v1/chat/discord/interactions"
NODE, PROJECT = "chat-node", "alpha"
VIEWER_ID, OPERATOR_ID, OPS_ROLE, STRANGER_ID = "20000000000000001", "20000000000000002", "30000000000000003", "4"
ADMIN_ID = "20000000000000009"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fake_discord() -> Iterator[FakeDiscord]:
    with running_fake_discord() as fake:
        yield fake


@pytest.fixture
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _signed(key: Ed25519PrivateKey, doc: dict[str, Any], ts: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(doc).encode()
    stamp = str(int(ts if ts is not None else time.time()))
    return body, {"X-Signature-Ed25519": key.sign(stamp.encode() + body).hex(), "X-Signature-Timestamp": stamp,
                  "Content-Type": "application/json", "User-Agent": "Discord-Interactions/1.0 (+https://discord.com)"}


def _command(app: str, name: str, options: list[dict[str, Any]], user: str, token: str,
             roles: list[str] | None = None) -> dict[str, Any]:
    return {"id": f"9{abs(hash(token)) % 10**17}", "application_id": app, "type": 2, "token": token, "version": 1,
            "guild_id": "70000000000000007", "channel_id": "80000000000000008",
            "data": {"id": "1", "name": name, "type": 1, "options": options},
            "member": {"user": {"id": user, "username": "someone", "global_name": "Someone"},
                       "roles": roles or [], "permissions": "2147483647"}}


def _opt(name: str, value: Any, type_: int = 3) -> dict[str, Any]:
    return {"name": name, "type": type_, "value": value}


def _agent_answer(cmd: Command) -> CommandResult:
    if cmd.type == "create_session":
        return CommandResult(cmd.command_id, "success", session_state("ses_chat", PROJECT, "running"))
    if cmd.type == "prompt_session":
        return CommandResult(cmd.command_id, "success", {"accepted": True})
    if cmd.type == "kill_session":
        return CommandResult(cmd.command_id, "success", session_state(cmd.target.session_id or "", PROJECT, "killed"))
    return CommandResult(cmd.command_id, "failure", error=f"unexpected {cmd.type}")


async def test_discord_commands_against_the_real_supervisor(make_supervisor, fake_discord, signer):
    sup: SupervisorProc = make_supervisor(chatops={"discord": {
        "public_key": _public_hex(signer), "api_base": fake_discord.api_base,
        "users": {VIEWER_ID: "viewer", OPERATOR_ID: "operator", ADMIN_ID: "admin"},
        "roles": {OPS_ROLE: "operator"}}})
    sup.start()
    agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [(PROJECT, "/srv/alpha")])
    agent.handler = _agent_answer
    await agent.connect(sessions=[session_state("ses_old", PROJECT, "idle")])
    app = fake_discord.application_id
    try:
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            async def post(doc: dict[str, Any], ts: float | None = None) -> httpx.Response:
                body, headers = _signed(signer, doc, ts)
                return await c.post(ROUTE, content=body, headers=headers)

            # PING -> PONG; the same request again is a replay; a stale one and a forged one are refused
            ping = {"id": "1", "application_id": app, "type": 1, "token": "p", "version": 1,
                    "user": {"id": "53908232506183680"}}
            body, headers = _signed(signer, ping)
            r = await c.post(ROUTE, content=body, headers=headers)
            assert (r.status_code, r.json()) == (200, {"type": 1})
            r = await c.post(ROUTE, content=body, headers=headers)
            assert (r.status_code, r.json()["code"]) == (401, "AUTH_REQUIRED") and "replayed" in r.json()["error"]
            assert (await post(ping | {"id": "2"}, ts=time.time() - 600)).status_code == 401
            forged = Ed25519PrivateKey.generate()
            body, headers = _signed(forged, ping | {"id": "3"})
            assert (await c.post(ROUTE, content=body, headers=headers)).status_code == 401
            bearer = {"Authorization": f"Bearer {sup.token}", "Content-Type": "application/json"}
            assert (await c.post(ROUTE, content=json.dumps(ping), headers=bearer)).status_code == 401

            # /nodes: a viewer's read, answered at once in the info colour
            r = await post(_command(app, "nodes", [], VIEWER_ID, "t-nodes"))
            assert r.status_code == 200 and r.json()["type"] == 4
            nodes = r.json()["data"]["embeds"][0]
            assert nodes["title"] == "Agent Nodes" and nodes["color"] == INFO
            assert f"`{NODE}` ({NODE}.test) - online" in nodes["description"] and "**Connected:** 1" in \
                nodes["description"]

            # /kill by a viewer, and by someone with no role: ephemeral refusals, no command reaches the agent
            for user in (VIEWER_ID, STRANGER_ID):
                r = await post(_command(app, "kill", [_opt("session_id", "ses_old")], user, f"t-deny-{user}"))
                data = r.json()["data"]
                assert r.json()["type"] == 4 and data["flags"] == 64 and "operator" in data["content"]
            assert agent.commands == []

            # /start by an operator through a Discord role: deferred, then the follow-up reaches Discord
            r = await post(_command(app, "start", [_opt("project", PROJECT)], "50000000000000005", "t-start",
                                    roles=[OPS_ROLE]))
            assert r.json() == {"type": 5}
            started = (await asyncio.to_thread(fake_discord.wait_original, "t-start"))["embeds"][0]
            assert started["color"] == SUCCESS and "ses_chat" in started["description"], started
            assert [(cmd.type, cmd.target.project) for cmd in agent.commands] == [("create_session", PROJECT)]

            # /status of the project lists its sessions (the Go bot sent it without a session id)
            r = await post(_command(app, "status", [_opt("project", PROJECT)], VIEWER_ID, "t-status"))
            status = r.json()["data"]["embeds"][0]
            assert "`ses_chat` alpha on chat-node" in status["description"], status
            assert "`ses_old` alpha on chat-node - idle" in status["description"], status

            # /inject: the prompt goes to the session's agent; a rate-limited follow-up is sent again
            fake_discord.rate_limit_next = 1
            r = await post(_command(app, "inject", [_opt("session_id", "ses_chat"), _opt("message", "carry on")],
                                    OPERATOR_ID, "t-inject"))
            assert r.json() == {"type": 5}
            injected = (await asyncio.to_thread(fake_discord.wait_original, "t-inject"))["embeds"][0]
            assert injected["color"] == SUCCESS, injected
            prompt = agent.commands[-1]
            assert (prompt.type, prompt.target.session_id, prompt.args["message"]) == ("prompt_session", "ses_chat",
                                                                                       "carry on")

            # /logs, /cost, /env drift: viewer reads answered at once
            r = await post(_command(app, "logs", [_opt("session_id", "ses_old"), _opt("limit", 5, 4)], VIEWER_ID,
                                    "t-logs"))
            logs = r.json()["data"]["embeds"][0]
            assert logs["title"] == "Logs of ses_old" and {"name": "Node", "value": NODE, "inline": True} in \
                logs["fields"], logs
            r = await post(_command(app, "cost", [_opt("period", "week")], VIEWER_ID, "t-cost"))
            assert r.json()["data"]["embeds"][0]["title"] == "Cost (week)"
            r = await post(_command(app, "env", [{"name": "drift", "type": 1, "options": []}], VIEWER_ID, "t-env"))
            assert r.json()["data"]["embeds"][0]["title"] == "Environment drift"

            # /remediate: admin only; not in remediation.auto -> routed as alert.firing with the command
            r = await post(_command(app, "remediate", [_opt("incident", "agent-crashed"), _opt("host", NODE)],
                                    OPERATOR_ID, "t-rem-denied"))
            assert r.json()["data"]["flags"] == 64
            r = await post(_command(app, "remediate", [_opt("incident", "agent-crashed"), _opt("host", NODE),
                                                       _opt("check", True, 5)], ADMIN_ID, "t-rem"))
            assert r.json() == {"type": 5}
            rem = (await asyncio.to_thread(fake_discord.wait_original, "t-rem"))["embeds"][0]
            assert {"name": "Action", "value": "routed", "inline": True} in rem["fields"], rem
            assert any(f["value"].endswith(f"--limit {NODE} --check`") for f in rem["fields"]), rem
            fired = (await c.get("/api/v1/events", params={"type": "alert.firing"},
                                 headers={"Authorization": f"Bearer {sup.token}"})).json()["data"]
            assert [(e["data"]["incident"], e["data"]["receiver"]) for e in fired] == [
                ("agent-crashed", f"discord:{ADMIN_ID}")]

            # /kill by the operator: targets the session, deferred, followed up
            r = await post(_command(app, "kill", [_opt("session_id", "ses_chat")], OPERATOR_ID, "t-kill"))
            assert r.json() == {"type": 5}
            killed = (await asyncio.to_thread(fake_discord.wait_original, "t-kill"))["embeds"][0]
            assert killed["color"] == SUCCESS and killed["title"] == "Killed ses_chat", killed
            kill = agent.commands[-1]
            assert (kill.type, kill.target.session_id, kill.args["session_id"]) == ("kill_session", "ses_chat",
                                                                                     "ses_chat")

            # every chat command is audited as discord:<user id>, and the dispatched kill carries that actor
            admin = {"Authorization": f"Bearer {sup.token}"}

            async def audit_of(actor: str) -> list[dict[str, Any]] | None:
                rows = (await c.get("/api/v1/audit", params={"actor": actor}, headers=admin)).json()["data"]
                return rows or None

            rows = await audit_of(f"discord:{OPERATOR_ID}")  # stored before the follow-up was sent
            assert rows
            assert {(r["action"], r["result"]) for r in rows} >= {("chat_command", "success")}
            assert any(r["action"] != "chat_command" and "kill" in json.dumps(r) for r in rows), rows
            denied = await audit_of(f"discord:{STRANGER_ID}")
            assert denied and denied[0]["result"] == "denied" and denied[0]["target"] == "/kill"
        # the follow-ups went to Discord's real route, without an Authorization header
        edited = [c.path.split("/")[-3] for c in fake_discord.edits()]
        assert sorted(edited) == ["t-inject", "t-inject", "t-kill", "t-rem", "t-start"]  # one 429, sent again
        assert all("authorization" not in c.headers for c in fake_discord.edits())
        # interaction tokens are credentials: the supervisor's debug log shows none of them
        log_text = sup.log_path.read_text()
        assert "/webhooks/" in log_text and not any(t in log_text for t in ("t-start", "t-inject", "t-kill"))
    finally:
        await agent.close()


async def test_a_slow_discord_holds_neither_ingest_nor_other_commands(make_supervisor, fake_discord, signer):
    """The follow-up of a deferred command hangs at Discord: meanwhile the agent's events are acked and
    another command is answered; once Discord answers, the follow-up completes."""
    sup: SupervisorProc = make_supervisor(chatops={"discord": {
        "public_key": _public_hex(signer), "api_base": fake_discord.api_base, "followup_timeout_sec": 60,
        "users": {OPERATOR_ID: "operator"}}})
    sup.start()
    agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [(PROJECT, "/srv/alpha")])
    agent.handler = _agent_answer
    await agent.connect(sessions=[session_state("ses_old", PROJECT, "idle")])
    app = fake_discord.application_id
    fake_discord.hang = True
    try:
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            body, headers = _signed(signer, _command(app, "kill", [_opt("session_id", "ses_old")], OPERATOR_ID,
                                                     "t-slow"))
            assert (await c.post(ROUTE, content=body, headers=headers)).json() == {"type": 5}
            await asyncio.to_thread(lambda: wait_for(lambda: fake_discord.edits(), "the follow-up at Discord", 20))
            for seq in range(1, 21):
                await agent.send_event(seq, "session.status", session_id="ses_old", project=PROJECT)
            await agent.wait_acked(20, timeout=10)
            body, headers = _signed(signer, _command(app, "nodes", [], OPERATOR_ID, "t-fast"))
            r = await c.post(ROUTE, content=body, headers=headers)
            assert r.json()["type"] == 4
            assert "t-slow" not in fake_discord.originals  # still held at Discord
        fake_discord.release.set()
        done = await asyncio.to_thread(fake_discord.wait_original, "t-slow")
        assert done["embeds"][0]["title"] == "Killed ses_old"
    finally:
        await agent.close()


def _halctl(*args: str, home: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | {"HOME": home}
    return subprocess.run([sys.executable, "-m", "halswarm.cli.main", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_halctl_registers_and_unregisters_the_commands(fake_discord, tmp_path):
    token_file = tmp_path / "bot-token"
    token_file.write_text(fake_discord.bot_token + "\n")
    base = ["chatops", "discord", "register", "--application-id", fake_discord.application_id,
            "--bot-token-file", str(token_file), "--api-base", fake_discord.api_base]
    res = _halctl(*base, "--guild", "70000000000000007", home=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "registered 14 slash commands for guild 70000000000000007" in res.stdout
    guild = fake_discord.commands["70000000000000007"]
    assert [c["name"] for c in guild] == ["status", "nodes", "logs", "resume", "inject", "restart", "kill", "start",
                                          "cost", "remediate", "env", "approve", "deny", "approvals"]
    approve = next(c for c in guild if c["name"] == "approve")
    assert [(o["name"], o["type"], o["required"]) for o in approve["options"]] == [("approval_id", 3, True),
                                                                                    ("always", 5, False)]
    call = fake_discord.calls[-1]
    assert (call.method, call.path) == ("PUT", f"/api/v10/applications/{fake_discord.application_id}/guilds/"
                                               "70000000000000007/commands")
    assert call.headers["authorization"] == f"Bot {fake_discord.bot_token}"
    res = _halctl(*base, home=str(tmp_path))  # global
    assert res.returncode == 0 and len(fake_discord.commands[None]) == 14
    # the guild from the environment (the supervisor's channels.discord.guild_id)
    env_guild = subprocess.run([sys.executable, "-m", "halswarm.cli.main", *base], capture_output=True, text=True,
                               timeout=60, env=dict(os.environ) | {"HOME": str(tmp_path),
                                                                   "HALCTL_DISCORD_GUILD_ID": "70000000000000008"})
    assert env_guild.returncode == 0 and len(fake_discord.commands["70000000000000008"]) == 14, env_guild.stderr
    res = _halctl(*base, "--guild", "70000000000000007", "--remove", home=str(tmp_path))
    assert res.returncode == 0 and fake_discord.commands["70000000000000007"] == []
    unregister = ["chatops", "discord", "unregister", *base[3:]]  # SPEC 11's name for the removal
    res = _halctl(*unregister, home=str(tmp_path))
    assert res.returncode == 0 and fake_discord.commands[None] == [], res.stderr
    assert "removed the slash commands from all guilds" in res.stdout
    # a wrong token: Discord's refusal, one line, and the token never printed
    token_file.write_text("Wrong.Token.Value-999\n")
    res = _halctl(*base, home=str(tmp_path))
    assert res.returncode == 1 and "HTTP 401" in res.stderr
    assert "Wrong.Token.Value-999" not in res.stdout + res.stderr
