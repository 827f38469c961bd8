"""Alertmanager payload parsing and alert -> incident/host mapping (pure, on captured-style fixtures)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from halswarm.core.alerts import (
    MAX_LABELS,
    AlertPayloadError,
    Ignored,
    Mapped,
    host_of,
    map_payload,
    parse_payload,
    remediate_command,
    run_target,
)
from halswarm.core.remediation.catalog import IDS

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "alertmanager"


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return doc


def test_firing_fixture_maps_to_its_incident_and_node() -> None:
    payload = parse_payload(_load("firing_agent_crashed.json"))
    assert payload.status == "firing" and payload.receiver == "hal-supervisor" and len(payload.alerts) == 1
    (m,) = map_payload(payload, IDS)
    assert isinstance(m, Mapped) and (m.incident, m.host) == ("agent-crashed", "alert-node")


def test_grouped_payload_is_handled_per_alert_deduped_by_fingerprint() -> None:
    out = map_payload(parse_payload(_load("grouped_mixed.json")), IDS)
    assert len(out) == 2  # the repeated fingerprint counts once
    mapped, ignored = out
    assert isinstance(mapped, Mapped) and (mapped.incident, mapped.host) == ("agent-high-memory", "worker-2.example")
    assert isinstance(ignored, Ignored) and ignored.reason == "unknown incident 'disk-on-fire'"


def test_resolved_fixture_keeps_its_status() -> None:
    (m,) = map_payload(parse_payload(_load("resolved_agent_crashed.json")), IDS)
    assert isinstance(m, Mapped) and m.alert.status == "resolved" and m.alert.ends_at.startswith("2026-12-07")


@pytest.mark.parametrize(("labels", "want"), [
    ({"node": "n-1", "instance": "other:9100"}, ("n-1", None)),
    ({"instance": "host.example:9100"}, ("host.example", None)),
    ({"instance": "host.example"}, ("host.example", None)),
    ({}, (None, None)),
    ({"node": "../etc/passwd"}, (None, "host '../etc/passwd' is not a node id or inventory host name")),
    ({"node": "a;rm -rf /"}, (None, "host 'a;rm -rf /' is not a node id or inventory host name")),
    ({"node": "all:!x"}, (None, "host 'all:!x' is not a node id or inventory host name")),
    ({"instance": "[::1]:9100"}, (None, "host '[::1]:9100' is not a node id or inventory host name")),
    ({"node": "web*"}, (None, "host 'web*' is not a node id or inventory host name")),
])
def test_host_comes_from_node_or_instance_and_is_never_a_pattern_or_path(labels: dict[str, str],
                                                                         want: tuple[str | None, str | None]) -> None:
    assert host_of(labels) == want


def test_alert_with_bad_host_or_no_incident_is_ignored_not_fatal() -> None:
    doc = _load("firing_agent_crashed.json")
    second = copy.deepcopy(doc["alerts"][0])
    second["labels"]["node"] = "x y"
    second["fingerprint"] = "1111111111111111"
    third = copy.deepcopy(second)
    del third["labels"]["incident"]
    third["fingerprint"] = "2222222222222222"
    doc["alerts"] += [second, third]
    first, bad_host, no_incident = map_payload(parse_payload(doc), IDS)
    assert isinstance(first, Mapped)
    assert isinstance(bad_host, Ignored) and "not a node id" in bad_host.reason
    assert isinstance(no_incident, Ignored) and no_incident.reason == "no incident label"


def _mutations() -> list[tuple[str, Any, str]]:
    return [
        ("version", "3", "version: must be \"4\""),
        ("alerts", {}, "alerts: must be a list"),
        ("status", "pending", "status: must be 'firing' or 'resolved'"),
        ("receiver", 7, "receiver: must be a string"),
        ("truncatedAlerts", -1, "truncatedAlerts: must be an integer >= 0"),
        ("commonLabels", {"a": 1}, "commonLabels.a: must be a string"),
        ("groupKey", "k" * 5000, "groupKey: longer than 2048 characters"),
    ]


@pytest.mark.parametrize(("key", "value", "message"), _mutations())
def test_malformed_payloads_name_the_first_problem_in_one_line(key: str, value: Any, message: str) -> None:
    doc = _load("firing_agent_crashed.json")
    doc[key] = value
    with pytest.raises(AlertPayloadError) as info:
        parse_payload(doc)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda a: a.update(status="weird"), "alerts[0].status"),
    (lambda a: a["labels"].update({"bad-name": "x"}), "alerts[0].labels: invalid name 'bad-name'"),
    (lambda a: a["labels"].update({"node": "v" * 2000}), "alerts[0].labels.node: longer than 1024"),
    (lambda a: a["labels"].update({f"l{i}": "x" for i in range(MAX_LABELS)}), f"more than {MAX_LABELS} entries"),
    (lambda a: a.update(annotations=["x"]), "alerts[0].annotations: must be an object"),
])
def test_malformed_alerts_are_refused(mutate: Any, message: str) -> None:
    doc = _load("firing_agent_crashed.json")
    mutate(doc["alerts"][0])
    with pytest.raises(AlertPayloadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_payload(doc)


def test_alert_count_is_bounded() -> None:
    doc = _load("firing_agent_crashed.json")
    doc["alerts"] = doc["alerts"] * 4
    with pytest.raises(AlertPayloadError, match="more than 3 in one request"):
        parse_payload(doc, max_alerts=3)
    for body in (None, [], "x"):
        with pytest.raises(AlertPayloadError, match="body must be a JSON object"):
            parse_payload(body)


def test_run_target_and_command() -> None:
    assert run_target("hal_agents", "n-1", "sup") == ("n-1", "n-1")
    assert run_target("hal_agents", None, "sup") == "no node or instance label: the remediation needs a host"
    assert run_target("hal_supervisors", "whatever", None) == ("hal_supervisors", "hal_supervisors")
    assert run_target("hal_supervisors", None, "sup-1") == ("sup-1", "sup-1")
    assert remediate_command("agent-crashed", "/etc/hal o/hosts.ini", "n-1") == \
        "halctl remediate agent-crashed -i '/etc/hal o/hosts.ini' --limit n-1"
    assert remediate_command("agent-crashed", None, None) == "halctl remediate agent-crashed -i INVENTORY"
