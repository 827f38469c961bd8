"""A "Run check" button runs a REAL remediation check (issue 20): an Alertmanager alert (the captured-style
fixture of tests/integration/test_alerts.py) for an incident the config allows to be checked from chat
(`remediation.chat_check`) is routed as `alert.firing` and posted with Run check / Run, on Discord by the bot
(loopback fake of Discord's REST API) and on Slack (loopback fake of Slack). An admin's press (a signed
component interaction; a signed block_actions payload) runs the real `halctl remediate <incident> --check`
through the supervisor's remediation engine (ansible-runner, local connection, as the Alertmanager tests do;
this host runs no hal-agent, so the honest status is whatever the check diagnoses), the report is stored with
the presser as actor, and the chat message is updated with that report's id and status. An incident that is
not allowed stays routed: nothing runs."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.fakes.discord_api import FakeDiscord, running_fake_discord
from tests.fakes.slack_api import FakeSlack, running_fake_slack
from tests.integration.test_chatops_discord_buttons import ADMIN_ID, CHANNEL, OPERATOR_ID, press_doc
from tests.integration.test_chatops_discord_buttons import config as discord_config
from tests.integration.test_chatops_slack import ADMIN, INTERACTIONS, OPERATOR, _press, _signed
from tests.integration.test_chatops_slack import _config as slack_config
from tests.support.discord_interactions import ROUTE
from tests.support.discord_interactions import signed as discord_signed
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(300)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager"
ALERT_TOKEN = "am" * 4 + "0123456789abcdef" * 3
NODE = "alert-node"  # the host the fixture's alert names; the inventory lists it as this machine
CHECKED = re.compile(r"Check finished: (\w+) \(report ([0-9a-f]{32})\)")


@pytest.fixture(autouse=True)
def _ansible() -> None:
    pytest.importorskip("ansible_runner")


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[hal_agents]\n{NODE} ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    return inv


def remediation(inv: Path, **over: Any) -> dict[str, Any]:
    return {"remediation": {"inventory": str(inv), "chat_check": ["agent-crashed"], "timeout_minutes": 3} | over,
            "alerts": {"token": ALERT_TOKEN}}


async def fire_alert(sup: SupervisorProc) -> None:
    """The alert as Alertmanager posts it: agent-crashed on NODE, not in remediation.auto -> routed."""
    async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
        r = await c.post("/api/v1/alerts", content=(FIXTURES / "firing_agent_crashed.json").read_bytes(),
                         headers={"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert [x["action"] for x in r.json()["data"]["results"]] == ["routed"], r.text


async def reports(sup: SupervisorProc) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
        r = await c.get("/api/v1/remediations", headers={"Authorization": f"Bearer {sup.token}"})
    r.raise_for_status()
    rows: list[dict[str, Any]] = r.json()["data"]
    return rows


async def the_stored_check(sup: SupervisorProc, report_id: str, actor: str) -> dict[str, Any]:
    (row,) = [r for r in await reports(sup) if r["id"] == report_id]
    assert row["check"] is True and row["incident"] == "agent-crashed" and row["hosts"] == [NODE], row
    assert row["actor"] == actor, row
    return row


@pytest.fixture
def fake_discord() -> Iterator[FakeDiscord]:
    with running_fake_discord() as fake:
        yield fake


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with running_fake_slack() as fake:
        yield fake


def field_of(message: dict[str, Any] | None, name: str) -> str | None:
    if not message:
        return None
    return next((f["value"] for f in message["embeds"][0].get("fields", []) if f["name"] == name), None)


async def test_a_discord_run_check_button_runs_the_real_check_and_edits_the_alert(make_supervisor, fake_discord,
                                                                                  inventory):
    signer = Ed25519PrivateKey.generate()
    sup: SupervisorProc = make_supervisor(**discord_config(fake_discord, signer) | remediation(inventory)).start()
    await fire_alert(sup)

    def alert_message() -> dict[str, Any] | None:
        return next((m for m in fake_discord.channel_messages(CHANNEL) if m.get("components")), None)

    posted = await until(alert_message, "the alert posted with buttons", 60)
    ids = [b["custom_id"] for b in posted["components"][0]["components"]]
    assert ids == [f"hal:rem:check:agent-crashed:{NODE}", f"hal:rem:run:agent-crashed:{NODE}"], ids
    async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
        # an operator's press is refused ephemerally and runs nothing
        body, headers = discord_signed(signer, press_doc(fake_discord, posted, ids[0], OPERATOR_ID, "tok-op"))
        assert (await c.post(ROUTE, content=body, headers=headers)).json()["data"]["flags"] == 64
        body, headers = discord_signed(signer, press_doc(fake_discord, posted, ids[0], ADMIN_ID, "tok-check"))
        assert (await c.post(ROUTE, content=body, headers=headers)).json() == {"type": 6}
    text = await until(lambda: field_of(fake_discord.messages.get(posted["id"]), "Outcome"),
                       "the alert edited with the check's outcome", 240, interval=0.5)
    found = CHECKED.search(text)
    assert found and text.startswith("Remediate agent-crashed: ") and text.endswith(f"(by <@{ADMIN_ID}>)"), text
    row = await the_stored_check(sup, found.group(2), f"discord:{ADMIN_ID}")
    assert row["status"] == found.group(1)
    edited = fake_discord.messages[posted["id"]]
    assert [b["custom_id"] for b in edited["components"][0]["components"]] == ids  # a check changes nothing
    assert len(await reports(sup)) == 1  # the operator's press ran nothing


async def test_a_slack_run_check_button_runs_the_real_check_and_replaces_the_message(make_supervisor, fake_slack,
                                                                                     inventory, tmp_path):
    secret = secrets.token_hex(16)
    sup: SupervisorProc = make_supervisor(chatops=slack_config(tmp_path / "s", fake_slack, secret),
                                          **remediation(inventory)).start()
    await fire_alert(sup)
    posted = (await asyncio.to_thread(fake_slack.wait_posted, 1, 60))[0]
    assert "agent-crashed" in posted["text"], posted
    check, run = posted["blocks"][-1]["elements"]
    assert json.loads(check["value"]) == {"incident": "agent-crashed", "host": NODE} == json.loads(run["value"])
    message = next(iter(fake_slack.messages.values()))
    async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
        async def press(fields: dict[str, str]) -> None:
            body, headers = _signed(secret, fields)
            r = await c.post(INTERACTIONS, content=body, headers=headers)
            assert (r.status_code, r.text) == (200, ""), r.text

        refused = _press(fake_slack, message, "hal_remediate_check", OPERATOR)
        await press(refused)
        answer = (await asyncio.to_thread(fake_slack.wait_response, json.loads(refused["payload"])["response_url"]))
        assert "admin" in answer[0]["text"] and answer[0]["replace_original"] is False, answer
        pressed = _press(fake_slack, message, "hal_remediate_check", ADMIN)
        await press(pressed)
    (done,) = await asyncio.to_thread(fake_slack.wait_response, json.loads(pressed["payload"])["response_url"], 1,
                                      240)
    assert done["replace_original"] is True, done
    text = done["blocks"][-2]["elements"][-1]["text"]  # the outcome line, then the buttons that stay
    found = CHECKED.search(text)
    assert found and text.startswith(":gear: Check: ") and f"<@{ADMIN}>" in text, text
    assert done["blocks"][-1]["block_id"] == "hal_actions"
    row = await the_stored_check(sup, found.group(2), f"slack:{ADMIN}")
    assert row["status"] == found.group(1)
    assert len(await reports(sup)) == 1


async def test_a_check_of_an_incident_not_allowed_is_only_routed(make_supervisor, fake_slack, inventory, tmp_path):
    """Without remediation.chat_check (or auto) listing it, Run check routes the command and runs nothing."""
    secret = secrets.token_hex(16)
    sup: SupervisorProc = make_supervisor(chatops=slack_config(tmp_path / "s", fake_slack, secret),
                                          **remediation(inventory, chat_check=[])).start()
    await fire_alert(sup)
    await asyncio.to_thread(fake_slack.wait_posted, 1, 60)
    message = next(iter(fake_slack.messages.values()))
    pressed = _press(fake_slack, message, "hal_remediate_check", ADMIN)
    body, headers = _signed(secret, pressed)
    async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
        assert (await c.post(INTERACTIONS, content=body, headers=headers)).status_code == 200
    (done,) = await asyncio.to_thread(fake_slack.wait_response, json.loads(pressed["payload"])["response_url"])
    text = done["blocks"][-2]["elements"][-1]["text"]
    assert "Routed to the operators" in text and "--check" in text, text
    assert await reports(sup) == []
