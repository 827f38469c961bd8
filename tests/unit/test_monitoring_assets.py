"""The alert rules and the dashboard shipped by halswarm.ops.monitoring, read as data (issue 18 points 2-3):
every alert names a real runbook incident with that incident's severity, carries the labels
POST /api/v1/alerts maps and the exact `halctl remediate` command; every rule has a promtool test case
that fires it next to a series that stays quiet; the dashboard is a Grafana JSON model whose panels all
query the datasource variable; docs/monitoring.md lists every rule."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from halswarm.core.alerts import HOST_PATTERN, SUPERVISORS_GROUP
from halswarm.core.remediation import catalog

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "collections/ansible_collections/halswarm/ops/roles/monitoring/files"
RULES = FILES / "hal-o-swarm.rules.yml"
RULE_TESTS = FILES / "hal-o-swarm.rules.test.yml"
DASHBOARD = FILES / "hal-o-swarm.dashboard.json"
DOCS = ROOT / "docs/monitoring.md"
# Labels that tell one series (and so one alert) from another in the rule tests.
IDENTITY = ("instance", "node", "provider", "route", "reason")
SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')
# The runbook incidents whose prevention lists have a line a metric can watch (the others are procedures).
WATCHED = {"supervisor-crashed", "supervisor-high-memory", "supervisor-db-corruption", "agent-cannot-connect",
           "agent-high-memory", "agent-crashed", "supervisor-unreachable", "high-latency", "lost-session-data",
           "cost-data-discrepancy"}


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    m = SERIES.match(text.strip())
    assert m, f"not a series selector: {text}"
    return m.group(1), dict(LABEL.findall(m.group(2)))


def test_every_alert_names_a_runbook_incident_with_its_severity() -> None:
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules():
        labels, notes = rule["labels"], rule["annotations"]
        incident = catalog.get(labels["incident"])
        assert incident.id == labels["incident"], rule["alert"]
        assert labels["severity"] == incident.severity.lower(), (rule["alert"], incident.severity)
        assert {"summary", "description", "runbook_command"} <= set(notes), rule["alert"]
        command = f"halctl remediate {incident.id}"
        if incident.hosts == SUPERVISORS_GROUP:  # run on the supervisor, never with --limit
            assert notes["runbook_command"] == command, rule["alert"]
        else:
            assert notes["runbook_command"] in (command, command + " --limit {{ $labels.node }}"), rule["alert"]
    assert {r["labels"]["incident"] for r in rules()} == WATCHED


def test_per_node_alerts_keep_the_node_label_the_receiver_maps() -> None:
    """Rules over per-node series carry `node` through (no aggregation drops it), so POST /api/v1/alerts
    gets a host; the test cases expect it on the alert."""
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    for rule in rules():
        if "--limit" not in rule["annotations"]["runbook_command"]:
            continue
        expected = [a["exp_labels"] for case in cases for t in case["alert_rule_test"]
                    if t["alertname"] == rule["alert"] for a in t.get("exp_alerts") or []]
        assert expected and all(HOST_PATTERN.match(labels.get("node", "")) for labels in expected), rule["alert"]


def test_every_rule_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())
    assert cases["rule_files"] == [RULES.name]
    covered: set[str] = set()
    for case in cases["tests"]:
        identities = set()
        for item in case["input_series"]:
            _, labels = parse_series(item["series"])
            identities.add(tuple((k, labels.get(k)) for k in IDENTITY))
        for check in case["alert_rule_test"]:
            fired = check.get("exp_alerts") or []
            if not fired:
                continue
            covered.add(check["alertname"])
            keys = {k for a in fired for k in a["exp_labels"] if k in IDENTITY}
            firing = {tuple((k, a["exp_labels"].get(k)) for k in IDENTITY if k in keys) for a in fired}
            quiet = {tuple((k, v) for k, v in ident if k in keys) for ident in identities} - firing
            assert quiet, f"{case['name']}: no series that must stay quiet for {check['alertname']}"
            for alert in fired:
                assert alert["exp_annotations"]["runbook_command"].startswith("halctl remediate ")
    assert covered == {r["alert"] for r in rules()}, "rules without a firing test case"


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def test_dashboard_is_a_grafana_model_on_a_datasource_variable() -> None:
    doc = dashboard()
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    assert doc["title"] and doc["uid"] and "id" not in doc  # importable anywhere (no instance-local id)
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids, cells = set(), set()
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    for panel in doc["panels"]:
        assert panel["id"] not in ids, panel["title"]
        ids.add(panel["id"])
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}", panel["title"]
    text = json.dumps(doc)
    for area in ("node_up", "node_connected", "events_total", "event_processing_duration_seconds",
                 "http_request_duration_seconds", "sessions_active", "cost_polls_total",
                 "supervisor_resident_memory_bytes", "agent_memory_max_bytes", "hal_backup_", "hal_restore_test_",
                 "remediations_total", "remediation_duration_seconds"):
        assert area in text, f"the dashboard shows nothing of {area}"


@pytest.mark.parametrize("alert", [r["alert"] for r in rules()])
def test_docs_map_each_rule(alert: str) -> None:
    text = DOCS.read_text()
    assert "## Alert rules and dashboard" in text
    section = text.split("## Alert rules and dashboard", 1)[1]
    assert f"`{alert}`" in section, f"{alert} missing from the mapping in docs/monitoring.md"
