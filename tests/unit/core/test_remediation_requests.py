"""The request files the unprivileged supervisor writes for root (core.remediation.requests): only the
fixed schema, only an allowlisted incident, only fresh; everything else refused with one line."""

from __future__ import annotations

import json

import pytest

from halswarm.core.remediation.planners import plan
from halswarm.core.remediation.requests import (
    DB_CORRUPTION,
    MAX_AGE_SECONDS,
    REQUESTABLE,
    RESTARTS_SUPERVISOR,
    RequestError,
    cost_facts,
    encode_request,
    needs_root_runner,
    parse_request,
    plan_restarts_supervisor,
    request_file_name,
    valid_file_name,
)

NOW = 1_800_000_000.0


def body(**doc: object) -> bytes:
    return json.dumps({"schema": 1, "incident": DB_CORRUPTION, "requested_at": NOW, **doc}).encode()


def test_what_the_supervisor_writes_is_accepted() -> None:
    req = parse_request(encode_request(DB_CORRUPTION, NOW), NOW + 5)
    assert (req.incident, req.requested_at) == (DB_CORRUPTION, NOW)
    assert valid_file_name(request_file_name(DB_CORRUPTION, NOW))


@pytest.mark.parametrize(("raw", "why"), [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "exactly schema, incident and requested_at"),
    (body(extra="x"), "exactly schema, incident and requested_at"),
    (json.dumps({"schema": 1, "incident": DB_CORRUPTION}).encode(), "exactly"),
    (body(schema=2), "unknown request schema"),
    (body(schema=True), "unknown request schema"),
    (body(incident="agent-crashed"), "is not one a request may start"),
    (body(incident="supervisor-db-corruption; rm -rf /"), "is not one a request may start"),
    (body(incident=["supervisor-db-corruption"]), "is not one a request may start"),
    (body(requested_at="now"), "must be a number"),
    (body(requested_at=True), "must be a number"),
    (body(requested_at=NOW + 3600), "in the future"),
    (body(requested_at=NOW - MAX_AGE_SECONDS - 1), "stale"),
    (body(incident="x" * 600), "larger than"),
])
def test_anything_else_is_refused_with_one_line(raw: bytes, why: str) -> None:
    with pytest.raises(RequestError, match=why) as exc:
        parse_request(raw, NOW)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 200


def test_nan_is_not_a_time() -> None:
    with pytest.raises(RequestError, match="must be a number"):
        parse_request(b'{"schema": 1, "incident": "supervisor-db-corruption", "requested_at": NaN}', NOW)


def test_only_allowlisted_incidents_can_be_encoded() -> None:
    with pytest.raises(RequestError):
        encode_request("agent-crashed", NOW)


@pytest.mark.parametrize("name", [".supervisor-db-corruption-1.json.12.tmp", "../x.json", "a/b.json", "x.txt",
                                  "", "X.json", "a" * 80 + ".json"])
def test_file_names_we_never_write_are_refused(name: str) -> None:
    assert not valid_file_name(name)


# ----- where a run goes: the supervisor's child, or the root runner -----

COST = "cost-data-discrepancy"
HEALTHY = {"running": True, "poll_interval_s": 3600, "providers_configured": ["openai"], "last_update_age_s": 60.0,
           "missing_dates": [], "degraded_providers": []}


def test_the_allowlist_is_the_always_restarting_set_plus_cost() -> None:
    assert {COST} | RESTARTS_SUPERVISOR == REQUESTABLE
    assert COST not in RESTARTS_SUPERVISOR
    assert parse_request(encode_request(COST, NOW), NOW).incident == COST
    for other in ("agent-crashed", "agent-high-memory", "manual-auth-required", "credential-drift",
                  "collect-diagnostics", "agent-cannot-connect"):
        with pytest.raises(RequestError, match="is not one a request may start"):
            parse_request(body(incident=other), NOW)


@pytest.mark.parametrize("incident", sorted(RESTARTS_SUPERVISOR))
def test_supervisor_restarting_incidents_always_go_to_root(incident: str) -> None:
    assert needs_root_runner(incident, None) and needs_root_runner(incident, cost_facts(HEALTHY))


@pytest.mark.parametrize(("health", "root"), [
    (HEALTHY, False),                                                   # not present: nothing restarts
    (HEALTHY | {"degraded_providers": ["openai"]}, False),             # re-poll only (the built-in trigger)
    (HEALTHY | {"last_update_age_s": None, "missing_dates": ["2026-12-01"]}, False),  # re-poll + back-fill
    (HEALTHY | {"running": False}, True),                               # aggregator down: restart planned
    (HEALTHY | {"running": False, "degraded_providers": ["openai"]}, True),
    ({"running": False, "providers_configured": []}, False),            # no provider: not present
])
def test_cost_goes_to_root_exactly_when_its_plan_restarts_the_supervisor(health: dict, root: bool) -> None:
    facts = cost_facts(health)
    assert needs_root_runner(COST, facts) is root
    planned = [a["name"] for a in plan(COST, facts).to_dict()["actions"]]
    assert ("restart_service" in planned) is root


def test_unknown_cost_facts_go_to_root_and_agent_incidents_never() -> None:
    assert needs_root_runner(COST, None)
    assert not needs_root_runner("agent-crashed", None) and not needs_root_runner("agent-high-memory", {})


def test_only_a_restart_of_the_supervisor_unit_counts() -> None:
    unit = {"unit": "hal-supervisor.service"}
    assert plan_restarts_supervisor({"actions": [{"name": "restart_service", "params": unit}]})
    assert plan_restarts_supervisor({"actions": [{"name": "stop_service", "params": unit}]})
    agent = {"unit": "hal-agent.service"}
    assert not plan_restarts_supervisor({"actions": [{"name": "restart_service", "params": agent}]})
    assert not plan_restarts_supervisor({"actions": [{"name": "force_repoll", "params": {}}]})
    assert not plan_restarts_supervisor({})
