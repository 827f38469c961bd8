"""Schema-like tests of the remediation report builder."""

from __future__ import annotations

import json

import pytest

from halswarm.core.remediation import catalog
from halswarm.core.remediation.planners import plan
from halswarm.core.remediation.report import (
    REQUIRED,
    STATUSES,
    build_report,
    decide_status,
    exit_code,
    validate_report,
)

DEAD = {"load_state": "loaded", "active_state": "failed", "sub_state": "failed", "n_restarts": 2}


def _report(status: str = "verified", **kw: object) -> dict:
    facts = {"supervisor": DEAD, "config": {"auth_token": "s3cret", "port": 8420}}
    p = plan("supervisor-crashed", facts).to_dict()
    return build_report("supervisor-crashed", hosts=["h2", "h1", "h1"], facts=facts, plan=p, status=status,
                        started=1000.0, finished=1002.5, **kw)  # type: ignore[arg-type]


def test_report_has_every_field_and_validates() -> None:
    r = _report()
    assert set(REQUIRED) <= set(r)
    assert validate_report(r) == []
    assert r["severity"] == "Critical" and r["response_time"] == "< 5 min"
    assert r["hosts"] == ["h1", "h2"]
    assert r["duration_s"] == 2.5
    assert r["started_at"].endswith("Z")
    assert r["decision"] == "present"
    assert [a["name"] for a in r["actions"]] == ["restart_service"]
    json.dumps(r)  # serialisable


def test_secrets_are_redacted() -> None:
    r = _report()
    assert r["facts"]["config"]["auth_token"] == "***"
    assert r["facts"]["config"]["port"] == 8420
    assert "s3cret" not in json.dumps(r)


def test_known_secret_values_are_redacted_wherever_they_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    from halswarm.core import secret_values
    from halswarm.core.remediation import report as report_mod

    reg = secret_values.SecretValues()
    reg.add("tok-" + "9" * 36)
    monkeypatch.setattr(report_mod, "SECRETS", reg)
    out = report_mod.redact({"notes": ["journal: bad token tok-" + "9" * 36 + " from 10.0.0.1"], "n": 3})
    assert out == {"notes": ["journal: bad token [REDACTED] from 10.0.0.1"], "n": 3}


def test_check_marks_actions_planned() -> None:
    r = _report("check", check=True)
    assert r["check"] is True
    assert all(a["result"] == "planned" for a in r["actions"])
    assert exit_code(r) == 0


@pytest.mark.parametrize("incident", catalog.IDS)
def test_every_incident_builds_a_valid_report(incident: str) -> None:
    p = plan(incident, {}).to_dict()
    r = build_report(incident, hosts=["localhost"], facts={}, plan=p, status="not_present", started=1.0,
                     finished=2.0)
    assert validate_report(r) == []
    assert r["severity"] == catalog.get(incident).severity


def test_validate_catches_problems() -> None:
    r = _report()
    r.pop("facts")
    r["status"] = "great"
    r["duration_s"] = True
    r["incident"] = "nope"
    problems = validate_report(r)
    assert "facts: missing" in problems
    assert any(p.startswith("status:") for p in problems)
    assert "duration_s: wrong type" in problems
    assert "incident: unknown" in problems
    assert validate_report([]) == ["report must be an object"]


def test_bad_status_rejected() -> None:
    with pytest.raises(ValueError):
        _report("fine")


def test_status_rules_and_exit_codes() -> None:
    assert decide_status(check=False, present=False, resolve_ok=False, verified=False) == "not_present"
    assert decide_status(check=True, present=True, resolve_ok=False, verified=False) == "check"
    assert decide_status(check=False, present=True, resolve_ok=True, verified=True) == "verified"
    assert decide_status(check=False, present=True, resolve_ok=True, verified=False) == "failed"
    assert decide_status(check=False, present=True, resolve_ok=False, verified=False, escalated=True) == "escalated"
    assert {s: exit_code({"status": s}) for s in STATUSES} == {
        "verified": 0, "not_present": 0, "failed": 1, "escalated": 1, "check": 0}
