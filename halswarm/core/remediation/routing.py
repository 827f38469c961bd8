"""The one rule by which a stored remediation report becomes a routed event (SPEC 8).

Both ways a report reaches the supervisor use it: ``POST /api/v1/remediations`` and the automatic runs
of `remediation.auto`. Pure: a report in, (event type, log level, payload) out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

# Statuses that route as remediation.escalated (the run did not end well); the rest as remediation.completed.
ESCALATING = ("failed", "escalated")
COMPLETED = "remediation.completed"
ESCALATED = "remediation.escalated"
FAILED = "remediation.failed"  # an automatic run that produced no report (its failure was recorded instead)
MAX_ID = 100
_ESCALATION_KEYS = ("bundle", "sha256", "size", "collected_at", "error")


def event_payload(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the routed event carries of a (validated) report: the summary, never facts or actions."""
    data: dict[str, Any] = {
        "id": str(report["id"])[:MAX_ID], "incident": report["incident"], "severity": report["severity"],
        "status": report["status"], "decision": report["decision"], "hosts": [str(h) for h in report["hosts"]],
        "check": report["check"], "duration_s": report["duration_s"], "error": report.get("error"),
    }
    escalation = report.get("escalation")
    if isinstance(escalation, Mapping):
        data["escalation"] = {k: escalation.get(k) for k in _ESCALATION_KEYS}
    return data


def route(report: Mapping[str, Any], *, produced: bool = True) -> tuple[str, int, dict[str, Any]]:
    """(event type, log level, payload) of a stored report. `produced` is False for the failure report
    the supervisor wrote itself because a run gave none: that is ``remediation.failed``."""
    if not produced:
        return FAILED, logging.ERROR, event_payload(report)
    if report["status"] in ESCALATING:
        return ESCALATED, logging.WARNING, event_payload(report)
    return COMPLETED, logging.INFO, event_payload(report)


def event_node(hosts: Sequence[Any]) -> str | None:
    """The node an event is about: the one host of a single-host run, else none (fleet-wide)."""
    return str(hosts[0]) if len(hosts) == 1 else None
