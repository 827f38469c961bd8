"""POST /api/v1/alerts against the real supervisor: Alertmanager's webhook payloads (captured-style fixtures
under tests/fixtures/alertmanager/) start the real `halctl remediate` (ansible-runner, local connection) for
incidents in `remediation.auto`, once per window however often the alert repeats; other incidents are routed
with the exact command to a loopback webhook; resolved alerts are routed as alert.resolved; every alert is
audited under the token's name; malformed payloads answer one line; the alert token opens nothing else."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.receivers import Receiver, receivers
from tests.support.waiting import until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager"
ALERT_TOKEN = "am" * 4 + "0123456789abcdef" * 3
OPERATOR_TOKEN = "o" * 8 + "fedcba9876543210" * 3
NODE = "alert-node"  # the host named by the fixtures


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _types(hook: Receiver) -> list[str]:
    return [b["event"]["type"] for b in hook.bodies()]


def _events(hook: Receiver, ev_type: str) -> list[dict[str, Any]]:
    return [b["event"] for b in hook.bodies() if b["event"]["type"] == ev_type]


async def _post(sup: Any, body: bytes, token: str = ALERT_TOKEN) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
        return await c.post("/api/v1/alerts", content=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})


def _alert_sup(make_supervisor: Any, hook: Receiver, **remediation: Any) -> Any:
    sup = make_supervisor(
        remediation=remediation, alerts={"token": ALERT_TOKEN, "max_alerts": 5},
        routes=[{"match": "alert.*", "target": f"webhook:{hook.url}/alerts"},
                {"match": "remediation.*", "target": f"webhook:{hook.url}/rem"}],
        routing={"backoff_base_ms": 50, "timeout_seconds": 2})
    sup.extra["security"] = {"operators": [{"name": "test-admin", "role": "admin", "token": sup.token},
                                           {"name": "oncall", "role": "operator", "token": OPERATOR_TOKEN}]}
    return sup.start()


@pytest.mark.timeout(150)
async def test_firing_alert_starts_the_remediation_once_however_often_it_repeats(make_supervisor: Any,
                                                                                 tmp_path: Path) -> None:
    pytest.importorskip("ansible_runner")
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[hal_agents]\n{NODE} ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    with receivers("ok") as (hook,):
        sup = _alert_sup(make_supervisor, hook, inventory=str(inv), auto=["agent-crashed"], window_minutes=60,
                         timeout_minutes=2)
        answers = await asyncio.gather(*(_post(sup, _fixture("firing_agent_crashed.json")) for _ in range(5)))
        assert [r.status_code for r in answers] == [200] * 5, [r.text for r in answers]
        actions = sorted(r.json()["data"]["results"][0]["action"] for r in answers)
        assert actions == ["started"] + ["throttled"] * 4, actions
        await until(lambda: "remediation.started" in _types(hook), "remediation.started", 15, interval=0.2)
        done = ("remediation.completed", "remediation.escalated", "remediation.failed")
        # Resolved while the run is (most likely) still going: the loop closes, the run is not stopped.
        resolved = await _post(sup, _fixture("resolved_agent_crashed.json"))
        assert resolved.json()["data"]["results"][0]["action"] == "resolved", resolved.text
        await until(lambda: "alert.resolved" in _types(hook), "alert.resolved", 15, interval=0.2)
        (ev,) = _events(hook, "alert.resolved")
        assert ev["node_id"] == NODE and ev["data"]["ends_at"] == "2026-12-07T04:06:42.001Z"
        try:
            await until(lambda: any(t in done for t in _types(hook)), "the run to finish", 90, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {_types(hook)}\n{sup.log_tail()}") from None
        (started,) = _events(hook, "remediation.started")
        assert started["node_id"] == NODE and started["data"]["incident"] == "agent-crashed"
        assert "HalAgentDown" in started["data"]["trigger"] and "3f1c2b0a9d8e7f61" in started["data"]["trigger"]
        assert len(_events(hook, "remediation.throttled")) == 1  # told once per window, not per repeat
        assert "alert.firing" not in _types(hook)  # started, so no "run it yourself" notification
        final = next(b["event"] for b in hook.bodies() if b["event"]["type"] in done)
        assert "interrupted" not in str(final["data"].get("error")), final  # the resolve killed nothing

        with sup.client() as c:
            items = c.get("/api/v1/remediations").json()["data"]
            audit = c.get("/api/v1/audit", params={"actor": "alertmanager", "limit": 50}).json()["data"]
    assert len(items) == 1 and items[0]["incident"] == "agent-crashed" and items[0]["actor"] == "auto", items
    assert sorted(a["result"] for a in audit) == ["resolved", "started"] + ["throttled"] * 4, audit
    assert {(a["action"], a["target"]) for a in audit} == {("alert", "agent-crashed")}


async def test_other_incidents_are_routed_with_the_command_and_unknown_ones_ignored(make_supervisor: Any,
                                                                                     tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    with receivers("ok") as (hook,):
        sup = _alert_sup(make_supervisor, hook, inventory=str(inv), auto=["agent-crashed"])
        r = await _post(sup, _fixture("grouped_mixed.json"), token=sup.token)  # an admin may post too
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["received"] == 3
        routed, ignored = data["results"]  # the repeated fingerprint counts once
        assert routed["action"] == "routed" and routed["host"] == "worker-2.example"
        command = f"halctl remediate agent-high-memory -i {inv} --limit worker-2.example"
        assert routed["command"] == command
        assert ignored == {"fingerprint": "0f0e0d0c0b0a0908", "status": "firing", "alertname": "DiskOnFire",
                           "incident": "disk-on-fire", "action": "ignored",
                           "reason": "unknown incident 'disk-on-fire'"}
        await until(lambda: "alert.firing" in _types(hook), "alert.firing routed", 15, interval=0.2)
        (ev,) = _events(hook, "alert.firing")
        assert ev["data"]["command"] == command and ev["data"]["incident"] == "agent-high-memory"
        assert ev["data"]["severity"] == "High" and ev["node_id"] == "worker-2.example"

        # An auto incident without a host is never run on the whole group: routed, saying why. A supervisor
        # incident runs on the supervisors group (no supervisor_host set), whatever `instance` says.
        doc = json.loads(_fixture("firing_agent_crashed.json"))
        hostless = doc["alerts"][0]
        for key in ("node", "instance"):
            del hostless["labels"][key]
        sup_alert = json.loads(json.dumps(hostless))
        sup_alert["labels"] |= {"incident": "supervisor-high-memory", "instance": "10.0.0.5:8421"}
        sup_alert["fingerprint"] = "5555555555555555"
        doc["alerts"].append(sup_alert)
        r = await _post(sup, json.dumps(doc).encode())
        no_host, supervisor = r.json()["data"]["results"]
        assert (no_host["action"], no_host["host"]) == ("routed", None)
        assert no_host["reason"] == "no node or instance label: the remediation needs a host"
        assert no_host["command"] == f"halctl remediate agent-crashed -i {inv}"
        assert supervisor["command"] == f"halctl remediate supervisor-high-memory -i {inv} --limit hal_supervisors"
        await until(lambda: len(_events(hook, "alert.firing")) == 3, "3 alert.firing routed", 15, interval=0.2)
        assert "remediation.started" not in _types(hook)
        with sup.client() as c:
            audit = c.get("/api/v1/audit", params={"action": "alert"}).json()["data"]
    assert sorted((a["actor"], a["target"], a["result"], a["error"]) for a in audit) == [
        ("alertmanager", "agent-crashed", "routed", "no node or instance label: the remediation needs a host"),
        ("alertmanager", "supervisor-high-memory", "routed", None),
        ("test-admin", "agent-high-memory", "routed", None),
        ("test-admin", "disk-on-fire", "ignored", "unknown incident 'disk-on-fire'")]


async def test_malformed_payloads_get_one_line_400s_and_roles_are_enforced(make_supervisor: Any) -> None:
    with receivers("ok") as (hook,):
        sup = _alert_sup(make_supervisor, hook)
        good = json.loads(_fixture("firing_agent_crashed.json"))
        bad_bodies = {
            b"{not json": "body must be JSON",
            json.dumps(good | {"version": "3"}).encode(): 'version: must be "4"',
            json.dumps(good | {"alerts": good["alerts"] * 6}).encode(): "alerts: more than 5 in one request",
            json.dumps(good | {"alerts": [{"status": "firing", "labels": {"node": 5}}]}).encode():
                "alerts[0].labels.node: must be a string",
            b"[]": "body must be a JSON object",
        }
        for body, message in bad_bodies.items():
            r = await _post(sup, body)
            assert r.status_code == 400, (body[:60], r.text)
            err = r.json()["error"]
            assert message in err and "\n" not in err, err
        async with httpx.AsyncClient(base_url=sup.api, timeout=30) as c:
            alert_hdr = {"Authorization": f"Bearer {ALERT_TOKEN}"}
            for method, path in (("GET", "/api/v1/nodes"), ("GET", "/api/v1/audit"), ("GET", "/api/v1/events"),
                                 ("POST", "/api/v1/remediations"), ("POST", "/api/v1/commands")):
                r = await c.request(method, path, headers=alert_hdr, json={} if method == "POST" else None)
                assert (r.status_code, r.json()["code"]) == (403, "FORBIDDEN"), (path, r.text)
                assert "alertmanager may only post alerts" in r.json()["error"]
        r = await _post(sup, _fixture("firing_agent_crashed.json"), token=OPERATOR_TOKEN)
        assert (r.status_code, r.json()["code"]) == (403, "FORBIDDEN"), r.text
        r = await _post(sup, _fixture("firing_agent_crashed.json"), token="nope-" + "x" * 40)
        assert (r.status_code, r.json()["code"]) == (401, "AUTH_REQUIRED"), r.text
        with sup.client() as c:
            audit = c.get("/api/v1/audit", params={"action": "alert"}).json()["data"]
    assert audit == []  # refused requests act on nothing
