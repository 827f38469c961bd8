"""Issue 18 end to end on the drill fleet: an alert from a REAL Alertmanager reaches a verified remediation.

The fault is real (the agent crashed: kill -9 of hal-agent's main PID, then ``systemctl stop`` inside
RestartSec so the crash sticks; the node goes offline). Alertmanager runs on the host (Debian
`prometheus-alertmanager`) with the documented receiver: its webhook reaches the supervisor's
``POST /api/v1/alerts`` in the supervisor container through the fleet's API proxy, with the alert token from
a credentials_file. The alert is the one the shipped rule for the incident carries (its labels read from
``hal-o-swarm.rules.yml``), put in through Alertmanager's API v2 as Prometheus would.

Two paths, one test each:

- ROUTED (`agent-crashed` not in ``remediation.auto``): the supervisor routes ``alert.firing`` carrying the exact
  ``halctl remediate`` command for the alert's node. The control node (this test, as the on-call operator) runs
  exactly that command with the real halctl; halctl posts its verified report to the supervisor.
- AUTOMATIC (`agent-crashed` in ``remediation.auto``): the supervisor runs the remediation itself, as a
  production deployment with ``hal_supervisor_remediation_ssh`` does: its release carries the ``ops`` extra
  (ansible-runner, ansible), its own halctl runs the runbook playbook with the remediation inventory the role
  wrote (``remediation.inventory``), and reaches the agent container over SSH (the agent's sshd on
  127.0.0.1:2222, the runner's own key authorized for the agent's ``hal-remediate`` login, host key checked
  against the known_hosts the roles wrote). No operator, no control node in the loop.

Either way the supervisor records the report, counts it and measures the time from the alert's ``startsAt`` to
verified (``hal_o_swarm_remediation_duration_seconds``). Resolving the alert in Alertmanager closes the loop;
every step is in the audit log.
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
from tests.support.fleet.fleet import AGENT_UNIT, SUP_CONFIG, SUP_DB, SUP_UNIT, DrillFleet
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
# The automatic path: the incident in remediation.auto; the inventory stays the one the role wrote. The
# node-offline trigger waits an hour, so the run this test sees is the alert's (both share one throttle).
_CONFIGURE_AUTO = """
import json, sys
doc = json.load(open(sys.argv[1]))
doc.setdefault("alerts", {})["token"] = sys.argv[2]
rem = doc.setdefault("remediation", {})
rem["auto"] = sorted(set(rem.get("auto") or []) | {sys.argv[3]})
rem["offline_minutes"] = 60
open(sys.argv[1], "w").write(json.dumps(doc, indent=2))
print(rem.get("inventory") or "")
"""
# The role's remediation inventory (hal_supervisor_remediation_ssh_dir default).
ROLE_INVENTORY = "/etc/hal-o-swarm/remediation-ssh/inventory.yml"


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


def audit(fleet: DrillFleet, since: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The alert rows of the audit log, without those already there (`since`: `audit_keys` taken before):
    the drills share one fleet, so the other case's rows may be there."""
    res = fleet.api("/api/v1/audit?action=alert&actor=alertmanager&limit=100")
    assert res["status"] == 200, res
    rows: list[dict[str, Any]] = res["body"]["data"]
    return [r for r in rows if _key(r) not in since]


def audit_keys(fleet: DrillFleet) -> frozenset[str]:
    return frozenset(_key(r) for r in audit(fleet))


def _key(row: dict[str, Any]) -> str:
    return str(row.get("id") or json.dumps(row, sort_keys=True))


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
        seen = audit_keys(fleet)
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
            rows = wait_for(lambda: audit(fleet, seen) or None, "the alert audited", 120, interval=1)
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
            wait_for(lambda: any(r["result"] == "resolved" for r in audit(fleet, seen)), "the resolved alert audited",
                     120, interval=1)
            resolved_at = time.time()
            results = sorted(r["result"] for r in audit(fleet, seen))
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


def forget_auto_runs(fleet: DrillFleet, incident: str) -> None:
    """Drop the persisted throttle of `incident` (the supervisor stopped; written as its own user, so no file
    of its database turns root's): a rerun on this fleet, or a later drill, starts from a clean window."""
    fleet.exec(fleet.sup, "systemctl", "stop", SUP_UNIT, timeout=120)
    fleet.exec(fleet.sup, "runuser", "-u", "hal-supervisor", "--", "sqlite3", SUP_DB,
               f"DELETE FROM auto_remediation_state WHERE incident = '{incident}'")


def auto_reports(fleet: DrillFleet) -> list[dict[str, Any]]:
    res = fleet.api(f"/api/v1/remediations?incident={INCIDENT}&limit=20")
    assert res["status"] == 200, res
    return list(res["body"]["data"])


@pytest.mark.timeout(1200)
def test_alert_drives_the_supervisors_own_remediation_over_ssh(fleet: DrillFleet, tmp_path: Path) -> None:
    """The AUTOMATIC path: alert -> the supervisor runs `halctl remediate agent-crashed` over SSH -> verified."""
    assert fleet.proxy is not None
    token = secrets.token_hex(24)
    original = fleet.exec(fleet.sup, "cat", SUP_CONFIG)
    rule = shipped_rule(INCIDENT)
    # What the role deployed: the ops extra in the release, the runner's key (0600, the service user's), the
    # inventory naming the agent by node id, reached over SSH with that key and strict host key checking.
    assert fleet.exec(fleet.sup, "/opt/hal-o-swarm/current/bin/python", "-c",
                      "import ansible_runner, ansible; print('ok')").strip() == "ok"
    key = fleet.exec(fleet.sup, "stat", "-c", "%U %a", "/etc/hal-o-swarm/remediation-ssh/id_ed25519").split()
    assert key == ["hal-supervisor", "600"], key
    inv = yaml.safe_load(fleet.exec(fleet.sup, "cat", ROLE_INVENTORY))
    agent_vars = inv["all"]["children"]["hal_agents"]
    assert agent_vars["hosts"][fleet.agent]["ansible_port"] == 2222, agent_vars
    assert "StrictHostKeyChecking=yes" in agent_vars["vars"]["ansible_ssh_common_args"], agent_vars
    assert fleet.exec(fleet.sup, "grep", "-c", "^\\[127.0.0.1\\]:2222 ssh-ed25519 ",
                      "/etc/hal-o-swarm/remediation-ssh/known_hosts").strip() == "1"
    try:
        forget_auto_runs(fleet, INCIDENT)
        inventory = fleet.exec(fleet.sup, "python3", "-c", _CONFIGURE_AUTO, SUP_CONFIG, token, INCIDENT).strip()
        assert inventory == ROLE_INVENTORY, inventory
        fleet.exec(fleet.sup, "systemctl", "start", SUP_UNIT, timeout=180)
        assert fleet.wait_node_online(120), "the agent did not reconnect after the supervisor restart"
        before = metrics(fleet)
        seen = audit_keys(fleet)
        known = {r["id"] for r in auto_reports(fleet)}
        ssh_since = time.time()
        token_file = tmp_path / "hal-alert.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        config = am.receiver_config(fleet.proxy.url + "/api/v1/alerts", token_file,
                                    group_by=["alertname", "incident", "node"])
        with am.running(tmp_path / "am", config) as mgr:
            kill9(fleet, "agent")
            crashed_at = time.time()
            wait_for(lambda: fleet.node_status() == "offline", f"{fleet.agent} offline", 120, interval=1)
            labels = {"alertname": rule["alert"], **{k: str(v) for k, v in rule["labels"].items()},
                      "node": fleet.agent, "instance": "hal-supervisor:8421", "job": "hal-supervisor"}
            fired = time.time()
            mgr.post([am.alert(labels, starts=crashed_at, summary=f"hal-agent on {fleet.agent} crashed")])

            # Alertmanager -> supervisor: the listed incident is started by the supervisor itself.
            (row,) = wait_for(lambda: audit(fleet, seen) or None, "the alert audited", 120, interval=1)
            started_at = time.time()
            assert (row["target"], row["result"]) == (INCIDENT, "started"), row
            assert row["args"]["host"] == fleet.agent, row

            # The supervisor's own run: over SSH into the agent container, verified, stored with actor auto.
            def finished() -> dict[str, Any] | None:
                new = [r for r in auto_reports(fleet) if r["id"] not in known]
                return new[0] if new and new[0]["status"] != "running" else None

            report = wait_for(finished, "the supervisor's own remediation report", 600, interval=2)
            verified_at = time.time()
            assert report["status"] == "verified", json.dumps(report, indent=2)[:4000]
            assert report["hosts"] == [fleet.agent] and report["actor"] == "auto", report
            assert fleet.active(fleet.agent, AGENT_UNIT) == "active" and fleet.node_status() == "online"
            sshd = fleet.journal(fleet.agent, "ssh.service", since=ssh_since)
            assert "Accepted publickey for hal-remediate from 127.0.0.1" in sshd, sshd[-3000:]
            events = fleet.api(f"/api/v1/events?type=remediation.started&node_id={fleet.agent}&order=desc&limit=1")
            (started,) = events["body"]["data"]
            assert started["data"]["incident"] == INCIDENT and "alert" in started["data"]["trigger"], started

            after = metrics(fleet)
            done = series(after, "hal_o_swarm_remediations_total", incident=INCIDENT, outcome="verified")
            assert done == series(before, "hal_o_swarm_remediations_total", incident=INCIDENT,
                                  outcome="verified") + 1
            name = "hal_o_swarm_remediation_duration_seconds"
            count = series(after, name + "_count", incident=INCIDENT) - series(before, name + "_count",
                                                                              incident=INCIDENT)
            mttr = series(after, name + "_sum", incident=INCIDENT) - series(before, name + "_sum", incident=INCIDENT)
            assert count == 1
            assert fired - crashed_at - 1 <= mttr <= verified_at - crashed_at + 5, (mttr, verified_at - crashed_at)
            rem_audit = fleet.api("/api/v1/audit?action=remediation&limit=10")["body"]["data"]
            assert any(r["args"].get("id") == report["id"] and r["result"] == "verified" and r["actor"] == "auto"
                       for r in rem_audit), rem_audit

            mgr.post([am.alert(labels, starts=crashed_at, ends=time.time() - 1)])
            wait_for(lambda: any(r["result"] == "resolved" for r in audit(fleet, seen)), "the resolved alert audited",
                     120, interval=1)
            assert sorted(r["result"] for r in audit(fleet, seen)) == ["resolved", "started"]
        print("alert -> automatic verified drill:", json.dumps({
            "crash_to_alert_fired_s": round(fired - crashed_at, 1),
            "alert_fired_to_run_started_s": round(started_at - fired, 1),
            "run_started_to_verified_seen_s": round(verified_at - started_at, 1),
            "remediation_run_s": report.get("duration_s"),
            "alert_start_to_verified_s (metric)": round(mttr, 1)}))
    finally:
        forget_auto_runs(fleet, INCIDENT)
        fleet.exec(fleet.sup, "python3", "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                   SUP_CONFIG, original, check=False)
        fleet.exec(fleet.sup, "systemctl", "restart", SUP_UNIT, timeout=180, check=False)
        fleet.exec(fleet.agent, "systemctl", "start", AGENT_UNIT, check=False)


_RUNNER_SSH = ("runuser -u hal-supervisor -- ssh -i /etc/hal-o-swarm/remediation-ssh/id_ed25519 -o IdentitiesOnly=yes"
               " -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null"
               " -p 2222")
_KNOWN = " -o UserKnownHostsFile=/etc/hal-o-swarm/remediation-ssh/known_hosts"


def test_remediation_login_is_key_only_from_the_supervisor_and_forwards_nothing(fleet: DrillFleet) -> None:
    """The runner's way in, as the roles set it up, and nothing more: the login works (and sudo, the power the
    runbook steps need); the same key from another source address is refused (from=); forwarding is refused
    (restrict); an agent host key the runner's known_hosts does not hold is refused (strict checking)."""
    def ssh(opts: str, cmd: str = "true") -> tuple[int, str]:
        out = fleet.sh(fleet.sup, f"{_RUNNER_SSH} {opts} hal-remediate@127.0.0.1 {cmd} </dev/null 2>&1; echo rc=$?",
                       timeout=60)
        body, _, rc = out.rstrip().rpartition("rc=")
        return int(rc), body

    assert ssh(_KNOWN, "'sudo -n id -u'") == (0, "0\n")
    rc, out = ssh(_KNOWN + " -b 127.0.0.2")
    assert rc == 255 and "Permission denied (publickey" in out, out
    rc, out = ssh(_KNOWN + " -W 127.0.0.1:8421")
    assert rc == 255 and "administratively prohibited" in out, out
    rc, out = ssh(" -o UserKnownHostsFile=/dev/null")
    assert rc == 255 and "Host key verification failed" in out, out
    # The agent host runs no other sshd: nothing listens on port 22 in the shared namespace.
    assert ":22 " not in fleet.exec(fleet.agent, "ss", "-Hltn")
