"""Fixture tests of `core.remediation.result_report`: the playbook's per-host results in, the report out.

Each file under ``fixtures/result_report/`` holds the inputs (incident, result, check, run_ok) and the
expected parts of the report; no Ansible, no files written, no clock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from halswarm.core.remediation.report import validate_report
from halswarm.core.remediation.result_report import (
    overall_decision,
    report_from_result,
    run_error,
    with_host_errors,
)

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "result_report").glob("*.json"))


def _expected_part(report: dict[str, Any], key: str) -> Any:
    if key == "actions":
        return [[a["host"], a["name"], a["result"]] for a in report["actions"]]
    return report.get(key)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture(path: Path) -> None:
    case = json.loads(path.read_text())
    report = report_from_result(case["incident"], case["result"], check=case["check"], started=10.0,
                                finished=12.5, run_ok=case["run_ok"], run_info={"rc": 0})
    assert validate_report(report) == []
    assert (report["duration_s"], report["run"]) == (2.5, {"rc": 0})
    for key, want in case["expect"].items():
        assert _expected_part(report, key) == want, f"{path.stem}: {key}"


def test_there_are_fixtures() -> None:
    assert len(FIXTURES) >= 10


def test_decision_of_mixed_hosts() -> None:
    assert overall_decision({"a": {"present": True}, "b": {"decision": "not_present"}}) == "present"
    assert overall_decision({"a": {"decision": "not_present"}, "b": {"decision": "not_present"}}) == "not_present"
    assert overall_decision({"a": {"decision": "not_present"}, "b": {}}) == "unknown"
    assert overall_decision({}) == "unknown"


def test_run_error_takes_the_first_reason_and_appends_host_errors() -> None:
    hosts = {"h": {"error": "e1"}}
    assert run_error("agent-crashed", {}, run_ok=True, decision="unknown", manual=True).startswith("no result")
    assert run_error("agent-crashed", hosts, run_ok=True, decision="present", manual=False) is None
    assert with_host_errors(None, hosts) == "h: e1" and with_host_errors("x", {}) == "x"
