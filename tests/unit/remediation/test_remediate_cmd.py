"""halctl remediate: list/show/run-without-playbook and the per-host result -> report aggregation."""

from __future__ import annotations

import json

import pytest

from halswarm.cli import main as halctl_main
from halswarm.cli.remediate_cmd import remediate
from halswarm.core.remediation import catalog
from halswarm.core.remediation.planners import plan
from halswarm.core.remediation.report import exit_code, validate_report
from halswarm.core.remediation.result_report import report_from_result

DEAD = {"load_state": "loaded", "active_state": "failed", "sub_state": "failed", "n_restarts": 1}
ACTIVE = {"load_state": "loaded", "active_state": "active", "sub_state": "running", "n_restarts": 0}


@pytest.fixture(autouse=True)
def _wired() -> None:
    if "remediate" not in halctl_main.cli.commands:
        halctl_main.cli.add_command(remediate)
        halctl_main.add_output_option(halctl_main.cli)


def test_list_json_has_13_with_severity(capsys: pytest.CaptureFixture[str]) -> None:
    assert halctl_main.run(["--output", "json", "remediate", "list"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == list(catalog.IDS)
    assert rows[0] == {"id": "supervisor-crashed", "severity": "Critical", "response_time": "< 5 min",
                       "section": "Supervisor Process Crashed"}


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert halctl_main.run(["remediate", "list"]) == 0
    out = capsys.readouterr().out
    assert "agent-cannot-connect" in out and "< 30 min" in out


def test_show_and_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert halctl_main.run(["--output", "json", "remediate", "show", "supervisor_db_corruption"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["playbook"] == "halswarm.ops.remediate_supervisor_db_corruption" and d["severity"] == "Critical"
    assert halctl_main.run(["remediate", "show", "nope"]) == 2
    assert "unknown incident" in capsys.readouterr().err
    assert halctl_main.run(["remediate", "nope"]) == 2


def test_run_without_playbook_fails_cleanly(capsys: pytest.CaptureFixture[str], tmp_path,  # type: ignore[no-untyped-def]
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A collection without the incident's playbook (e.g. an older installed one): one line, exit 1."""
    from halswarm.cli import remediate_cmd

    assert remediate_cmd.playbook_path("cost-data-discrepancy") is not None  # every incident has one
    monkeypatch.setattr(remediate_cmd, "playbook_path", lambda incident: None)
    assert halctl_main.run(["remediate", "cost-data-discrepancy", "--check", "--state-dir", str(tmp_path)]) == 1
    assert "no playbook for cost-data-discrepancy" in capsys.readouterr().err


def _host(facts: dict, verified: bool | None = None) -> dict:
    p = plan("supervisor-crashed", facts).to_dict()
    return {"facts": facts, "plan": p, "verified": verified}


def test_aggregate_verified() -> None:
    r = report_from_result("supervisor-crashed", {"hosts": {"s1": _host({"supervisor": DEAD}, True)}},
                           check=False, started=1.0, finished=3.0, run_ok=True)
    assert validate_report(r) == [] and r["status"] == "verified" and exit_code(r) == 0
    assert r["actions"][0]["host"] == "s1" and r["verification"]["passed"] is True


def test_aggregate_not_present_check_failed_and_missing() -> None:
    healthy = {"hosts": {"s1": _host({"supervisor": ACTIVE})}}
    r = report_from_result("supervisor-crashed", healthy, check=False, started=1, finished=2, run_ok=True)
    assert r["status"] == "not_present" and r["actions"] == []
    r = report_from_result("supervisor-crashed", {"hosts": {"s1": _host({"supervisor": DEAD})}}, check=True,
                           started=1, finished=2, run_ok=True)
    assert r["status"] == "check" and r["actions"][0]["result"] == "planned" and r["check"] is True
    r = report_from_result("supervisor-crashed", {"hosts": {"s1": _host({"supervisor": DEAD}, False)}},
                           check=False, started=1, finished=2, run_ok=True)
    assert r["status"] == "failed" and exit_code(r) == 1
    r = report_from_result("supervisor-crashed", None, check=False, started=1, finished=2, run_ok=False)
    assert r["status"] == "failed" and "playbook failed" in r["error"]
    r = report_from_result("supervisor-crashed", {"hosts": {"s1": _host({})}}, check=True, started=1, finished=2,
                           run_ok=True)
    assert r["status"] == "failed" and "facts incomplete" in r["error"]


def test_manual_incident_is_not_success() -> None:
    p = plan("manual-auth-required", {"auth_states": {"codex": {"status": "unauthenticated"}}}).to_dict()
    r = report_from_result("manual-auth-required", {"hosts": {"a1": {"facts": {}, "plan": p}}}, check=False,
                           started=1, finished=2, run_ok=True)
    assert r["status"] == "failed" and r["guidance"] and exit_code(r) == 1
