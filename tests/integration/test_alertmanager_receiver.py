"""The supervisor as the webhook receiver of a REAL Alertmanager (issue 18 point 4).

Alertmanager 0.25 (Debian `prometheus-alertmanager`) runs on loopback with the receiver of
docs/monitoring.md (bearer alert token from a credentials_file, send_resolved); alerts are put in through
its API v2 as Prometheus would. Alertmanager groups them and calls the real supervisor's POST /api/v1/alerts:
an incident in `remediation.auto` starts the real `halctl remediate` (ansible-runner, local connection; this
host runs no hal-agent unit, so the run's honest outcome is whatever it diagnoses), a grouped pair of another
incident is routed with the exact command per node, resolving them closes the loop, every alert is audited
and the run is counted on /metrics. A wrong token in Alertmanager's file is refused and acts on nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.receivers import Receiver, receivers
from tests.support import alertmanager as am
from tests.support.waiting import until

ALERT_TOKEN = "am" * 4 + "0123456789abcdef" * 3
NODE = "am-node"
PAIR = ("am-w1", "am-w2")
DONE = ("remediation.completed", "remediation.escalated", "remediation.failed")


@pytest.fixture(autouse=True)
def _alertmanager_installed() -> None:
    am.require()


def _events(hook: Receiver, ev_type: str) -> list[dict[str, Any]]:
    return [b["event"] for b in hook.bodies() if b["event"]["type"] == ev_type]


def _types(hook: Receiver) -> list[str]:
    return [b["event"]["type"] for b in hook.bodies()]


def _token_file(path: Path, token: str) -> Path:
    path.write_text(token)
    path.chmod(0o600)
    return path


def _audit(sup: Any) -> list[dict[str, Any]]:
    with sup.client() as c:
        r = c.get("/api/v1/audit", params={"action": "alert", "limit": 100})
    r.raise_for_status()
    rows: list[dict[str, Any]] = r.json()["data"]
    return rows


def _metric(sup: Any, name: str, **labels: str) -> float | None:
    with sup.client() as c:
        text = c.get("/metrics").text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def _labels(alertname: str, incident: str, node: str, severity: str) -> dict[str, str]:
    return {"alertname": alertname, "incident": incident, "node": node, "severity": severity}


@pytest.mark.timeout(240)
async def test_real_alertmanager_groups_fires_remediates_routes_and_resolves(make_supervisor: Any,
                                                                            tmp_path: Path) -> None:
    pytest.importorskip("ansible_runner")
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[hal_agents]\n{NODE} ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    with receivers("ok") as (hook,):
        sup = make_supervisor(
            remediation={"inventory": str(inv), "auto": ["agent-crashed"], "window_minutes": 60,
                         "timeout_minutes": 2},
            alerts={"token": ALERT_TOKEN},
            routes=[{"match": "alert.*", "target": f"webhook:{hook.url}/alerts"},
                    {"match": "remediation.*", "target": f"webhook:{hook.url}/rem"}],
            routing={"backoff_base_ms": 50, "timeout_seconds": 2}).start()
        config = am.receiver_config(sup.api + "/api/v1/alerts", _token_file(tmp_path / "hal-alert.token", ALERT_TOKEN),
                                    group_by=["alertname", "incident"])
        with am.running(tmp_path / "am", config) as mgr:
            starts = time.time() - 30
            down = _labels("HalAgentDown", "agent-crashed", NODE, "high")
            memory = [_labels("HalAgentHighMemory", "agent-high-memory", n, "high") for n in PAIR]
            mgr.post([am.alert(down, starts=starts)] + [am.alert(m, starts=starts) for m in memory])

            def firing() -> list[dict[str, Any]] | None:
                rows = _audit(sup)
                return rows if len(rows) >= 3 else None

            try:
                rows = await until(firing, "three alerts audited", 90, interval=0.5)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{mgr.log_tail()}\n{sup.log_tail()}") from None
            assert len(rows) == 3, rows
            by_host = {r["args"]["host"]: r for r in rows}
            assert set(by_host) == {NODE, *PAIR}, rows
            assert all(r["actor"] == "alertmanager" and r["args"]["receiver"] == "hal-supervisor" for r in rows)
            # The auto incident ran through the engine, limited to the alert's node.
            run = by_host[NODE]
            assert (run["target"], run["result"], run["args"]["status"]) == ("agent-crashed", "started", "firing")
            assert run["args"]["command"] == f"halctl remediate agent-crashed -i {inv} --limit {NODE}"
            # The grouped pair came in ONE webhook call (one group key, one receive time) and each alert was
            # routed with the exact command for its own node.
            pair = [by_host[n] for n in PAIR]
            assert pair[0]["args"]["group_key"] == pair[1]["args"]["group_key"] != run["args"]["group_key"]
            assert "agent-high-memory" in pair[0]["args"]["group_key"]
            assert pair[0]["timestamp"] == pair[1]["timestamp"]
            for n, r in zip(PAIR, pair, strict=True):
                assert (r["target"], r["result"]) == ("agent-high-memory", "routed"), r
                assert r["args"]["command"] == f"halctl remediate agent-high-memory -i {inv} --limit {n}"
            await until(lambda: len(_events(hook, "alert.firing")) == 2, "two alert.firing routed", 30,
                        interval=0.2)
            routed = {e["node_id"]: e["data"] for e in _events(hook, "alert.firing")}
            assert set(routed) == set(PAIR)
            assert routed[PAIR[1]]["command"] == f"halctl remediate agent-high-memory -i {inv} --limit {PAIR[1]}"
            assert routed[PAIR[1]]["alertname"] == "HalAgentHighMemory" and routed[PAIR[1]]["severity"] == "High"

            try:
                await until(lambda: any(t in DONE for t in _types(hook)), "the remediation to finish", 120,
                            interval=0.5)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {_types(hook)}\n{sup.log_tail()}") from None
            (started,) = _events(hook, "remediation.started")
            assert started["node_id"] == NODE and "HalAgentDown" in started["data"]["trigger"]
            with sup.client() as c:
                (item,) = c.get("/api/v1/remediations").json()["data"]
            assert item["incident"] == "agent-crashed" and item["actor"] == "auto" and item["hosts"] == [NODE]
            assert _metric(sup, "hal_o_swarm_remediations_total", incident="agent-crashed",
                           outcome=item["status"]) == 1

            # Resolved: Prometheus stops sending the alert and Alertmanager gets it with endsAt in the past.
            ends = time.time() - 1
            mgr.post([am.alert(down, starts=starts, ends=ends)] + [am.alert(m, starts=starts, ends=ends)
                                                                  for m in memory])

            def resolved() -> list[dict[str, Any]] | None:
                rows = [r for r in _audit(sup) if r["result"] == "resolved"]
                return rows if len(rows) >= 3 else None

            try:
                done = await until(resolved, "three resolved alerts audited", 90, interval=0.5)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{mgr.log_tail()}") from None
            assert {r["args"]["host"] for r in done} == {NODE, *PAIR}
            assert all(r["args"]["status"] == "resolved" for r in done)
            await until(lambda: len(_events(hook, "alert.resolved")) == 3, "three alert.resolved routed", 30,
                        interval=0.2)
            assert {e["node_id"] for e in _events(hook, "alert.resolved")} == {NODE, *PAIR}
        # Still one run: the resolved alert closed the loop without starting or stopping anything.
        assert len(_events(hook, "remediation.started")) == 1
        assert len(_audit(sup)) == 6


@pytest.mark.timeout(120)
async def test_alertmanager_with_a_wrong_token_is_refused_and_nothing_acts(make_supervisor: Any,
                                                                         tmp_path: Path) -> None:
    with receivers("ok") as (hook,):
        sup = make_supervisor(alerts={"token": ALERT_TOKEN},
                              routes=[{"match": "alert.*", "target": f"webhook:{hook.url}/alerts"}]).start()
        wrong = _token_file(tmp_path / "wrong.token", "x" * 8 + ALERT_TOKEN[8:])
        config = am.receiver_config(sup.api + "/api/v1/alerts", wrong, group_by=["alertname"])
        with am.running(tmp_path / "am", config) as mgr:
            mgr.post([am.alert(_labels("HalAgentDown", "agent-crashed", NODE, "high"), starts=time.time() - 5)])

            await until(lambda: (_metric(sup, "hal_o_swarm_http_request_duration_seconds_count",
                                         route="/api/v1/alerts", method="POST", status_class="4xx") or 0) >= 1,
                        "alertmanager's call refused", 60, interval=0.5)
            assert "401" in mgr.log_tail(200) or "unexpected status code" in mgr.log_tail(200), mgr.log_tail()
        assert _audit(sup) == [] and hook.bodies() == []


@pytest.mark.timeout(120)
async def test_supervisor_restarting_incident_from_alertmanager_becomes_a_root_request(make_supervisor: Any,
                                                                                     tmp_path: Path) -> None:
    """HalSupervisorMemoryHigh with supervisor-high-memory listed: the supervisor does not run the playbook
    as its child (the repair restarts it) but writes one request for the root runner, which refuses it
    unless root's config lists the incident."""
    from halswarm.core.remediation.requests import parse_request
    from halswarm.supervisor.features.remediations.request_runner import take_requests

    inv = tmp_path / "hosts.ini"
    inv.write_text("[hal_supervisors]\nsup-1 ansible_connection=local\n")
    with receivers("ok") as (hook,):
        sup = make_supervisor(remediation={"inventory": str(inv), "auto": ["supervisor-high-memory"],
                                           "supervisor_host": "sup-1"},
                              alerts={"token": ALERT_TOKEN},
                              routes=[{"match": "remediation.*", "target": f"webhook:{hook.url}/rem"}])
        requests = sup.db_path.parent / "remediation-requests"
        requests.mkdir(parents=True)
        sup.start()
        config = am.receiver_config(sup.api + "/api/v1/alerts", _token_file(tmp_path / "t", ALERT_TOKEN),
                                    group_by=["alertname"])
        with am.running(tmp_path / "am", config) as mgr:
            mgr.post([am.alert({"alertname": "HalSupervisorMemoryHigh", "incident": "supervisor-high-memory",
                                "severity": "high", "instance": "sup-1:8421"}, starts=time.time() - 60)])
            names = await until(lambda: sorted(p.name for p in requests.iterdir()), "a request file", 60,
                                interval=0.5)
        (row,) = _audit(sup)
        assert (row["target"], row["result"], row["args"]["host"]) == ("supervisor-high-memory", "started", "sup-1")
        assert len(names) == 1 and names[0].startswith("supervisor-high-memory-")
        assert parse_request((requests / names[0]).read_bytes(), time.time()).incident == "supervisor-high-memory"
        await until(lambda: "remediation.started" in _types(hook), "remediation.started", 30, interval=0.2)
        assert not any(t in DONE for t in _types(hook))  # nothing ran in the supervisor: the root unit's job
        (req,) = take_requests(requests, time.time(), lambda _: None)
        assert req.incident == "supervisor-high-memory" and not any(requests.iterdir())


@pytest.mark.timeout(180)
async def test_shipped_rule_in_real_prometheus_reaches_the_supervisor_through_alertmanager(make_supervisor: Any,
                                                                                         tmp_path: Path) -> None:
    """The whole chain with nothing put in by hand: a real Prometheus loads the collection's rules, scrapes
    the supervisor, fires HalRestoreTestFailed on a failed restore test (restore-test.json), sends it to
    the real Alertmanager, whose webhook reaches the supervisor: routed with the command (lost-session-data
    is not auto), audited; a passing restore test resolves it, and that is audited too."""
    from tests.integration.test_monitoring_rules import RULES, prometheus

    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)

    def restore_test(ok: bool) -> None:
        path = backups / "restore-test.json"
        path.write_text(json.dumps({"version": 1, "backup": "supervisor-20260101T000000Z.db", "timestamp": time.time(),
                                    "ok": ok, "reasons": [] if ok else ["integrity_check: malformed"]}))
        path.chmod(0o600)

    restore_test(False)
    inv = tmp_path / "hosts.yml"
    sup = make_supervisor(backup={"dir": str(backups), "check_interval_sec": 1}, alerts={"token": ALERT_TOKEN},
                          remediation={"inventory": str(inv)}).start()
    config = am.receiver_config(sup.api + "/api/v1/alerts", _token_file(tmp_path / "t", ALERT_TOKEN),
                                group_by=["alertname", "incident"])
    with am.running(tmp_path / "am", config) as mgr:
        prom_cfg = tmp_path / "prometheus.yml"
        prom_cfg.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [mgr.url.removeprefix("http://")]}]}]},
            "scrape_configs": [{"job_name": "hal-supervisor",
                                "static_configs": [{"targets": [sup.api.removeprefix("http://")]}]}]}))
        with prometheus(prom_cfg, tmp_path / "prom-data"):
            def routed() -> list[dict[str, Any]]:
                return [r for r in _audit(sup) if r["args"]["alertname"] == "HalRestoreTestFailed"]

            try:
                (row,) = await until(routed, "HalRestoreTestFailed from Prometheus audited", 120, interval=1)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{mgr.log_tail()}") from None
            assert (row["target"], row["result"], row["args"]["status"]) == ("lost-session-data", "routed", "firing")
            assert row["args"]["command"] == f"halctl remediate lost-session-data -i {inv} --limit hal_supervisors"
            restore_test(True)
            await until(lambda: any(r["result"] == "resolved" for r in routed()), "the alert resolved", 120,
                        interval=1)
