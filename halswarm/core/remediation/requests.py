"""Remediation request files: how the unprivileged supervisor asks root to run a remediation.

The supervisor (a non-root service with NoNewPrivileges) cannot start a root unit. At start, on a
database that fails its check, it writes one small JSON document into a directory it owns; a root
systemd ``.path`` unit starts a oneshot service that validates it here and runs a fixed command line.
A firing alert for another incident whose repair restarts the supervisor takes the same path, and so does
`cost-data-discrepancy` when its plan restarts the supervisor (`needs_root_runner`). Nothing in a
request is ever used as a command: the only value taken from it is an incident id, and only when it is in
`REQUESTABLE` (and, checked by the runner, in `remediation.auto`). Pure: bytes in, a verdict out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from halswarm.core.remediation.planners import plan

DB_CORRUPTION = "supervisor-db-corruption"
COST_DISCREPANCY = "cost-data-discrepancy"
SUPERVISOR_UNIT = "hal-supervisor.service"
# Incidents whose repair always stops or restarts hal-supervisor, so a run the supervisor started itself (its
# child, in its cgroup) would die with it.
RESTARTS_SUPERVISOR = frozenset({DB_CORRUPTION, "supervisor-crashed", "supervisor-high-memory", "high-latency",
                                 "supervisor-unreachable", "lost-session-data"})
# Incidents whose plan restarts hal-supervisor only on some facts (`cost-data-discrepancy`: when the cost
# aggregator is not running); the supervisor plans them first (`needs_root_runner`).
RESTARTS_SUPERVISOR_WHEN_PLANNED = frozenset({COST_DISCREPANCY})
# The incidents a request may name. The root runner also requires the incident to be listed in the supervisor
# config's `remediation.auto`.
REQUESTABLE = RESTARTS_SUPERVISOR | RESTARTS_SUPERVISOR_WHEN_PLANNED
SCHEMA = 1
MAX_BYTES = 512
# A request older than this is stale (the condition it reported may be gone); one from the future is forged
# or a clock jump.
MAX_AGE_SECONDS = 3600.0
CLOCK_SKEW_SECONDS = 300.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\.json$")


@dataclass(frozen=True)
class Request:
    incident: str
    requested_at: float


class RequestError(ValueError):
    """A request file that must not be acted on (one line, safe to log)."""


def encode_request(incident: str, now: float) -> bytes:
    """The file body the supervisor writes (fixed schema)."""
    if incident not in REQUESTABLE:
        raise RequestError(f"incident {incident!r} cannot be requested")
    return json.dumps({"schema": SCHEMA, "incident": incident, "requested_at": round(now, 3)},
                      sort_keys=True).encode() + b"\n"


def request_file_name(incident: str, now: float) -> str:
    return f"{incident}-{int(now)}.json"


def valid_file_name(name: str) -> bool:
    """Only plain names we would have written (no dot files, no temporaries, no path parts)."""
    return bool(_NAME.match(name))


def parse_request(body: bytes, now: float) -> Request:
    """The request in `body`, or RequestError saying why it is refused."""
    if len(body) > MAX_BYTES:
        raise RequestError(f"request larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RequestError("request is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"schema", "incident", "requested_at"}:
        raise RequestError("request must hold exactly schema, incident and requested_at")
    if doc["schema"] != SCHEMA or isinstance(doc["schema"], bool):
        raise RequestError(f"unknown request schema {doc['schema']!r}")
    incident, at = doc["incident"], doc["requested_at"]
    if not isinstance(incident, str) or incident not in REQUESTABLE:
        raise RequestError(f"incident {str(incident)[:80]!r} is not one a request may start "
                           f"(only the {len(REQUESTABLE)} whose repair may restart the supervisor)")
    if isinstance(at, bool) or not isinstance(at, int | float) or at != at:
        raise RequestError("requested_at must be a number (epoch seconds)")
    if at > now + CLOCK_SKEW_SECONDS:
        raise RequestError(f"requested_at is {at - now:.0f} s in the future")
    if now - at > MAX_AGE_SECONDS:
        raise RequestError(f"request is stale ({now - at:.0f} s old, limit {MAX_AGE_SECONDS:.0f} s)")
    return Request(incident, float(at))


def plan_restarts_supervisor(plan: Mapping[str, Any]) -> bool:
    """Whether a plan (`planners.Plan.to_dict()`) restarts or stops hal-supervisor."""
    for action in plan.get("actions") or []:
        params = action.get("params") or {}
        if action.get("name") in ("restart_service", "stop_service") and params.get("unit") == SUPERVISOR_UNIT:
            return True
    return False


def needs_root_runner(incident: str, facts: Mapping[str, Any] | None) -> bool:
    """Whether `incident` must be handed to the root runner instead of run as the supervisor's child: always
    for `RESTARTS_SUPERVISOR`; for `RESTARTS_SUPERVISOR_WHEN_PLANNED` when the pure planner, fed the
    supervisor's own `facts` (the playbook's diagnose facts), plans a restart of the supervisor. Facts that
    are missing (None) count as a restart: the root runner can run what the child could, not the reverse."""
    if incident in RESTARTS_SUPERVISOR:
        return True
    if incident not in RESTARTS_SUPERVISOR_WHEN_PLANNED:
        return False
    if facts is None:
        return True
    return plan_restarts_supervisor(plan(incident, dict(facts)).to_dict())


def cost_facts(health: Mapping[str, Any]) -> dict[str, Any]:
    """The `cost-data-discrepancy` planner's facts from the supervisor's own cost health (what
    ``GET /api/v1/cost/status`` answers), mapped as the playbook's diagnose does."""
    return {"api_reachable": True, "providers_configured": list(health.get("providers_configured") or []),
            "poll_interval_s": health.get("poll_interval_s", 3600),
            "last_update_age_s": health.get("last_update_age_s"),
            "missing_dates": list(health.get("missing_dates") or []),
            "degraded_providers": list(health.get("degraded_providers") or []),
            "aggregator_running": bool(health.get("running"))}
