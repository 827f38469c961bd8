"""Buttons on Discord notifications (issue 20): the custom_id grammar (a press is chat data: parsed strictly),
the shapes of the components and of the edited message, which notifications carry which buttons, and the
service's handling of a component interaction with stand-in services (the real supervisor runs it in
tests/integration/test_chatops_discord_buttons.py)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from halswarm.config.errors import ConfigError
from halswarm.core.chatops.components import (
    CUSTOM_ID_MAX,
    Press,
    decided,
    parse_custom_id,
    permission_buttons,
    remediation_buttons,
    reply_line,
)
from halswarm.core.chatops.embeds import FAILURE, SUCCESS
from halswarm.supervisor.features.chat.settings import DiscordSettings
from halswarm.supervisor.notify.channels import resolve
from halswarm.supervisor.notify.delivery import MAX_TRACKED, DeliveryService, DeliverySettings
from halswarm.supervisor.notify.formats import Notification, discord_decided, discord_payload
from tests.fakes.discord_api import component_problem
from tests.unit.chatops.test_discord_interactions import (
    ADMIN,
    APP,
    OPERATOR,
    OPS_ROLE,
    VIEWER,
    command,
    keypair,
    service,
    sign,
)

# ----- custom_id grammar -----


@pytest.mark.parametrize(("custom_id", "press"), [
    ("hal:approve:once:per_Abc123", Press("approve", {"approval_id": "per_Abc123", "always": False})),
    ("hal:approve:always:per_Abc123", Press("approve", {"approval_id": "per_Abc123", "always": True})),
    ("hal:deny:per_Z9", Press("deny", {"approval_id": "per_Z9"})),
    ("hal:rem:check:agent-crashed:node-1", Press("remediate", {"incident": "agent-crashed", "check": True,
                                                               "host": "node-1"})),
    ("hal:rem:run:supervisor-crashed:", Press("remediate", {"incident": "supervisor-crashed", "check": False})),
])
def test_the_buttons_we_make_parse_back(custom_id: str, press: Press) -> None:
    assert parse_custom_id(custom_id) == press


@pytest.mark.parametrize("custom_id", [
    None, 42, "", "approve:x", "hal:", "hal:approve:once", "hal:approve:sometimes:per_A", "hal:approve:once:per_",
    "hal:approve:once:per_A:extra", "hal:approve:once:ses_A", "hal:approve:once:per_A;rm -rf /",
    "hal:deny:per_A/../b", "hal:rem:run:Agent-Crashed:n1", "hal:rem:run:agent-crashed:-n1",
    "hal:rem:run:agent-crashed:n1 --extra-vars x", "hal:rem:delete:agent-crashed:n1", "hal:rem:run:agent-crashed",
    "hal:approve:once:per_" + "A" * 65, "hal:approve:once:per_A" + " " * CUSTOM_ID_MAX,
])
def test_anything_else_is_refused(custom_id: Any) -> None:
    assert parse_custom_id(custom_id) is None


def test_permission_buttons_shape_and_session_link() -> None:
    [row] = permission_buttons("per_Abc", "ses_1", "https://hal.example.com")
    assert component_problem([row]) is None  # what Discord accepts
    assert [(b["label"], b["style"], b.get("custom_id"), b.get("url")) for b in row["components"]] == [
        ("Approve", 3, "hal:approve:once:per_Abc", None), ("Always", 1, "hal:approve:always:per_Abc", None),
        ("Deny", 4, "hal:deny:per_Abc", None), ("Session", 5, None, "https://hal.example.com/ui/sessions/ses_1")]
    assert all(parse_custom_id(b["custom_id"]) for b in row["components"] if "custom_id" in b)
    [row] = permission_buttons("per_Abc", "ses_1", None)
    assert len(row["components"]) == 3  # no console URL: no link
    [row] = permission_buttons("per_Abc", "../../etc", "https://hal.example.com")
    assert len(row["components"]) == 3  # a session id that is not one: no link
    assert permission_buttons("not-an-id", "ses_1", None) == []


def test_remediation_buttons_only_for_well_formed_incidents() -> None:
    [row] = remediation_buttons("agent-crashed", "node-1")
    assert component_problem([row]) is None
    assert [parse_custom_id(b["custom_id"]) for b in row["components"]] == [
        Press("remediate", {"incident": "agent-crashed", "check": True, "host": "node-1"}),
        Press("remediate", {"incident": "agent-crashed", "check": False, "host": "node-1"})]
    [row] = remediation_buttons("agent-crashed", None)
    assert row["components"][0]["custom_id"] == "hal:rem:check:agent-crashed:"  # the incident's default host
    assert remediation_buttons("Bad Incident", "n1") == [] and remediation_buttons(None, "n1") == []
    # a host that cannot be named exactly gets no buttons (never a press acting on another host)
    assert remediation_buttons("agent-crashed", "bad host") == []
    assert remediation_buttons("agent-crashed", "h" * 90) == []


def test_decided_keeps_the_embed_adds_the_outcome_and_drops_the_buttons() -> None:
    posted = {"embeds": [{"title": "permission.asked · alpha", "color": 0xFF9900,
                          "fields": [{"name": "Node", "value": "n1", "inline": True}]}],
              "components": permission_buttons("per_A", "s1", None)}
    out = decided(posted, reply_line("once", f"discord:{OPERATOR}"), SUCCESS)
    assert out["components"] == [] and out["allowed_mentions"] == {"parse": []}
    e = out["embeds"][0]
    assert e["title"] == "permission.asked · alpha" and e["color"] == SUCCESS
    assert e["fields"] == [{"name": "Node", "value": "n1", "inline": True},
                           {"name": "Outcome", "value": f"Approved by <@{OPERATOR}>", "inline": False}]
    again = decided(out, reply_line("reject", "approvals-policy", "no answer within 1 minutes"), FAILURE)
    assert [f["value"] for f in again["embeds"][0]["fields"] if f["name"] == "Outcome"] == [
        "Denied by approvals-policy: no answer within 1 minutes"]  # replaced, not appended
    assert posted["embeds"][0]["fields"][-1]["name"] == "Node"  # the input is not changed
    assert decided(None, "x", SUCCESS)["embeds"][0]["title"] == "Decision"


# ----- which notifications carry buttons -----

def _asked() -> Notification:
    return Notification({"id": 7, "type": "permission.asked", "node_id": "n1", "session_id": "ses_1",
                         "project": "alpha", "timestamp": "2026-01-01T00:00:00Z",
                         "data": {"id": "per_Q1", "permission": "bash", "patterns": ["echo hi"]}}, "permission.*")


def test_bot_messages_carry_buttons_webhooks_only_the_link() -> None:
    bot = discord_payload(_asked(), webhook=False, console_url="https://hal.example.com")
    assert component_problem(bot["components"]) is None
    assert [b["label"] for b in bot["components"][0]["components"]] == ["Approve", "Always", "Deny", "Session"]
    assert bot["embeds"][0]["url"] == "https://hal.example.com/ui/sessions/ses_1" and "username" not in bot
    hook = discord_payload(_asked(), console_url="https://hal.example.com")
    assert "components" not in hook and hook["embeds"][0]["url"].endswith("/ui/sessions/ses_1")
    assert "url" not in discord_payload(_asked())["embeds"][0]

    alert = Notification({"type": "alert.firing", "node_id": "n1",
                          "data": {"incident": "agent-crashed", "host": "n1"}}, "alert.*")
    labels = [b["label"] for b in discord_payload(alert, webhook=False)["components"][0]["components"]]
    assert labels == ["Run check", "Run"]
    esc = Notification({"type": "remediation.escalated", "data": {"incident": "supervisor-crashed",
                                                                  "hosts": ["a", "b"]}}, "remediation.*")
    [row] = discord_payload(esc, webhook=False)["components"]
    assert row["components"][1]["custom_id"] == "hal:rem:run:supervisor-crashed:"  # several hosts: the default
    plain = Notification({"type": "session.completed", "data": {}}, "*")
    assert "components" not in discord_payload(plain, webhook=False)


def test_an_answer_edits_the_posted_request() -> None:
    posted = discord_payload(_asked(), webhook=False)
    replied = Notification({"type": "approval.replied", "data": {"id": "per_Q1", "reply": "reject",
                                                                 "actor": "approvals-policy",
                                                                 "message": "no answer within 2 minutes"}},
                           "approval.replied")
    out = discord_decided(posted, replied)
    assert out["components"] == [] and out["embeds"][0]["color"] == 0xCC3333
    assert out["embeds"][0]["fields"][-1]["value"] == "Denied by approvals-policy: no answer within 2 minutes"


def test_console_url_and_bot_channel_resolution() -> None:
    cfg = {"discord": {"bot_token": "T", "console_url": "https://hal.example.com/", "channels": {"ops": "123"},
                       "api_base": "http://127.0.0.1:9/api/v10"}}
    ch = resolve("discord#ops", cfg)
    assert (ch.kind, ch.url, ch.console_url) == ("discord_bot", "http://127.0.0.1:9/api/v10/channels/123/messages",
                                                "https://hal.example.com")
    assert resolve("discord#ops", {"discord": cfg["discord"] | {"console_url": "javascript:x"}}).console_url is None


class _Config:
    """The one method DiscordSettings.from_config reads of the supervisor's config."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def section(self, name: str) -> Any:
        return self.raw.get(name)


def test_guild_id_is_used_only_with_interactions_configured() -> None:
    _, public = keypair()
    on = {"chatops": {"discord": {"public_key": public.hex()}}}
    assert DiscordSettings.from_config(_Config({**on, "channels": {"discord": {"guild_id": "777"}}})
                                       ).guild_id == "777"
    # the Go example's placeholder is harmless while chat interactions are off; refused once they are on
    go = {"channels": {"discord": {"guild_id": "your-guild-id"}}}
    assert DiscordSettings.from_config(_Config(go)).guild_id is None
    with pytest.raises(ConfigError, match=r"channels\.discord\.guild_id"):
        DiscordSettings.from_config(_Config({**on, **go}))


# ----- the service with a component interaction -----

def press(custom_id: str, user: str, token: str, roles: list[str] | None = None,
          guild: str = "777") -> dict[str, Any]:
    return {"id": "5", "application_id": APP, "type": 3, "token": token, "version": 1, "guild_id": guild,
            "channel_id": "888",
            "message": {"id": "901", "channel_id": "888", "embeds": [{"title": "permission.asked · p", "color": 1}],
                        "components": permission_buttons("per_A1", "s1", None)},
            "data": {"custom_id": custom_id, "component_type": 2},
            "member": {"user": {"id": user}, "roles": roles or []}}


async def _answer(svc: Any, private: Any, doc: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(doc).encode()
    return await svc.answer(svc.admit(body, *sign(private, body), time.time()))  # type: ignore[no-any-return]


async def test_a_press_by_an_operator_answers_and_edits_the_message() -> None:
    private, public = keypair()
    svc, calls, writer, rest = service(public)
    out = await _answer(svc, private, press("hal:approve:always:per_A1", "1", "tok-a", roles=[OPS_ROLE]))
    assert out == {"type": 6}  # acknowledged at once; the message is edited when the agent has answered
    await asyncio.wait_for(asyncio.gather(*svc._tasks), 5)
    assert calls.calls == [("reply", ("per_A1", "always", None, "discord:1"))]
    [(app, token, message)] = rest.sent
    assert (app, token) == (APP, "tok-a") and message["components"] == []
    assert message["embeds"][0]["fields"][-1]["value"] == "Approved (always) by <@1>"
    assert message["embeds"][0]["color"] == SUCCESS
    assert (writer.rows[-1]["actor"], writer.rows[-1]["target"], writer.rows[-1]["result"]) == (
        "discord:1", "/approve", "success")


async def test_a_press_without_the_role_is_refused_ephemerally_and_nothing_runs() -> None:
    private, public = keypair()
    svc, calls, writer, rest = service(public)
    for user, custom_id in ((VIEWER, "hal:deny:per_A1"), ("999", "hal:approve:once:per_A1"),
                            (VIEWER, "hal:rem:run:agent-crashed:n1")):
        out = await _answer(svc, private, press(custom_id, user, f"tok-{user}-{custom_id}"))
        assert out["type"] == 4 and out["data"]["flags"] == 64 and "not allowed" in out["data"]["content"]
    assert calls.calls == [] and rest.sent == []
    assert [r["result"] for r in writer.rows] == ["denied"] * 3


async def test_a_failed_press_tells_only_the_presser_and_keeps_the_buttons() -> None:
    private, public = keypair()
    svc, _calls, writer, rest = service(public)
    out = await _answer(svc, private, press("hal:deny:per_Done", ADMIN, "tok-late"))
    assert out == {"type": 6}
    await asyncio.wait_for(asyncio.gather(*svc._tasks), 5)
    [(_app, token, message)] = rest.sent
    assert token == "followup:tok-late" and message["flags"] == 64
    assert "already answered" in message["embeds"][0]["description"]
    assert writer.rows[-1]["result"] == "failure"


async def test_a_remediation_press_runs_as_remediate_and_says_who() -> None:
    private, public = keypair()
    svc, _calls, writer, rest = service(public)
    assert await _answer(svc, private, press("hal:rem:check:agent-crashed:n1", ADMIN, "tok-r")) == {"type": 6}
    await asyncio.wait_for(asyncio.gather(*svc._tasks), 5)
    [(_app, _token, message)] = rest.sent
    assert message["embeds"][0]["fields"][-1]["value"].endswith(f"(by <@{ADMIN}>)")
    assert writer.rows[-1]["target"] == "/remediate"


async def test_another_guild_and_a_forged_button_are_refused() -> None:
    private, public = keypair()
    svc, calls, _writer, rest = service(public)
    svc.settings = DiscordSettings(public_key=public, users=svc.settings.users, roles=svc.settings.roles,
                                   guild_id="777")
    out = await _answer(svc, private, press("hal:approve:once:per_A1", ADMIN, "tok-g", guild="778"))
    assert out["data"]["flags"] == 64 and "own Discord server" in out["data"]["content"]
    out = await _answer(svc, private, press("hal:approve:once:per_A1;x", ADMIN, "tok-f"))
    assert out["data"]["flags"] == 64 and "nothing was done" in out["data"]["content"]
    assert calls.calls == [] and rest.sent == []


async def test_slash_approve_deny_and_approvals() -> None:
    private, public = keypair()
    svc, calls, _writer, rest = service(public)
    listed = await _answer(svc, private, command("approvals", user=VIEWER))
    assert "`per_A1` bash `rm -rf build` - session `s1` on n1" in listed["data"]["embeds"][0]["description"]
    out = await _answer(svc, private, command("approve", [{"name": "approval_id", "type": 3, "value": "per_A1"},
                                                          {"name": "always", "type": 5, "value": True}],
                                              user=ADMIN, token="t-ap"))
    assert out == {"type": 5}
    await _answer(svc, private, command("deny", [{"name": "approval_id", "type": 3, "value": "per_A1"},
                                                 {"name": "message", "type": 3, "value": "not here"}],
                                        user=ADMIN, token="t-dn"))
    bad = await _answer(svc, private, command("deny", [{"name": "approval_id", "type": 3, "value": "ses_1"}],
                                              user=ADMIN, token="t-bad"))
    assert bad == {"type": 5}
    await asyncio.wait_for(asyncio.gather(*svc._tasks), 5)
    assert calls.calls == [("reply", ("per_A1", "always", None, f"discord:{ADMIN}")),
                           ("reply", ("per_A1", "reject", "not here", f"discord:{ADMIN}"))]
    by_token = {t: m["embeds"][0] for _a, t, m in rest.sent}
    assert by_token["t-ap"]["color"] == SUCCESS and by_token["t-dn"]["color"] == FAILURE
    assert "Denied by" in by_token["t-dn"]["description"] and "not here" in by_token["t-dn"]["description"]
    assert "approval_id must be a request id" in by_token["t-bad"]["description"]


def test_the_delivery_remembers_a_bounded_number_of_posted_requests_to_edit() -> None:
    """No network: what is queued, not what is sent (the process tests send it to the fake Discord)."""

    delivery = DeliveryService(DeliverySettings(queue_size=5000))
    bot = resolve("discord#ops", {"discord": {"bot_token": "T", "channels": {"ops": "123"}}})
    hook = resolve("discord#hook", {"discord": {"channels": {"hook": "https://discord.test/api/webhooks/1/x"}}})
    for ch in (bot, hook):
        delivery.add_channel(ch)
    for i in range(MAX_TRACKED + 1):
        ev = {"type": "permission.asked", "session_id": "s", "data": {"id": f"per_R{i}"}}
        delivery.submit(bot.target, Notification(ev, "permission.*"))
        delivery.submit(hook.target, Notification(ev, "permission.*"))
    box, webhook_box = delivery._boxes[bot.target], delivery._boxes[hook.target]
    assert len(box.asked) == MAX_TRACKED and ("per_R0", "permission.asked") not in box.asked
    assert webhook_box.asked == {}  # a webhook message has no buttons and is never edited
    delivery.on_replied({"type": "approval.replied", "data": {"id": "per_R0", "reply": "once"}})  # forgotten
    delivery.on_replied({"type": "approval.replied", "data": {"id": ["not", "an", "id"]}})
    assert len(box.items) == MAX_TRACKED + 1
    delivery.on_replied({"type": "approval.replied", "data": {"id": f"per_R{MAX_TRACKED}", "reply": "once"}})
    edit = box.items[-1]
    assert edit.edit and edit.route == "permission.asked" and len(webhook_box.items) == MAX_TRACKED + 1
