"""Shared fixtures (a real supervisor process per test on free loopback ports), the layer markers, and the
order of the slow units under pytest-xdist."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_proc import make_agent  # noqa: F401 - the fixture, registered for every test
from tests.support.store_engines import pg_cluster, pg_conn, pg_url, store_conn, store_db  # noqa: F401 - fixtures
from tests.support.supervisor_proc import SupervisorProc

# ----- layers: every test carries one marker, from its directory unless it names one itself -----
# `pytest -m unit`: pure logic, no processes, no sockets (a unit test that starts a process or listens on
# a socket says `pytest.mark.process`); `process`: real supervisor/agent processes on loopback; `e2e`: real
# external programs (opencode, claude, codex); `fleet`: podman/systemd hosts deployed with Ansible, the
# collection's lint and sanity (root, after `make ops-setup`).
LAYERS = ("unit", "process", "e2e", "fleet")
LAYER_OF_DIR = {"tests/unit/": "unit", "tests/integration/": "process", "tests/e2e/": "e2e", "tests/fleet/": "fleet"}

# ----- scheduling under pytest-xdist (`make test` runs -n 2 --dist loadfile --no-loadscope-reorder) -----
# The drills share one deployed fleet per worker (session fixture): grouping every drill module into one
# work unit deploys it once. The units that take minutes (each deploys podman/systemd hosts or runs
# ansible-lint) go first, so the short ones fill the gaps at the end instead of a long one starting last.
DRILLS = "tests/fleet/drills/"
LONG_FIRST = (DRILLS, "tests/fleet/test_ops_fleet.py", "tests/fleet/test_ops_firewall.py",
              "tests/fleet/test_ops_ha.py", "tests/fleet/test_ops_lint.py", "tests/e2e/test_stack_scenarios.py",
              "tests/integration/test_api.py", "tests/integration/test_restore_roundtrip.py",
              "tests/integration/test_packaging.py")


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONG_FIRST) if nodeid.startswith(prefix)), len(LONG_FIRST))


def _layer(item: pytest.Item) -> str | None:
    if any(item.get_closest_marker(name) for name in LAYERS):
        return None  # the test (or its module) named its layer
    return next((layer for prefix, layer in LAYER_OF_DIR.items() if item.nodeid.startswith(prefix)), None)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        layer = _layer(item)
        if layer is not None:
            item.add_marker(layer)
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
