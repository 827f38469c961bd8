"""The JSON report of one remediation run (SPEC 8): pure builder, validator and status rules.

``status``: ``verified`` (symptom was present, repaired, post-condition holds), ``not_present`` (decide
found nothing to do; nothing changed), ``check`` (``--check``: the plan only, nothing changed),
``failed`` (a step or the verification failed, or a manual step is required), ``escalated`` (failed and
the diagnostics bundle was collected / the escalation event sent). Only ``verified`` and ``not_present``
and ``check`` exit 0: a repair exits 0 only when verified; ``not_present`` means the decide phase found
the system healthy (nothing to repair) and ``check`` changed nothing by design.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from halswarm.core.remediation.catalog import get
from halswarm.core.secret_values import SECRETS

STATUSES = ("verified", "not_present", "failed", "escalated", "check")
SUCCESS = ("verified", "not_present", "check")
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str, "incident": str, "severity": str, "response_time": str, "hosts": list, "facts": dict,
    "decision": str, "actions": list, "verification": dict, "duration_s": (int, float), "status": str,
    "started_at": str, "finished_at": str, "check": bool,
}
SECRET_KEYS = ("token", "secret", "password", "api_key", "apikey", "authorization", "private_key")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def redact(value: Any) -> Any:
    """Mask values under secret-looking keys, recursively (facts may carry config snippets), and the
    process's known secret values wherever they appear (a log excerpt, a command line)."""
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if isinstance(value, Mapping):
        return {str(k): ("***" if any(s in str(k).lower() for s in SECRET_KEYS) and v not in (None, "")
                         and not isinstance(v, bool) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def decide_status(*, check: bool, present: bool, resolve_ok: bool, verified: bool, escalated: bool = False) -> str:
    if not present:
        return "not_present"
    if check:
        return "check"
    if resolve_ok and verified:
        return "verified"
    return "escalated" if escalated else "failed"


def build_report(
    incident: str,
    *,
    hosts: Sequence[str],
    facts: Mapping[str, Any],
    plan: Mapping[str, Any],
    status: str,
    started: float,
    finished: float | None = None,
    check: bool = False,
    actions_done: Sequence[Mapping[str, Any]] | None = None,
    verification: Mapping[str, Any] | None = None,
    error: str | None = None,
    run: Mapping[str, Any] | None = None,
    escalation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    inc = get(incident)
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    finished = time.time() if finished is None else finished
    actions = list(actions_done) if actions_done is not None else [
        dict(a) | {"result": "planned" if check else "not_run"} for a in plan.get("actions", [])]
    report: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "incident": inc.id,
        "section": inc.section,
        "severity": inc.severity,
        "response_time": inc.response_time,
        "hosts": sorted({str(h) for h in hosts}),
        "check": bool(check),
        "facts": redact(dict(facts)),
        "decision": str(plan.get("decision", "unknown")),
        "reasons": list(plan.get("reasons", [])),
        "guidance": list(plan.get("guidance", [])),
        "actions": redact(actions),
        "verification": dict(verification or {"checks": list(plan.get("verify", [])), "passed": None}),
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_s": round(max(0.0, finished - started), 3),
        "status": status,
    }
    if error:
        report["error"] = error
    if run:
        report["run"] = dict(run)
    if escalation:
        report["escalation"] = dict(escalation)
    return report


def validate_report(report: Any) -> list[str]:
    """Problems with a report (empty list: valid). Used by the supervisor before storing one."""
    if not isinstance(report, Mapping):
        return ["report must be an object"]
    problems = [f"{k}: missing" for k in REQUIRED if k not in report]
    for k, t in REQUIRED.items():
        v = report.get(k)
        if k in report and (not isinstance(v, t) or (isinstance(v, bool) and t is not bool)):
            problems.append(f"{k}: wrong type")
    if report.get("status") not in STATUSES:
        problems.append(f"status: must be one of {', '.join(STATUSES)}")
    try:
        get(str(report.get("incident", "")))
    except KeyError:
        problems.append("incident: unknown")
    return problems


def exit_code(report: Mapping[str, Any]) -> int:
    return 0 if report.get("status") in SUCCESS else 1
