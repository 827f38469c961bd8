"""Harness smoke drill: supervisor-crashed after `systemctl stop` -> verified; healthy -> not present."""

from __future__ import annotations

import pytest

from tests.support.fleet.fleet import SUP_UNIT, DrillFleet

pytestmark = pytest.mark.timeout(1500)


def test_supervisor_stopped_is_restarted_and_verified(fleet: DrillFleet) -> None:
    rc, report = fleet.remediate("supervisor-crashed")
    assert rc == 0 and report["status"] == "not_present", report
    fleet.exec(fleet.sup, "systemctl", "stop", SUP_UNIT)
    rc, report = fleet.remediate("supervisor-crashed")
    assert rc == 0 and report["status"] == "verified", report
    assert fleet.active(fleet.sup, SUP_UNIT) == "active"
    runs = fleet.api("/api/v1/remediations?incident=supervisor-crashed")["body"]["data"]
    assert [r["status"] for r in runs][:2] == ["verified", "not_present"]
