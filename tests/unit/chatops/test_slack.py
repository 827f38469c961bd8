"""Slack without a network: the v0 signature (good, bad, stale, replayed, tampered), slash command text
parsed against the command table, Block Kit shapes (escaping, buttons, the decided message), the settings,
and the answers to real payload shapes (a slash command, a block_actions press) with stand-in services.
The real supervisor runs them in tests/integration/test_chatops_slack.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from halswarm.config.errors import ConfigError
from halswarm.core.chatops.commands import BY_NAME
from halswarm.core.chatops.embeds import SUCCESS, embed
from halswarm.core.chatops.text_args import TextError, parse_text, usage
from halswarm.core.roles import Role
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.chat import slack_blocks as blocks
from halswarm.supervisor.features.chat.ports import ChatPorts
from halswarm.supervisor.features.chat.slack_service import MAX_BODY_BYTES, SlackChat
from halswarm.supervisor.features.chat.slack_settings import SlackSettings, parse
from halswarm.supervisor.features.chat.slack_signature import sign, verified

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
HOOK = "https://hooks.slack.com/"
VIEWER, OPERATOR, ADMIN, STRANGER, GROUP_MEMBER = "U0VIEWER", "U0OPERATR", "U0ADMIN1", "U0STRANGE", "U0INGROUP"


def signed(body: bytes, ts: float | None = None, secret: str = SECRET) -> tuple[str, str]:
    stamp = str(int(time.time() if ts is None else ts))
    return sign(secret, stamp, body), stamp


# ----- the signature -----

def test_signature_matches_slacks_documented_example():
    # api.slack.com/authentication/verifying-requests-from-slack: this secret, timestamp and body sign to this
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
            b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
            b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
            b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert sign(SECRET, "1531420618", body) == expected
    assert verified(SECRET, expected, "1531420618", body)
    assert not verified(SECRET, expected, "1531420619", body)  # another timestamp
    assert not verified(SECRET, expected, "1531420618", body + b"x")  # a tampered body
    assert not verified("another-secret-0000000000000000", expected, "1531420618", body)
    assert not verified(SECRET, expected.replace("v0=", "v1="), "1531420618", body)
    assert not verified(SECRET, expected[:-1], "1531420618", body)
    assert not verified(SECRET, expected, "15314x0618", body)


def chat(**over: Any) -> tuple[SlackChat, FakeApprovals, FakeRemediate, FakeWriter, FakeWeb]:
    settings = SlackSettings(signing_secret=SECRET, **({"users": {VIEWER: Role.viewer, OPERATOR: Role.operator,
                                                                  ADMIN: Role.admin},
                                                        "groups": {"S0OPS": Role.operator}} | over))
    approvals, remediate, writer, web = FakeApprovals(), FakeRemediate(), FakeWriter(), FakeWeb()
    # by field name: ports the test does not use are None (so a port added later needs no change here)
    given = {"nodes": FakeNodes(), "remediate": remediate, "approvals": approvals, "connected": lambda: 2}
    ports = ChatPorts(**{f.name: given.get(f.name) for f in dataclasses.fields(ChatPorts)})
    svc = SlackChat(settings, ports, approvals, writer, web)  # type: ignore[arg-type]
    svc.group_members = {"S0OPS": frozenset({GROUP_MEMBER})}
    return svc, approvals, remediate, writer, web


def test_admit_refuses_bad_stale_replayed_tampered_and_oversized_requests():
    svc = chat()[0]
    body = urlencode({"command": "/hal", "text": "nodes", "user_id": VIEWER}).encode()
    sig, ts = signed(body)
    now = time.time()
    assert svc.admit(body, sig, ts, now)["text"] == "nodes"

    def refused(*args: Any) -> str:
        with pytest.raises(ApiError) as err:
            svc.admit(*args)
        return f"{err.value.code}: {err.value.message}"

    assert "replayed" in refused(body, sig, ts, now)  # the same request again
    assert "invalid" in refused(body + b"&x=1", sig, ts, now)  # tampered after signing
    assert "invalid" in refused(body, *signed(body, secret="not-the-secret-000000000000"), now)
    assert "invalid" in refused(body, None, ts, now) and "invalid" in refused(body, sig, None, now)
    old = signed(body, ts=now - 301)
    assert "stale" in refused(body, *old, now)
    future = signed(body, ts=now + 400)
    assert "stale" in refused(body, *future, now)
    big = b"a=" + b"x" * MAX_BODY_BYTES
    assert "exceeds 65536 bytes" in refused(big, *signed(big), now)  # 413
    unconfigured = SlackChat(SlackSettings(), svc.ports, FakeApprovals(), FakeWriter(), FakeWeb())  # type: ignore
    with pytest.raises(ApiError) as err:
        unconfigured.admit(body, sig, ts, now)
    assert err.value.code == "AUTH_REQUIRED" and "not configured" in err.value.message
    bad_form = b"%zz=\xff"
    with pytest.raises(ApiError) as err:
        svc.admit(bad_form, *signed(bad_form), now)
    assert err.value.code == "BAD_REQUEST"


# ----- text -----

def test_text_is_parsed_against_the_command_table():
    cmd, sub, opts = parse_text("inject ses_1 carry on &amp; fix &lt;it&gt;")
    assert (cmd.name, sub, opts) == ("inject", None, {"session_id": "ses_1", "message": "carry on & fix <it>"})
    assert parse_text("logs ses_1 5")[2] == {"session_id": "ses_1", "limit": 5}
    assert parse_text("start alpha node_id=n1 write   the tests")[2] == {
        "project": "alpha", "node_id": "n1", "prompt": "write   the tests"}
    assert parse_text("remediate agent-crashed check")[2] == {"incident": "agent-crashed", "check": True}
    assert parse_text("remediate agent-crashed n1 check=no")[2] == {"incident": "agent-crashed", "host": "n1",
                                                                     "check": False}
    assert parse_text("ENV drift node_id=n2")[:3] == (BY_NAME["env"], "drift", {"node_id": "n2"})
    assert parse_text("cost week")[2] == {"period": "week"}
    assert parse_text("resume ses_9 message=go on then")[2] == {"session_id": "ses_9", "message": "go on then"}
    for bad, why in (("", "Say which"), ("frobnicate", "Unknown command"), ("logs ses_1 many", "whole number"),
                     ("cost year", "one of today"), ("env", "Usage: env drift"), ("nodes extra", "Unexpected"),
                     ("remediate x h check=maybe", "true or false")):
        with pytest.raises(TextError, match=why):
            parse_text(bad)
    assert usage(BY_NAME["logs"]) == "logs <session_id> [limit]"


# ----- blocks -----

def test_blocks_escape_data_and_carry_buttons_only_where_a_decision_is_asked():
    out = blocks.embed_message(embed("Logs of <!channel>", "**Connected:** `a&b`", SUCCESS,
                                     [("Node", "<@U1>", True)]))
    assert out["response_type"] == "in_channel"
    header, text, fields = out["blocks"]
    assert header["text"]["text"] == ":white_check_mark: Logs of <!channel>"  # plain_text: never parsed
    assert text["text"]["text"] == "*Connected:* `a&amp;b`"
    assert fields["fields"][0]["text"] == "*Node*\n&lt;@U1&gt;"
    assert "<!channel>" not in out["text"]
    asked = {"type": "permission.asked", "node_id": "n1", "session_id": "ses_1", "project": "alpha",
             "timestamp": "2026-01-01T00:00:00Z", "data": {"id": "per_abc123", "permission": "bash",
                                                          "patterns": ["rm -rf build"], "metadata": {}}}
    msg = blocks.notification(asked, "C0APPROVE")
    assert msg is not None and msg["channel"] == "C0APPROVE"
    actions = msg["blocks"][-1]
    assert actions["type"] == "actions" and actions["block_id"] == blocks.ACTIONS_BLOCK
    assert [(b["action_id"], b["value"], b.get("style")) for b in actions["elements"]] == [
        ("hal_approve_once", "per_abc123", "primary"), ("hal_approve_always", "per_abc123", None),
        ("hal_approve_reject", "per_abc123", "danger")]
    assert blocks.notification(asked | {"data": {"id": "../../etc"}}, "C0APPROVE") is None
    assert blocks.notification({"type": "session.idle", "data": {}}, "C0APPROVE") is None
    esc = blocks.notification({"type": "remediation.escalated", "data": {"incident": "agent-crashed",
                                                                         "hosts": ["n1"]}}, "C0APPROVE")
    assert esc is not None
    check, run = esc["blocks"][-1]["elements"]
    assert json.loads(check["value"]) == {"incident": "agent-crashed", "host": "n1"}
    assert (check["action_id"], run["action_id"]) == ("hal_remediate_check", "hal_remediate_run") and run["confirm"]
    # a firing alert: its own host, exactly as the Discord buttons take it; several hosts: the default
    fired = blocks.notification({"type": "alert.firing", "node_id": "n2", "data": {
        "incident": "agent-crashed", "host": "n2", "command": "halctl remediate agent-crashed --limit n2"}}, "C0A")
    assert fired is not None
    assert [json.loads(e["value"]) for e in fired["blocks"][-1]["elements"]] == [
        {"incident": "agent-crashed", "host": "n2"}] * 2
    assert blocks.notification({"type": "remediation.escalated", "data": {"incident": "agent-crashed", "hosts": [
        "n1", "n2"]}}, "C0A")["blocks"][-1]["elements"][0]["value"] == '{"incident": "agent-crashed", "host": null}'
    for bad in ({"incident": "agent-crashed", "host": "n1; rm -rf /"}, {"incident": "Bad Id", "host": "n1"},
                {"incident": ["x"], "host": None}, {"host": "n1"}):
        assert blocks.notification({"type": "alert.firing", "data": bad}, "C0A") is None, bad
    after = blocks.decided(msg["blocks"], "Denied by <@U1>", keep_buttons=False)
    assert after[-1] == {"type": "context", "block_id": blocks.OUTCOME_BLOCK,
                         "elements": [{"type": "mrkdwn", "text": "Denied by <@U1>"}]}
    assert not any(b.get("block_id") == blocks.ACTIONS_BLOCK for b in after)
    again = blocks.decided([*after, actions], "second", keep_buttons=True)
    assert [e["text"] for e in again[-2]["elements"]] == ["Denied by <@U1>", "second"]
    assert again[-1]["block_id"] == blocks.ACTIONS_BLOCK


# ----- settings -----

def test_settings_read_secrets_from_files_or_env_and_name_the_bad_key(tmp_path):
    secret_file = tmp_path / "signing"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    token_file = tmp_path / "bot"
    token_file.write_text("xoxb-1-2-abc\n")
    token_file.chmod(0o600)
    s = parse({"signing_secret_file": str(secret_file), "bot_token_file": str(token_file), "channel": "C0APPROVE",
               "users": {"U0ABC": "admin"}, "groups": {"S0OPS": "operator"}}, {})
    assert (s.signing_secret, s.bot_token, s.enabled, s.posts) == (SECRET, "xoxb-1-2-abc", True, True)
    assert s.users == {"U0ABC": Role.admin} and s.groups == {"S0OPS": Role.operator}
    assert SECRET not in repr(s) and "xoxb" not in repr(s)
    env = parse({}, {"HAL_SLACK_SIGNING_SECRET": "from-env-secret-0000000000"})
    assert env.signing_secret == "from-env-secret-0000000000" and not env.posts
    assert parse({}, {}).enabled is False
    for section, key in (({"signing_secret": "inline"}, "chatops.slack.signing_secret"),
                         ({"signing_secret_file": str(tmp_path / "missing")}, "chatops.slack.signing_secret_file"),
                         ({"bot_token_file": str(secret_file)}, "chatops.slack.bot_token_file"),
                         ({"users": {"bob": "admin"}}, "chatops.slack.users"),
                         ({"groups": {"S0OPS": "root"}}, "chatops.slack.groups.S0OPS"),
                         ({"channel": "#general"}, "chatops.slack.channel"),
                         ({"max_skew_sec": 0}, "chatops.slack.max_skew_sec")):
        with pytest.raises(ConfigError) as err:
            parse(section, {})
        assert key in str(err.value), (section, str(err.value))


# ----- commands and presses with stand-in services -----

class FakeApprovals:
    def __init__(self) -> None:
        self.replies: list[tuple[str, str, str]] = []
        self.fail: ApiError | None = None

    async def reply(self, approval_id: str, reply: str, message: str | None, *, actor: str,
                    ip: str | None = None) -> dict[str, Any]:
        if self.fail:
            raise self.fail
        self.replies.append((approval_id, reply, actor))
        return {"id": approval_id, "reply": reply}


class FakeRemediate:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, bool, str]] = []

    async def request(self, incident: str, host: str | None, *, check: bool, actor: str) -> dict[str, Any]:
        self.calls.append((incident, host, check, actor))
        return {"incident": incident, "host": host, "action": "routed", "command": f"halctl remediate {incident}"}


class FakeNodes:
    async def page(self, status, project, req):  # type: ignore[no-untyped-def]
        from halswarm.core.model import Node
        from halswarm.core.paging import Page
        return Page([Node("n1", hostname="h1", status="online", last_heartbeat=0.0)], None, None), 1


class FakeWriter:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def run(self, fn):  # type: ignore[no-untyped-def]
        class Conn:
            def execute(_self, sql: str, args: tuple[Any, ...]) -> None:
                self.rows.append({"actor": args[1], "action": args[2], "target": args[3], "result": args[5]})
        return fn(Conn())


class FakeWeb:
    def __init__(self) -> None:
        self.responded: list[tuple[str, dict[str, Any]]] = []

    def response_url_ok(self, url: object) -> bool:
        return isinstance(url, str) and url.startswith(HOOK)

    async def respond(self, url: str, message: dict[str, Any]) -> bool:
        self.responded.append((url, message))
        return True

    async def call(self, method: str, body: dict[str, Any], *, form: bool = False) -> dict[str, Any] | None:
        return None

    async def close(self) -> None:
        pass


def press(action_id: str, value: str, user: str) -> dict[str, str]:
    payload = {"type": "block_actions", "user": {"id": user, "username": "someone", "team_id": "T0"},
               "api_app_id": "A0", "token": "legacy", "trigger_id": "1.2.3", "team": {"id": "T0", "domain": "t"},
               "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": "C0APPROVE"},
               "channel": {"id": "C0APPROVE", "name": "ops"}, "response_url": HOOK + "actions/T0/1/secret",
               "message": {"type": "message", "ts": "1700000000.000001", "text": "asked",
                           "blocks": [{"type": "section", "block_id": "b1", "text": {"type": "mrkdwn", "text": "x"}},
                                      {"type": "actions", "block_id": blocks.ACTIONS_BLOCK, "elements": []}]},
               "actions": [{"action_id": action_id, "block_id": blocks.ACTIONS_BLOCK, "value": value,
                            "type": "button", "action_ts": "1700000001.1",
                            "text": {"type": "plain_text", "text": "Approve"}}]}
    return {"payload": json.dumps(payload)}


async def settle(svc: SlackChat) -> None:
    while svc._tasks:
        await asyncio.gather(*svc._tasks)


async def test_slash_commands_are_authorized_and_answered_in_slacks_shapes():
    svc, _a, _r, writer, web = chat()
    out = await svc.command({"command": "/hal", "text": "nodes", "user_id": VIEWER})
    assert out["response_type"] == "in_channel" and out["blocks"][0]["text"]["text"].endswith("Agent Nodes")
    out = await svc.command({"command": "/nodes", "text": "", "user_id": VIEWER})  # one Slack command per name
    assert out["blocks"][0]["text"]["text"].endswith("Agent Nodes")
    out = await svc.command({"command": "/hal", "text": "kill ses_1", "user_id": VIEWER})
    assert out["response_type"] == "ephemeral" and "operator" in out["text"]
    out = await svc.command({"command": "/hal", "text": "logs ses_1 lots", "user_id": VIEWER})
    assert out["response_type"] == "ephemeral" and "whole number" in out["text"]
    helped = (await svc.command({"command": "/hal", "text": "help", "user_id": STRANGER}))["text"]
    assert helped.startswith("`status [project]`") and "`logs &lt;session_id&gt; [limit]`" in helped
    out = await svc.command({"command": "/hal", "text": "remediate agent-crashed n1", "user_id": ADMIN,
                             "response_url": HOOK + "commands/T0/1/s"})
    assert out["response_type"] == "in_channel" and "/remediate" in out["text"]
    await settle(svc)
    assert web.responded[-1][1]["blocks"][0]["text"]["text"].endswith("Remediate agent-crashed")
    with pytest.raises(ApiError):  # a deferred command without a response_url under Slack's hooks
        await svc.command({"command": "/hal", "text": "remediate agent-crashed", "user_id": ADMIN,
                           "response_url": "http://169.254.169.254/latest"})
    assert [(r["actor"], r["target"], r["result"]) for r in writer.rows] == [
        (f"slack:{VIEWER}", "/nodes", "success"), (f"slack:{VIEWER}", "/nodes", "success"),
        (f"slack:{VIEWER}", "/kill", "denied"), (f"slack:{ADMIN}", "/remediate", "success")]


async def test_presses_are_authorized_carried_out_and_replace_the_message():
    svc, approvals, remediate, writer, web = chat()
    await svc.interaction(press("hal_approve_once", "per_abc123", VIEWER))  # viewer: refused, ephemeral
    await settle(svc)
    _url, refusal = web.responded[-1]
    assert refusal["response_type"] == "ephemeral" and refusal["replace_original"] is False
    assert "operator" in refusal["text"] and approvals.replies == []
    await svc.interaction(press("hal_approve_always", "per_abc123", GROUP_MEMBER))  # operator through a group
    await settle(svc)
    assert approvals.replies == [("per_abc123", "always", f"slack:{GROUP_MEMBER}")]
    done = web.responded[-1][1]
    assert done["replace_original"] is True
    assert not any(b.get("block_id") == blocks.ACTIONS_BLOCK for b in done["blocks"])
    assert "Approved (always)" in done["blocks"][-1]["elements"][-1]["text"]
    assert f"<@{GROUP_MEMBER}>" in done["blocks"][-1]["elements"][-1]["text"]
    approvals.fail = ApiError("CONFLICT", "approval per_abc123 was already answered")
    await svc.interaction(press("hal_approve_reject", "per_abc123", OPERATOR))
    await settle(svc)
    assert "already answered" in web.responded[-1][1]["blocks"][-1]["elements"][-1]["text"]
    # remediation: admin only; a check keeps the buttons
    value = json.dumps({"incident": "agent-crashed", "host": "n1"})
    await svc.interaction(press("hal_remediate_run", value, OPERATOR))
    await svc.interaction(press("hal_remediate_check", value, ADMIN))
    await settle(svc)
    assert remediate.calls == [("agent-crashed", "n1", True, f"slack:{ADMIN}")]
    assert web.responded[-1][1]["blocks"][-1]["block_id"] == blocks.ACTIONS_BLOCK
    for bad in (press("hal_approve_maybe", "per_abc123", ADMIN), press("hal_approve_once", "../x", ADMIN),
                press("hal_remediate_run", "{not json", ADMIN), {"payload": "not json"}):
        with pytest.raises(ApiError):
            await svc.interaction(bad)
    assert [(r["target"], r["result"]) for r in writer.rows] == [
        ("approve:per_abc123", "denied"), ("approve:per_abc123", "success"), ("approve:per_abc123", "failure"),
        ("remediate:agent-crashed", "denied"), ("remediate:agent-crashed", "success")]
    assert all(r["action"] == "chat_action" for r in writer.rows)


async def test_the_event_feed_consumer_never_waits_and_bounds_its_queue():
    notifier = chat(bot_token="xoxb-1-2-x", channel="C0APPROVE")[0].notifier
    asked = {"type": "permission.asked", "data": {"id": "per_abc123"}}
    notifier.on_event({"type": "session.idle", "data": {}})  # nothing to post
    notifier.on_event({"type": "approval.replied", "data": {"id": "../x"}})  # not a request id
    assert notifier._queue.qsize() == 0
    for _ in range(notifier._queue.maxsize + 5):
        notifier.on_event(asked)
    assert notifier._queue.qsize() == notifier._queue.maxsize and notifier.dropped == 5
    notifier._queue.get_nowait()
    notifier.on_event({"type": "approval.replied", "data": {"id": "per_abc123"}})
    assert notifier.dropped == 5


def test_a_secret_file_others_can_read_is_used_with_a_warning(tmp_path, caplog):
    loose = tmp_path / "signing"
    loose.write_text(SECRET)
    loose.chmod(0o644)
    with caplog.at_level("WARNING"):
        assert parse({"signing_secret_file": str(loose)}, {}).signing_secret == SECRET
    assert "chatops.slack.signing_secret_file" in caplog.text and "chmod 600" in caplog.text
    assert SECRET not in caplog.text
