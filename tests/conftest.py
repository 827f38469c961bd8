"""Shared fixtures: a real supervisor process per test (or module) on free loopback ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.supervisor_proc import SupervisorProc


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
