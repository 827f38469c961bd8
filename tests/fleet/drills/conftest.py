"""One deployed fleet (supervisor + agent under real systemd) shared by every remediation drill.

Drills inject a real fault, run the real ``halctl remediate``, assert the verified recovery and the
report, and must leave the fleet healthy: the ``fleet`` fixture checks that before each drill and
fails it loudly (instead of letting the next drill inherit a broken fleet) when it is not.
``HAL_DRILL_PREFIX`` names the instances (default ``hal-drill``, plus ``-wN`` under pytest-xdist) so that
several runs can coexist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.fleet.env import host_ready
from tests.support.fleet.fleet import AGENT_UNIT, SUP_UNIT, DrillFleet


@pytest.fixture(scope="session")
def drill_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillFleet]:
    reason = host_ready()
    if reason:
        pytest.skip(reason)
    # One fleet per pytest-xdist worker (drill modules may land on different workers).
    worker = os.environ.get("PYTEST_XDIST_WORKER", "").replace("gw", "-w")
    prefix = os.environ.get("HAL_DRILL_PREFIX", "hal-drill") + worker
    fleet = DrillFleet(prefix, tmp_path_factory.mktemp("drill-fleet"))
    try:
        fleet.create()
        fleet.deploy()
        yield fleet
    finally:
        fleet.destroy()


@pytest.fixture
def fleet(drill_fleet: DrillFleet) -> Iterator[DrillFleet]:
    """The shared fleet, healthy before the drill; after it, restarted when a drill left it broken.

    The units' start-rate counters are reset first: drills restart daemons often, and systemd's
    StartLimitBurst (5 starts in 300 s) would otherwise refuse a start a later drill relies on."""
    for host, unit in ((drill_fleet.sup, SUP_UNIT), (drill_fleet.agent, AGENT_UNIT)):
        drill_fleet.exec(host, "systemctl", "reset-failed", unit, check=False)
    _ensure_healthy(drill_fleet)
    yield drill_fleet
    if not _healthy(drill_fleet):
        for host, unit in ((drill_fleet.sup, SUP_UNIT), (drill_fleet.agent, AGENT_UNIT)):
            drill_fleet.exec(host, "systemctl", "reset-failed", unit, check=False)
            drill_fleet.exec(host, "systemctl", "restart", unit, check=False)


def _healthy(fleet: DrillFleet) -> bool:
    return (fleet.active(fleet.sup, SUP_UNIT) == "active" and fleet.active(fleet.agent, AGENT_UNIT) == "active"
            and fleet.wait_node_online(60))


def _ensure_healthy(fleet: DrillFleet) -> None:
    assert _healthy(fleet), ("the drill fleet is not healthy before the drill (a previous drill broke it)\n"
                             + _state(fleet))


def _state(fleet: DrillFleet) -> str:
    """What an operator would look at first: both units' state and the newest journal lines of each."""
    out = []
    for host, unit in ((fleet.sup, SUP_UNIT), (fleet.agent, AGENT_UNIT)):
        out.append(f"--- {host} {unit}: {fleet.active(host, unit)}")
        out.append(fleet.journal(host, unit, lines=25).rstrip())
    return "\n".join(out)
