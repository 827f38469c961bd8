"""Discord interactions without a network: the signature (a key pair made here), the replay window, who
may run what, and the answers to real payload shapes (PING, an application command, a message component).
The services behind the commands are stand-ins recording the calls; the supervisor runs them for real in
tests/integration/test_chatops_discord.py."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from halswarm.config.errors import ConfigError
from halswarm.core.chatops.access import ReplayGuard, chat_role
from halswarm.core.chatops.commands import BY_NAME, COMMANDS, flatten_options, registration_payload
from halswarm.core.chatops.embeds import FAILURE, INFO, SUCCESS, TIMEOUT, error_text
from halswarm.core.model import Node, Session
from halswarm.core.paging import Page
from halswarm.core.roles import Role
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.chat.ports import ChatPorts
from halswarm.supervisor.features.chat.service import DiscordInteractions
from halswarm.supervisor.features.chat.settings import DiscordSettings, parse
from halswarm.supervisor.features.chat.signature import load_key, verified

APP = "111122223333"
VIEWER, OPERATOR, ADMIN, STRANGER, OPS_ROLE = "200", "300", "400", "999", "5000"


def keypair() -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.generate()
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private: Ed25519PrivateKey, body: bytes, ts: float | None = None) -> tuple[str, str]:
    timestamp = str(int(ts if ts is not None else time.time()))
    return private.sign(timestamp.encode() + body).hex(), timestamp


# ----- payload shapes, as Discord sends them -----

def ping() -> dict[str, Any]:
    return {"id": "1", "application_id": APP, "type": 1, "token": "tok-ping", "version": 1,
            "user": {"id": "53908232506183680", "username": "discord"}}


def command(name: str, options: list[dict[str, Any]] | None = None, user: str = VIEWER,
            roles: list[str] | None = None, token: str = "tok-cmd") -> dict[str, Any]:
    return {"id": "2", "application_id": APP, "type": 2, "token": token, "version": 1, "guild_id": "777",
            "channel_id": "888", "locale": "en-US",
            "data": {"id": "3", "name": name, "type": 1, "options": options or []},
            "member": {"user": {"id": user, "username": f"u{user}", "discriminator": "0"},
                       "roles": roles or [], "permissions": "0", "joined_at": "2024-01-01T00:00:00+00:00"}}


def component() -> dict[str, Any]:
    return {"id": "4", "application_id": APP, "type": 3, "token": "tok-btn", "version": 1,
            "message": {"id": "9", "content": ""}, "data": {"custom_id": "approve:x", "component_type": 2},
            "member": {"user": {"id": ADMIN}, "roles": []}}


# ----- pure parts -----

def test_signature_of_the_right_key_over_timestamp_and_body() -> None:
    private, public = keypair()
    body = json.dumps(ping()).encode()
    sig, ts = sign(private, body)
    key = load_key(public)
    assert verified(key, sig, ts, body)
    assert not verified(key, sig, ts, body + b" ")  # body changed
    assert not verified(key, sig, str(int(ts) + 1), body)  # timestamp changed
    other, _ = keypair()
    assert not verified(key, sign(other, body, float(ts))[0], ts, body)  # another application's key
    assert not verified(key, "zz" * 64, ts, body)
    assert not verified(key, sig[:-2], ts, body)


def test_replay_guard_refuses_stale_future_and_seen_requests() -> None:
    guard = ReplayGuard(300, capacity=3)
    now = 1_000_000.0
    assert guard.refuse(str(int(now - 301)), "a", now) and "stale" in guard.refuse(str(int(now - 301)), "a", now)
    assert "stale" in (guard.refuse(str(int(now + 400)), "b", now) or "")
    assert guard.refuse("soon", "c", now) == "timestamp is not a number"
    assert guard.refuse(str(int(now)), "d", now) is None
    assert guard.refuse(str(int(now)), "d", now + 1) == "replayed request"
    for sig in ("e", "f", "g"):  # bounded: the oldest goes first
        assert guard.refuse(str(int(now)), sig, now) is None
    assert len(guard._seen) == 3


def test_roles_from_user_and_role_ids_the_highest_wins() -> None:
    users = {VIEWER: Role.viewer, ADMIN: Role.admin}
    roles = {OPS_ROLE: Role.operator}
    assert chat_role(VIEWER, [], users, roles) is Role.viewer
    assert chat_role(VIEWER, [OPS_ROLE], users, roles) is Role.operator
    assert chat_role(ADMIN, [OPS_ROLE], users, roles) is Role.admin
    assert chat_role(STRANGER, ["1"], users, roles) is None
    assert chat_role(None, [], users, roles) is None


def test_the_go_nine_plus_remediate_and_env_are_registered_with_their_roles() -> None:
    names = [c.name for c in COMMANDS]
    assert names == ["status", "nodes", "logs", "resume", "inject", "restart", "kill", "start", "cost",
                     "remediate", "env", "approve", "deny", "approvals"]
    payload = registration_payload()
    assert all(c["type"] == 1 and len(c["description"]) <= 100 for c in payload)
    env = next(c for c in payload if c["name"] == "env")
    assert env["options"][0]["type"] == 1 and env["options"][0]["name"] == "drift"
    assert {c.name for c in COMMANDS if c.role is Role.viewer} == {"status", "nodes", "logs", "cost", "env",
                                                                   "approvals"}
    assert BY_NAME["approve"].role is BY_NAME["deny"].role is Role.operator
    assert BY_NAME["remediate"].role is Role.admin and BY_NAME["kill"].role is Role.operator
    assert flatten_options([{"name": "drift", "type": 1, "options": [{"name": "project", "type": 3,
                                                                       "value": "p"}]}]) == ("drift", {"project": "p"})


def test_error_text_hides_internal_details() -> None:
    assert error_text("NOT_FOUND", "session s1 not found").startswith("The requested resource was not found.")
    assert "disk I/O" not in error_text("INTERNAL_ERROR", "disk I/O error at /var/lib")
    assert error_text("TIMEOUT", "x") == "The command timed out. Please try again."


def test_settings_one_line_errors() -> None:
    _, public = keypair()
    s = parse({"public_key": public.hex(), "users": {VIEWER: "viewer"}, "roles": {OPS_ROLE: "operator"}})
    assert s.public_key == public and s.users == {VIEWER: Role.viewer} and s.roles == {OPS_ROLE: Role.operator}
    for bad, where in (({"public_key": "abc"}, "chatops.discord.public_key"),
                       ({"users": {"bob": "admin"}}, "chatops.discord.users"),
                       ({"users": {VIEWER: "root"}}, f"chatops.discord.users.{VIEWER}"),
                       ({"api_base": "ftp://x"}, "chatops.discord.api_base"),
                       ({"max_skew_sec": 0}, "chatops.discord.max_skew_sec")):
        with pytest.raises(ConfigError) as exc:
            parse(bad)
        text = str(exc.value)
        assert where in text and "\n" not in text, text


# ----- the service, with stand-in ports -----

class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.gate: asyncio.Event | None = None


class FakeSessions:
    def __init__(self, calls: Calls) -> None:
        self.c = calls

    async def page(self, project, status, node_id, req):  # type: ignore[no-untyped-def]
        self.c.calls.append(("page", project))
        return Page([Session("s1", "n1", project or "p", "idle")], None, None), 1

    async def get(self, session_id):  # type: ignore[no-untyped-def]
        if session_id != "s1":
            raise ApiError("NOT_FOUND", f"session {session_id} not found")
        return Session("s1", "n1", "p", "idle", tokens_total=42)

    async def create(self, project, prompt, model, node_id, key, *, actor, ip):  # type: ignore[no-untyped-def]
        self.c.calls.append(("create", (project, actor)))
        if self.c.gate is not None:
            await self.c.gate.wait()
        return {"id": "s2", "node_id": "n1", "status": "running", "command_id": "cmd-1"}

    async def prompt(self, session_id, message, key, *, actor, ip):  # type: ignore[no-untyped-def]
        self.c.calls.append(("prompt", (session_id, message, actor)))
        return {"status": "success", "command_id": "cmd-2"}

    async def act(self, session_id, action, *, actor, ip):  # type: ignore[no-untyped-def]
        self.c.calls.append((action, (session_id, actor)))
        if action == "restart":
            raise ApiError("TIMEOUT", "command timed out after 30s")
        return {"status": "success", "command_id": "cmd-3"}


class FakeNodes:
    async def page(self, status, project, req):  # type: ignore[no-untyped-def]
        return Page([Node("n1", hostname="h1", status="online", last_heartbeat=0.0)], None, None), 1


class Nothing:
    async def page(self, filters, req, order):  # type: ignore[no-untyped-def]
        return Page([{"timestamp": "2026-01-01T00:00:00Z", "type": "session.idle"}], None, None), 1, False

    async def report(self, period):  # type: ignore[no-untyped-def]
        return {"period": period, "total_cost_usd": 1.5, "total_tokens": 10, "by_project": [],
                "degraded_providers": []}, {}

    async def drift(self, node_id, project):  # type: ignore[no-untyped-def]
        return [], {"nodes": []}

    async def request(self, incident, host, *, check, actor):  # type: ignore[no-untyped-def]
        return {"incident": incident, "host": host or "sup", "command": "halctl remediate x", "action": "routed"}


class FakeApprovals:
    def __init__(self, calls: Calls) -> None:
        self.c = calls

    async def page(self, req, *, node_id=None, session_id=None, project=None):  # type: ignore[no-untyped-def]
        row = {"id": "per_A1", "permission": "bash", "command": "rm -rf build", "patterns": ["rm -rf build"],
               "session_id": "s1", "node_id": "n1"}
        return Page([row], None, None), 1, 0.0

    async def reply(self, approval_id, reply, message, *, actor, ip=None):  # type: ignore[no-untyped-def]
        self.c.calls.append(("reply", (approval_id, reply, message, actor)))
        if approval_id == "per_Done":
            raise ApiError("CONFLICT", f"approval {approval_id} was already answered (once by halctl)")
        return {"id": approval_id, "reply": reply, "message": message, "replied_by": actor, "permission": "bash",
                "node_id": "n1", "session_id": "s1", "command_id": "cmd-9"}


class FakeWriter:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def run(self, fn):  # type: ignore[no-untyped-def]
        class Conn:
            def execute(_self, sql: str, args: tuple[Any, ...]) -> None:
                self.rows.append({"actor": args[1], "action": args[2], "target": args[3], "result": args[5]})
        return fn(Conn())


class FakeRest:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def edit_original(self, app: str, token: str, message: dict[str, Any]) -> bool:
        self.sent.append((app, token, message))
        return True

    async def follow_up(self, app: str, token: str, message: dict[str, Any]) -> bool:
        self.sent.append((app, f"followup:{token}", message))
        return True

    async def close(self) -> None:
        pass


def service(public: bytes) -> tuple[DiscordInteractions, Calls, FakeWriter, FakeRest]:
    calls, writer, rest = Calls(), FakeWriter(), FakeRest()
    settings = DiscordSettings(public_key=public, users={VIEWER: Role.viewer, ADMIN: Role.admin},
                               roles={OPS_ROLE: Role.operator})
    nothing = Nothing()
    ports = ChatPorts(FakeSessions(calls), FakeNodes(), nothing, nothing, nothing, nothing, FakeApprovals(calls),
                      lambda: 1)
    return DiscordInteractions(settings, ports, writer, rest), calls, writer, rest  # type: ignore[arg-type]


async def roundtrip(svc: DiscordInteractions, private: Ed25519PrivateKey, doc: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(doc).encode()
    sig, ts = sign(private, body)
    return await svc.answer(svc.admit(body, sig, ts, time.time()))


async def test_ping_is_pong_only_when_signed() -> None:
    private, public = keypair()
    svc, *_ = service(public)
    assert await roundtrip(svc, private, ping()) == {"type": 1}
    body = json.dumps(ping()).encode()
    other, _ = keypair()
    for sig, ts in (sign(other, body), ("", str(int(time.time()))), (sign(private, body)[0], "")):
        with pytest.raises(ApiError) as exc:
            svc.admit(body, sig, ts, time.time())
        assert exc.value.status == 401


async def test_stale_and_replayed_requests_are_401() -> None:
    private, public = keypair()
    svc, *_ = service(public)
    body = json.dumps(ping()).encode()
    sig, ts = sign(private, body, time.time() - 301)
    with pytest.raises(ApiError, match="stale") as exc:
        svc.admit(body, sig, ts, time.time())
    assert exc.value.status == 401
    sig, ts = sign(private, body)
    svc.admit(body, sig, ts, time.time())
    with pytest.raises(ApiError, match="replayed") as exc:
        svc.admit(body, sig, ts, time.time())
    assert exc.value.status == 401


async def test_unconfigured_route_refuses_everything_and_big_bodies_are_413() -> None:
    private, public = keypair()
    unconfigured, *_ = service(public)
    unconfigured.key = None
    body = json.dumps(ping()).encode()
    with pytest.raises(ApiError, match="not configured"):
        unconfigured.admit(body, *sign(private, body), time.time())
    svc, *_ = service(public)
    big = b"{" + b" " * 70_000 + b"}"
    with pytest.raises(ApiError) as exc:
        svc.admit(big, *sign(private, big), time.time())
    assert exc.value.status == 413


async def test_read_command_answers_now_in_the_info_colour_and_is_audited() -> None:
    private, public = keypair()
    svc, _calls, writer, _ = service(public)
    out = await roundtrip(svc, private, command("nodes"))
    assert out["type"] == 4
    e = out["data"]["embeds"][0]
    assert e["title"] == "Agent Nodes" and e["color"] == INFO
    assert "**Connected:** 1" in e["description"] and "`n1` (h1) - online - hb: never" in e["description"]
    assert writer.rows == [{"actor": f"discord:{VIEWER}", "action": "chat_command", "target": "/nodes",
                            "result": "success"}]


async def test_a_user_without_the_role_gets_an_ephemeral_refusal_and_nothing_runs() -> None:
    private, public = keypair()
    svc, calls, writer, rest = service(public)
    for user in (VIEWER, STRANGER):
        out = await roundtrip(svc, private, command("kill", [{"name": "session_id", "type": 3, "value": "s1"}],
                                                    user=user))
        assert out["type"] == 4 and out["data"]["flags"] == 64 and "operator" in out["data"]["content"]
    assert calls.calls == [] and rest.sent == []
    assert [(r["actor"], r["result"]) for r in writer.rows] == [(f"discord:{VIEWER}", "denied"),
                                                               (f"discord:{STRANGER}", "denied")]


async def test_slow_command_is_deferred_then_followed_up_with_the_result() -> None:
    private, public = keypair()
    svc, calls, writer, rest = service(public)
    calls.gate = asyncio.Event()
    out = await roundtrip(svc, private, command("start", [{"name": "project", "type": 3, "value": "p"}],
                                                user="1", roles=[OPS_ROLE], token="tok-start"))
    assert out == {"type": 5}  # answered before the agent did anything
    assert rest.sent == []
    calls.gate.set()
    await asyncio.wait_for(asyncio.gather(*svc._tasks), 5)
    (app, token, message), = rest.sent
    assert (app, token) == (APP, "tok-start")
    e = message["embeds"][0]
    assert e["color"] == SUCCESS and {"name": "Command ID", "value": "cmd-1", "inline": True} in e["fields"]
    assert calls.calls == [("create", ("p", "discord:1"))]
    assert writer.rows[-1]["actor"] == "discord:1" and writer.rows[-1]["result"] == "success"
    await svc.stop()


async def test_failures_take_the_go_colours() -> None:
    private, public = keypair()
    svc, _calls, writer, rest = service(public)
    await roundtrip(svc, private, command("restart", [{"name": "session_id", "type": 3, "value": "s1"}],
                                          user=ADMIN, token="t1"))
    await roundtrip(svc, private, command("logs", [{"name": "session_id", "type": 3, "value": "nope"}],
                                          user=ADMIN, token="t2"))
    await asyncio.wait_for(asyncio.gather(*svc._tasks), 5)
    assert rest.sent[0][2]["embeds"][0]["color"] == TIMEOUT
    assert writer.rows[-1]["result"] == "failure"
    logs = await roundtrip(svc, private, command("logs", [{"name": "session_id", "type": 3, "value": "nope"}],
                                                 user=ADMIN))
    assert logs["data"]["embeds"][0]["color"] == FAILURE
    assert "not found" in logs["data"]["embeds"][0]["description"]


async def test_session_commands_target_the_session_not_the_project() -> None:
    private, public = keypair()
    svc, calls, *_ = service(public)
    await roundtrip(svc, private, command("resume", [{"name": "session_id", "type": 3, "value": "s1"},
                                                     {"name": "message", "type": 3, "value": "go on"}], user=ADMIN))
    await asyncio.wait_for(asyncio.gather(*svc._tasks), 5)
    assert calls.calls == [("resume", ("s1", f"discord:{ADMIN}")), ("prompt", ("s1", "go on", f"discord:{ADMIN}"))]
    status = await roundtrip(svc, private, command("status", [{"name": "project", "type": 3, "value": "p"}]))
    assert "`s1` p on n1 - idle" in status["data"]["embeds"][0]["description"]


async def test_foreign_components_and_unknown_commands_are_refused_ephemerally() -> None:
    private, public = keypair()
    svc, calls, *_ = service(public)
    out = await roundtrip(svc, private, component())
    assert out["data"]["flags"] == 64
    out = await roundtrip(svc, private, command("bogus", user=ADMIN))
    assert out["data"]["flags"] == 64 and "Unknown command" in out["data"]["content"]
    assert calls.calls == []
