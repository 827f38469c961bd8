"""The report of one `halctl remediate` run, from the per-host results its playbook wrote (pure).

The playbook writes, per host, ``facts``, the planner's ``plan`` (decision, present, reasons, guidance,
verify, actions), the ``actions`` it took, ``verified`` and ``verification`` details, and an ``error``.
`report_from_result` folds them into one report (facts in, report out); each rule is a small function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from halswarm.core.remediation.catalog import get
from halswarm.core.remediation.report import build_report, decide_status

Hosts = Mapping[str, Mapping[str, Any]]
Plans = Mapping[str, Mapping[str, Any]]
MANUAL_DECISIONS = ("manual", "escalate")


def host_results(result: Mapping[str, Any] | None) -> Hosts:
    """The per-host results of the playbook's result file (none when it wrote nothing)."""
    return (result or {}).get("hosts") or {}


def plans_of(hosts: Hosts) -> dict[str, Mapping[str, Any]]:
    return {h: r.get("plan") or {} for h, r in hosts.items()}


def present_hosts(plans: Plans) -> list[str]:
    """Hosts on which the planner found the symptom."""
    return [h for h, p in plans.items() if p.get("present")]


def overall_decision(plans: Plans) -> str:
    """``present`` on any host, ``not_present`` when every host said so, else ``unknown``."""
    if present_hosts(plans):
        return "present"
    decisions = {str(p.get("decision", "unknown")) for p in plans.values()}
    return "not_present" if decisions == {"not_present"} else "unknown"


def needs_manual(plans: Plans) -> bool:
    """A planner asked for a person (manual step or escalation): the run is not a success."""
    return any(p.get("decision") in MANUAL_DECISIONS for p in plans.values())


def actions_taken(hosts: Hosts, plans: Plans, *, check: bool) -> list[dict[str, Any]]:
    """Every host's actions (those it reports, else its plan's), each with its host and a result."""
    default = "planned" if check else "done"
    return [dict(a) | {"host": h, "result": a.get("result", default)}
            for h, r in hosts.items() for a in (r.get("actions") or plans[h].get("actions") or [])]


def all_verified(hosts: Hosts, present: list[str]) -> bool:
    """The symptom was somewhere, and every such host verified its repair."""
    return bool(present) and all(hosts[h].get("verified") is True for h in present)


def run_error(incident_id: str, hosts: Hosts, *, run_ok: bool, decision: str, manual: bool) -> str | None:
    """Why the run as a whole did not succeed, the first reason that applies (None: no such reason)."""
    if not run_ok:
        return "the playbook failed (see the run artifacts)"
    if not hosts:
        return (f"no result: no host of the inventory is in group {get(incident_id).hosts!r} "
                "(or the playbook stopped before its report)")
    if decision == "unknown":
        return "facts incomplete: could not decide whether the symptom is present"
    if manual:
        return "manual action required (see guidance)"
    return None


def with_host_errors(error: str | None, hosts: Hosts) -> str | None:
    """`error` followed by each host's own error (``host: message``)."""
    host_errors = [f"{h}: {r['error']}" for h, r in hosts.items() if r.get("error")]
    if not host_errors:
        return error
    return "; ".join(([error] if error else []) + host_errors)


def merged_plan(plans: Plans, decision: str) -> dict[str, Any]:
    """One plan for the report: the decision, every host's reasons (prefixed by host), guidance, checks."""
    return {"decision": decision,
            "reasons": [f"{h}: {r}" for h, p in plans.items() for r in p.get("reasons", [])],
            "guidance": [g for p in plans.values() for g in p.get("guidance", [])],
            "verify": sorted({v for p in plans.values() for v in p.get("verify", [])})}


def verification_block(hosts: Hosts, present: list[str], checks: list[str], *, verified: bool,
                       check: bool) -> dict[str, Any]:
    """What was checked after the repair: passed is None when nothing was repaired (or --check)."""
    return {"checks": checks, "passed": verified if present and not check else None,
            "hosts": {h: hosts[h].get("verified") for h in present},
            "details": {h: hosts[h]["verification"] for h in present if hosts[h].get("verification")}}


def run_status(*, check: bool, decision: str, error: str | None, run_ok: bool, manual: bool,
               verified: bool) -> str:
    """The report status: an error means the symptom counts as present and nothing counts as verified."""
    clean = error is None
    return decide_status(check=check and clean, present=decision != "not_present" or not clean,
                         resolve_ok=run_ok and not manual, verified=verified and clean)


def report_from_result(incident_id: str, result: Mapping[str, Any] | None, *, check: bool, started: float,
                       finished: float, run_ok: bool, run_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Aggregate the playbook's per-host results into one report (SPEC 8)."""
    hosts = host_results(result)
    plans = plans_of(hosts)
    present = present_hosts(plans)
    decision = overall_decision(plans)
    manual = needs_manual(plans)
    verified = all_verified(hosts, present)
    error = with_host_errors(run_error(incident_id, hosts, run_ok=run_ok, decision=decision, manual=manual), hosts)
    plan = merged_plan(plans, decision)
    return build_report(
        incident_id, hosts=list(hosts), facts={h: r.get("facts", {}) for h, r in hosts.items()}, plan=plan,
        status=run_status(check=check, decision=decision, error=error, run_ok=run_ok, manual=manual,
                          verified=verified),
        started=started, finished=finished, check=check, actions_done=actions_taken(hosts, plans, check=check),
        verification=verification_block(hosts, present, plan["verify"], verified=verified, check=check),
        error=error, run=run_info)
