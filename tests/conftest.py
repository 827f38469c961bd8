"""Shared fixtures: a real supervisor process per test (or module) on free loopback ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_proc import make_agent  # noqa: F401 - the fixture, registered for every test
from tests.support.supervisor_proc import SupervisorProc

# ----- scheduling under pytest-xdist (`make test` runs -n 2 --dist loadfile --no-loadscope-reorder) -----
# The drills share one deployed fleet per worker (session fixture): grouping every drill module into one
# work unit deploys it once. The units that take minutes (each deploys podman/systemd hosts or runs
# ansible-lint) go first, so the short ones fill the gaps at the end instead of a long one starting last.
DRILLS = "tests/integration/drills/"
LONG_FIRST = (DRILLS, "tests/integration/test_ops_fleet.py", "tests/integration/test_ops_firewall.py",
              "tests/integration/test_ops_lint.py", "tests/e2e/test_stack_scenarios.py",
              "tests/integration/test_api.py", "tests/integration/test_restore_roundtrip.py",
              "tests/integration/test_packaging.py")


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONG_FIRST) if nodeid.startswith(prefix)), len(LONG_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: the order inside a module is kept


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadFileScheduling

    class DrillsTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return DRILLS if nodeid.startswith(DRILLS) else super()._split_scope(nodeid)

    return DrillsTogether(config, log)


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[SupervisorProc]:
    sup = SupervisorProc(tmp_path / "sup")
    sup.start()
    try:
        yield sup
    finally:
        sup.stop()
        if sup.proc is not None and sup.proc.returncode not in (0, None, -9):
            print(sup.log_tail(), file=sys.stderr)


@pytest.fixture
def make_supervisor(tmp_path: Path) -> Iterator:
    """Factory for tests that need custom config or restarts; every process is stopped at teardown."""
    made: list[SupervisorProc] = []

    def factory(name: str = "sup", **extra: object) -> SupervisorProc:
        sup = SupervisorProc(tmp_path / name, extra=dict(extra))
        made.append(sup)
        return sup

    yield factory
    for sup in made:
        sup.stop()
