"""The one rule "stored remediation report -> routed event" (pure; used by the HTTP API and the engine)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from halswarm.core.remediation.routing import ESCALATING, event_node, event_payload, route

REPORT: dict[str, Any] = {
    "id": "r" * 120, "incident": "agent-crashed", "severity": "Critical", "status": "verified",
    "decision": "present", "hosts": ["n1"], "check": False, "duration_s": 2.5, "error": None,
    "facts": {"n1": {"agent": {"token": "***"}}}, "actions": [{"name": "restart_service"}],
}


@pytest.mark.parametrize(("status", "ev_type", "level"), [
    ("verified", "remediation.completed", logging.INFO),
    ("not_present", "remediation.completed", logging.INFO),
    ("check", "remediation.completed", logging.INFO),
    ("failed", "remediation.escalated", logging.WARNING),
    ("escalated", "remediation.escalated", logging.WARNING),
])
def test_status_decides_the_event(status: str, ev_type: str, level: int) -> None:
    assert route(REPORT | {"status": status})[:2] == (ev_type, level)
    assert (status in ESCALATING) == (ev_type == "remediation.escalated")


def test_no_report_from_the_run_is_remediation_failed_whatever_the_status() -> None:
    ev_type, level, data = route(REPORT | {"status": "failed", "error": "timed out"}, produced=False)
    assert (ev_type, level, data["error"]) == ("remediation.failed", logging.ERROR, "timed out")


def test_payload_is_the_summary_only() -> None:
    _, _, data = route(REPORT)
    assert data == {"id": "r" * 100, "incident": "agent-crashed", "severity": "Critical", "status": "verified",
                    "decision": "present", "hosts": ["n1"], "check": False, "duration_s": 2.5, "error": None}


def test_escalation_block_is_reduced_to_its_public_keys() -> None:
    esc = {"bundle": "/b.tgz", "sha256": "ab", "size": 3, "collected_at": "t", "secret_scan": {"passed": True}}
    data = event_payload(REPORT | {"status": "escalated", "escalation": esc})
    assert data["escalation"] == {"bundle": "/b.tgz", "sha256": "ab", "size": 3, "collected_at": "t", "error": None}
    assert "escalation" not in event_payload(REPORT | {"escalation": "not a block"})


def test_event_node_is_the_one_host_else_fleet_wide() -> None:
    assert event_node(["n1"]) == "n1"
    assert event_node(["n1", "n2"]) is None and event_node([]) is None
