"""Buttons on Discord notifications against the real supervisor (issue 20): permission requests of a
protocol-speaking agent are posted by the bot (the loopback fake of Discord's REST API) with Approve /
Always / Deny; signed component interactions press them; the message is edited with who decided, also
when the answer came from the API or from the timeout policy. Alerts carry Run check / Run. A slow
Discord holds nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.fakes.discord_api import FakeDiscord, component_problem, running_fake_discord
from tests.integration.test_approvals import NODE, Node, api
from tests.support.discord_interactions import ROUTE, command_doc, component_doc, opt
from tests.support.discord_interactions import public_hex as _public_hex
from tests.support.discord_interactions import signed as _signed
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)

CHANNEL, GUILD = "60000000000000006", "70000000000000007"
VIEWER_ID, OPERATOR_ID, ADMIN_ID = "20000000000000001", "20000000000000002", "20000000000000009"
CONSOLE = "https://hal.example.com"


@pytest.fixture
def fake_discord() -> Iterator[FakeDiscord]:
    with running_fake_discord() as fake:
        yield fake


@pytest.fixture
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def config(fake: FakeDiscord, signer: Ed25519PrivateKey, **extra: Any) -> dict[str, Any]:
    return {"chatops": {"discord": {"public_key": _public_hex(signer), "api_base": fake.api_base,
                                    "users": {VIEWER_ID: "viewer", OPERATOR_ID: "operator", ADMIN_ID: "admin"}}},
            "channels": {"discord": {"bot_token": fake.bot_token, "api_base": fake.api_base, "guild_id": GUILD,
                                     "console_url": CONSOLE, "channels": {"ops": CHANNEL}}},
            "routes": [{"match": "permission.asked", "target": "discord#ops"},
                       {"match": "alert.firing", "target": "discord#ops"}],
            "routing": {"backoff_base_ms": 50, "timeout_seconds": 30}} | extra


def press_doc(fake: FakeDiscord, message: dict[str, Any], custom_id: str, user: str, token: str) -> dict[str, Any]:
    """A component interaction as Discord sends it: the message the button is on, the button's custom_id."""
    fake.press(message["id"], token)
    return component_doc(fake.application_id, message, custom_id, user, token, guild=GUILD)


def message_of(fake: FakeDiscord, approval_id: str) -> dict[str, Any] | None:
    """The bot's permission.asked message of the request."""
    for m in fake.channel_messages(CHANNEL):
        if m["embeds"][0]["title"].startswith("permission.asked") and approval_id in json.dumps(m["embeds"]):
            return m
    return None


def outcome(m: dict[str, Any] | None) -> str | None:
    if not m or m.get("components"):
        return None
    return next((f["value"] for f in m["embeds"][0].get("fields", []) if f["name"] == "Outcome"), None)


async def test_approve_from_a_button_and_answers_from_elsewhere_edit_the_message(make_supervisor, fake_discord,
                                                                                 signer):
    sup: SupervisorProc = make_supervisor(**config(fake_discord, signer)).start()
    node = Node(sup)
    await node.connect()
    try:
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            async def post(doc: dict[str, Any]) -> httpx.Response:
                body, headers = _signed(signer, doc)
                return await c.post(ROUTE, content=body, headers=headers)

            await node.ask("per_btn1", "ses_a", "echo hi")
            posted = await until(lambda: message_of(fake_discord, "per_btn1"), "the request posted by the bot", 30)
            [row] = posted["components"]
            assert component_problem(posted["components"]) is None
            assert [(b["label"], b.get("custom_id") or b.get("url")) for b in row["components"]] == [
                ("Approve", "hal:approve:once:per_btn1"), ("Always", "hal:approve:always:per_btn1"),
                ("Deny", "hal:deny:per_btn1"), ("Session", f"{CONSOLE}/ui/sessions/ses_a")]
            post_call = next(x for x in fake_discord.calls if x.path.endswith(f"/channels/{CHANNEL}/messages"))
            assert post_call.headers["authorization"] == f"Bot {fake_discord.bot_token}"

            # a viewer's press: refused where only they see it; nothing reaches the agent
            r = await post(press_doc(fake_discord, posted, "hal:approve:once:per_btn1", VIEWER_ID, "tok-view"))
            assert r.json()["type"] == 4 and r.json()["data"]["flags"] == 64, r.json()
            assert "operator" in r.json()["data"]["content"] and node.replies == []
            # another guild's press: refused (channels.discord.guild_id)
            other = press_doc(fake_discord, posted, "hal:approve:once:per_btn1", OPERATOR_ID, "tok-guild")
            r = await post(other | {"guild_id": "70000000000000008"})
            assert r.json()["data"]["flags"] == 64 and node.replies == []

            # the operator approves: acknowledged at once, the agent gets the reply, the message says who
            doc = press_doc(fake_discord, posted, "hal:approve:once:per_btn1", OPERATOR_ID, "tok-approve")
            body, headers = _signed(signer, doc)
            r = await c.post(ROUTE, content=body, headers=headers)
            assert r.json() == {"type": 6}
            text = await until(lambda: outcome(message_of(fake_discord, "per_btn1")), "the message edited", 30)
            assert text == f"Approved by <@{OPERATOR_ID}>"
            [cmd] = node.replies
            assert (cmd.args["permission_id"], cmd.args["reply"]) == ("per_btn1", "once")
            r = await c.post(ROUTE, content=body, headers=headers)  # the same press replayed
            assert r.status_code == 401 and "replayed" in r.json()["error"]

            # a late second press (someone still had the buttons): told privately, nothing sent
            r = await post(press_doc(fake_discord, posted, "hal:deny:per_btn1", ADMIN_ID, "tok-late"))
            assert r.json() == {"type": 6}
            late = await asyncio.to_thread(fake_discord.wait_followup, "tok-late")
            assert late["flags"] == 64 and "already answered" in late["embeds"][0]["description"]
            assert len(node.replies) == 1

            # answered through the API: the posted message is edited all the same
            await node.ask("per_btn2", "ses_b", "rm -rf build")
            await until(lambda: message_of(fake_discord, "per_btn2"), "the second request posted", 30)
            listed = await post(command_doc(fake_discord.application_id, "approvals", [], VIEWER_ID, "tok-list",
                                            guild=GUILD))
            assert "`per_btn2` bash `rm -rf build`" in listed.json()["data"]["embeds"][0]["description"]
            r = await api(sup, "POST", "/approvals/per_btn2", body={"reply": "reject", "message": "not today"})
            assert r.status_code == 200, r.text
            text = await until(lambda: outcome(message_of(fake_discord, "per_btn2")), "the API answer shown", 30)
            assert text.startswith("Denied by ") and text.endswith(": not today"), text

            admin = {"Authorization": f"Bearer {sup.token}"}
            audit = (await c.get("/api/v1/audit", params={"actor": f"discord:{OPERATOR_ID}"},
                                 headers=admin)).json()["data"]
            assert {(a["action"], a["result"]) for a in audit} >= {("chat_command", "success"),
                                                                   ("permission_reply", "success")}, audit
            viewer = (await c.get("/api/v1/audit", params={"actor": f"discord:{VIEWER_ID}"},
                                  headers=admin)).json()["data"]
            assert any(a["target"] == "/approve" and a["result"] == "denied" for a in viewer), viewer
    finally:
        await node.agent.close()


async def test_alert_buttons_run_the_remediation_check(make_supervisor, fake_discord, signer):
    sup: SupervisorProc = make_supervisor(**config(fake_discord, signer)).start()
    node = Node(sup)
    await node.connect()
    try:
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            # an alert fires (here from /remediate: agent-crashed is not in remediation.auto, so it is routed
            # as alert.firing, the path of an Alertmanager alert) and is posted with buttons
            body, headers = _signed(signer, command_doc(
                fake_discord.application_id, "remediate", [opt("incident", "agent-crashed"), opt("host", NODE)],
                ADMIN_ID, "tok-rem", guild=GUILD))
            assert (await c.post(ROUTE, content=body, headers=headers)).json() == {"type": 5}

            def alert_message() -> dict[str, Any] | None:
                return next((m for m in fake_discord.channel_messages(CHANNEL) if m.get("components")), None)

            posted = await until(alert_message, "the alert posted with buttons", 30)
            ids = [b["custom_id"] for b in posted["components"][0]["components"]]
            assert ids == [f"hal:rem:check:agent-crashed:{NODE}", f"hal:rem:run:agent-crashed:{NODE}"], ids
            # an operator may not run remediations (admin only)
            body, headers = _signed(signer, press_doc(fake_discord, posted, ids[0], OPERATOR_ID, "tok-op"))
            assert (await c.post(ROUTE, content=body, headers=headers)).json()["data"]["flags"] == 64
            body, headers = _signed(signer, press_doc(fake_discord, posted, ids[0], ADMIN_ID, "tok-check"))
            assert (await c.post(ROUTE, content=body, headers=headers)).json() == {"type": 6}
            def check_outcome() -> str | None:  # a check changes nothing: its buttons stay
                m = fake_discord.messages.get(posted["id"]) or {}
                return next((f["value"] for f in m["embeds"][0].get("fields", []) if f["name"] == "Outcome"), None)

            text = await until(check_outcome, "the alert edited", 30)
            assert text.startswith("Remediate agent-crashed: Routed") and text.endswith(f"(by <@{ADMIN_ID}>)")
            assert fake_discord.messages[posted["id"]]["components"] == posted["components"]
            fired = (await api(sup, "GET", "/events?type=alert.firing")).json()["data"]
            assert any(e["data"]["receiver"] == f"discord:{ADMIN_ID}" and e["data"]["command"].endswith("--check")
                       for e in fired), fired
    finally:
        await node.agent.close()


async def test_an_unanswered_request_is_rejected_and_the_message_says_so(make_supervisor, fake_discord, signer):
    """The timeout policy's rejection edits the posted request; a route of approval.replied to the same
    channel still posts its own message (the edit is not a routed notification)."""
    cfg = config(fake_discord, signer, approvals={"timeout_minutes": 0.02})
    cfg["routes"].append({"match": "approval.replied", "target": "discord#ops"})
    sup: SupervisorProc = make_supervisor(**cfg).start()
    node = Node(sup)
    await node.connect()
    try:
        await node.ask("per_late1", "ses_a")
        text = await until(lambda: outcome(message_of(fake_discord, "per_late1")), "the timeout shown", 40)
        assert text == "Denied by approvals-policy: no answer within 0.02 minutes (approvals.timeout_minutes)"
        [cmd] = node.replies
        assert cmd.args["reply"] == "reject"
        routed = await until(lambda: [m for m in fake_discord.channel_messages(CHANNEL)
                                      if m["embeds"][0]["title"].startswith("approval.replied")],
                             "approval.replied routed as its own message", 30)
        assert len(routed) == 1 and not routed[0].get("components")
    finally:
        await node.agent.close()


async def test_a_hanging_discord_blocks_neither_ingest_nor_interactions(make_supervisor, fake_discord, signer):
    sup: SupervisorProc = make_supervisor(**config(fake_discord, signer)).start()
    node = Node(sup)
    await node.connect()
    fake_discord.hang = True
    try:
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            await node.ask("per_slow1", "ses_a")  # acked: the post to Discord is not on the ingest path
            await until(lambda: [x for x in fake_discord.calls if x.path.endswith("/messages")],
                        "the post held at Discord", 30)
            for _ in range(20):
                await node.send("session.status", "ses_a", {"status": "waiting_input"})
            body, headers = _signed(signer, {"id": "9", "application_id": fake_discord.application_id, "type": 1,
                                             "token": "p", "version": 1})
            assert (await c.post(ROUTE, content=body, headers=headers)).json() == {"type": 1}
            assert (await api(sup, "GET", "/approvals")).json()["data"][0]["id"] == "per_slow1"
            assert message_of(fake_discord, "per_slow1") is None
        fake_discord.release.set()
        posted = await until(lambda: message_of(fake_discord, "per_slow1"), "the post once Discord answers", 30)
        assert posted["components"]
    finally:
        await node.agent.close()


async def test_an_escalated_request_carries_buttons_and_both_messages_say_who_answered(make_supervisor,
                                                                                       fake_discord, signer):
    cfg = config(fake_discord, signer, approvals={"timeout_minutes": 0.02, "on_timeout": "escalate"})
    cfg["routes"].append({"match": "approval.escalated", "target": "discord#ops"})
    sup: SupervisorProc = make_supervisor(**cfg).start()
    node = Node(sup)
    await node.connect()
    try:
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            await node.ask("per_esc1", "ses_a")

            def escalation() -> dict[str, Any] | None:
                return next((m for m in fake_discord.channel_messages(CHANNEL)
                             if m["embeds"][0]["title"].startswith("approval.escalated")), None)

            posted = await until(escalation, "the escalation posted with buttons", 40)
            ids = [b.get("custom_id") for b in posted["components"][0]["components"]]
            assert ids[:3] == ["hal:approve:once:per_esc1", "hal:approve:always:per_esc1", "hal:deny:per_esc1"]
            assert node.replies == []  # escalated, not answered
            body, headers = _signed(signer, press_doc(fake_discord, posted, ids[0], OPERATOR_ID, "tok-esc"))
            assert (await c.post(ROUTE, content=body, headers=headers)).json() == {"type": 6}
            expected = f"Approved by <@{OPERATOR_ID}>"
            for what in ("per_esc1", posted["id"]):  # the request's message (the router) and the escalation's
                def shown(what: str = what) -> str | None:
                    return outcome(message_of(fake_discord, what) if what.startswith("per_")
                                   else fake_discord.messages.get(what))
                assert await until(shown, f"the outcome on {what}", 30) == expected
            [cmd] = node.replies
            assert cmd.args["reply"] == "once"
    finally:
        await node.agent.close()
