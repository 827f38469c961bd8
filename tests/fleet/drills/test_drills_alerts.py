"""Issue 18 end to end on the drill fleet: an alert from a REAL Alertmanager reaches a verified remediation.

The fault is real (the agent crashed: kill -9 of hal-agent's main PID, then ``systemctl stop`` inside
RestartSec so the crash sticks; the node goes offline). Alertmanager runs on the host (Debian
`prometheus-alertmanager`) with the documented receiver: its webhook reaches the supervisor's
``POST /api/v1/alerts`` in the supervisor container through the fleet's API proxy, with the alert token from
a credentials_file. The alert is the one the shipped rule for the incident carries (its labels read from
``hal-o-swarm.rules.yml``), put in through Alertmanager's API v2 as Prometheus would.

`agent-crashed` is NOT in the fleet supervisor's ``remediation.auto``: the deployed supervisor cannot act on
another host (its release has no ansible, and the agent container is reachable only from the control node),
so the supervisor takes the routed path: ``alert.firing`` carrying the exact ``halctl remediate`` command for
the alert's node. The control node (this test, as the on-call operator) runs exactly that command with the
real halctl; halctl posts its verified report to the supervisor, which counts it and measures the time from
the alert's ``startsAt`` to verified (``hal_o_swarm_remediation_duration_seconds``). Resolving the alert in
Alertmanager closes the loop; every step is in the audit log.
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.drills.test_drills_services import kill9
from tests.support import alertmanager as am
from tests.support.fleet.fleet import AGENT_UNIT, SUP_CONFIG, SUP_UNIT, DrillFleet
from tests.support.waiting import wait_for

RULES = (Path(__file__).resolve().parents[3] / "collections" / "ansible_collections" / "halswarm" / "ops" / "roles"
         / "monitoring" / "files" / "hal-o-swarm.rules.yml")
INCIDENT = "agent-crashed"

_CONFIGURE = """
import json, sys
doc = json.load(open(sys.argv[1]))
doc.setdefault("alerts", {})["token"] = sys.argv[2]
doc.setdefault("remediation", {})["inventory"] = sys.argv[3]
open(sys.argv[1], "w").write(json.dumps(doc, indent=2))
"""


@pytest.fixture(autouse=True)
def _alertmanager_installed() -> None:
    am.require()


def shipped_rule(incident: str) -> dict[str, Any]:
    """The first shipped alert rule labelled with `incident`."""
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("labels", {}).get("incident") == incident:
                return dict(rule)
    raise AssertionError(f"no shipped rule for {incident}")


def metrics(fleet: DrillFleet) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert fleet.proxy is not None
    text = httpx.get(fleet.proxy.url + "/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def series(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def audit(fleet: DrillFleet) -> list[dict[str, Any]]:
    res = fleet.api("/api/v1/audit?action=alert&actor=alertmanager&limit=100")
    assert res["status"] == 200, res
    rows: list[dict[str, Any]] = res["body"]["data"]
    return rows


@pytest.mark.timeout(900)
def test_alertmanager_alert_reaches_a_verified_remediation(fleet: DrillFleet, tmp_path: Path) -> None:
    assert fleet.proxy is not None
    token = secrets.token_hex(24)
    original = fleet.exec(fleet.sup, "cat", SUP_CONFIG)
    rule = shipped_rule(INCIDENT)
    try:
        fleet.exec(fleet.sup, "python3", "-c", _CONFIGURE, SUP_CONFIG, token, str(fleet.inventory))
        fleet.exec(fleet.sup, "systemctl", "restart", SUP_UNIT, timeout=180)
        assert fleet.wait_node_online(120), "the agent did not reconnect after the supervisor restart"
        before = metrics(fleet)
        token_file = tmp_path / "hal-alert.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        config = am.receiver_config(fleet.proxy.url + "/api/v1/alerts", token_file,
                                    group_by=["alertname", "incident", "node"])
        with am.running(tmp_path / "am", config) as mgr:
            # The real fault.
            kill9(fleet, "agent")
            crashed_at = time.time()
            wait_for(lambda: fleet.node_status() == "offline", f"{fleet.agent} offline", 120, interval=1)
            labels = {"alertname": rule["alert"], **{k: str(v) for k, v in rule["labels"].items()},
                      "node": fleet.agent, "instance": "hal-supervisor:8421", "job": "hal-supervisor"}
            fired = time.time()
            mgr.post([am.alert(labels, starts=crashed_at, summary=f"hal-agent on {fleet.agent} crashed")])

            # Alertmanager -> supervisor: mapped to the incident and node, routed with the exact command.
            rows = wait_for(lambda: audit(fleet) or None, "the alert audited", 120, interval=1)
            (row,) = rows
            routed_at = time.time()
            expected = f"halctl remediate {INCIDENT} -i {fleet.inventory} --limit {fleet.agent}"
            assert (row["target"], row["result"]) == (INCIDENT, "routed"), row
            assert row["args"]["host"] == fleet.agent and row["args"]["command"] == expected, row
            assert row["args"]["receiver"] == "hal-supervisor" and row["args"]["alertname"] == rule["alert"]
            ev = fleet.api(f"/api/v1/events?type=alert.firing&node_id={fleet.agent}&order=desc&limit=1")
            (event,) = ev["body"]["data"]
            data = event["data"]
            assert data["command"] == expected and data["incident"] == INCIDENT and data["host"] == fleet.agent

            # The on-call operator (the control node) runs the command the notification carries.
            argv = shlex.split(data["command"])
            assert argv[:3] == ["halctl", "remediate", INCIDENT] and argv[-2:] == ["--limit", fleet.agent]
            rc, report = fleet.remediate(data["incident"], "--limit", data["host"])
            verified_at = time.time()
            assert rc == 0 and report["status"] == "verified", report
            assert fleet.active(fleet.agent, AGENT_UNIT) == "active" and fleet.node_status() == "online"

            # The supervisor recorded it, counted it and measured the time from the alert to verified.
            hist = fleet.api(f"/api/v1/remediations?incident={INCIDENT}&limit=1")["body"]["data"][0]
            assert hist["id"] == report["id"] and hist["status"] == "verified"
            after = metrics(fleet)
            done = series(after, "hal_o_swarm_remediations_total", incident=INCIDENT, outcome="verified")
            assert done == series(before, "hal_o_swarm_remediations_total", incident=INCIDENT,
                                  outcome="verified") + 1
            name = "hal_o_swarm_remediation_duration_seconds"
            count = series(after, name + "_count", incident=INCIDENT) - series(before, name + "_count",
                                                                              incident=INCIDENT)
            mttr = series(after, name + "_sum", incident=INCIDENT) - series(before, name + "_sum", incident=INCIDENT)
            assert count == 1
            # From the alert's startsAt (the crash), not from the run's start: at least the run plus the wait
            # for the node to go offline and the alert to be routed.
            assert mttr >= report["duration_s"] + (fired - crashed_at) - 1, (mttr, report["duration_s"])
            assert mttr <= verified_at - crashed_at + 5, (mttr, verified_at - crashed_at)

            # Resolved: the loop closes in the supervisor, audited.
            mgr.post([am.alert(labels, starts=crashed_at, ends=time.time() - 1)])
            wait_for(lambda: any(r["result"] == "resolved" for r in audit(fleet)), "the resolved alert audited",
                     120, interval=1)
            resolved_at = time.time()
            results = sorted(r["result"] for r in audit(fleet))
            assert results == ["resolved", "routed"], results
            ev = fleet.api(f"/api/v1/events?type=alert.resolved&node_id={fleet.agent}&order=desc&limit=1")
            assert ev["body"]["data"][0]["data"]["incident"] == INCIDENT
            rem_audit = fleet.api("/api/v1/audit?action=remediation&limit=5")["body"]["data"]
            assert any(r["args"].get("id") == report["id"] and r["result"] == "verified" for r in rem_audit)
        print("alert -> verified drill:", json.dumps({
            "crash_to_alert_routed_s": round(routed_at - crashed_at, 1),
            "alertmanager_to_supervisor_s": round(routed_at - fired, 1),
            "remediation_run_s": report["duration_s"],
            "alert_start_to_verified_s (metric)": round(mttr, 1),
            "verified_to_resolved_audited_s": round(resolved_at - verified_at, 1)}))
    finally:
        fleet.exec(fleet.sup, "python3", "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                   SUP_CONFIG, original, check=False)
        fleet.exec(fleet.sup, "systemctl", "restart", SUP_UNIT, timeout=180, check=False)
        fleet.exec(fleet.agent, "systemctl", "start", AGENT_UNIT, check=False)
