"""Which unit a daemon runs as, and its NRestarts only when it is that unit's main process."""

from __future__ import annotations

import pytest

from halswarm.core.systemd_unit import parse_show, unit_from_cgroup


@pytest.mark.parametrize(("text", "unit"), [
    ("0::/system.slice/hal-supervisor.service\n", "hal-supervisor.service"),
    ("0::/system.slice/hal-agent@alpha.service/\n", "hal-agent@alpha.service"),
    ("12:memory:/x\n1:name=systemd:/system.slice/hal-agent.service\n", "hal-agent.service"),
    ("0::/user.slice/user-1000.slice/session-3.scope\n", None),  # started from a shell
    ("0::/\n", None),  # a container's own cgroup namespace
    ("0::/system.slice/evil;rm -rf.service\n", None),  # not a unit name: never handed to systemctl
    ("", None),
])
def test_unit_from_cgroup(text: str, unit: str | None) -> None:
    assert unit_from_cgroup(text) == unit


def test_restarts_only_for_the_units_main_process() -> None:
    assert parse_show("MainPID=42\nNRestarts=3\n", 42) == 3
    assert parse_show("NRestarts=3\nMainPID=41\n", 42) is None  # a child of the unit (a test runner)
    assert parse_show("MainPID=42\nNRestarts=\n", 42) is None
    assert parse_show("MainPID=42\nNRestarts=-1\n", 42) is None
    assert parse_show("", 42) is None
