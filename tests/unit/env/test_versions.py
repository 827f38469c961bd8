"""Version extraction from real tools' output and constraint semantics (Masterminds-like)."""

from __future__ import annotations

import pytest

from halswarm.agent.env.versions import BadConstraint, check_constraint, parse_version, satisfies


@pytest.mark.parametrize(("text", "want"), [
    ("v20.11.1\n", (20, 11, 1)),
    ("Python 3.11.7", (3, 11, 7)),
    ('openjdk version "17.0.2" 2022-01-18\nOpenJDK Runtime Environment', (17, 0, 2)),
    ('openjdk version "21" 2023-09-19', (21, 0, 0)),
    ("git version 2.39.5", (2, 39, 5)),
    ("2.1.197 (Claude Code)", (2, 1, 197)),
    ("codex-cli 0.171.0", (0, 171, 0)),
    ("go version go1.22.3 linux/amd64", (1, 22, 3)),
    ("cmake version 3.25", (3, 25, 0)),
    ("no digits here", None),
])
def test_parse_version(text: str, want: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == want


@pytest.mark.parametrize(("version", "constraint", "ok"), [
    ((20, 11, 1), ">=18.0.0", True),
    ((16, 0, 0), ">=18", False),
    ((3, 11, 7), ">=3.9", True),
    ((3, 8, 0), ">3.8", False),
    ((3, 8, 1), ">3.8", True),
    ((1, 4, 9), "<1.5", True),
    ((1, 5, 0), "<=1.5", True),
    ((1, 5, 1), "<=1.5", False),
    ((2, 3, 0), "^2.0", True),
    ((3, 0, 0), "^2.0", False),
    ((0, 2, 5), "^0.2.3", True),
    ((0, 3, 0), "^0.2.3", False),
    ((1, 4, 7), "~1.4", True),
    ((1, 5, 0), "~1.4", False),
    ((1, 9, 0), "~1", True),
    ((3, 11, 4), "3.11", True),
    ((3, 12, 0), "=3.11", False),
    ((1, 2, 3), "=1.2.3", True),
    ((1, 2, 4), "1.2.3", False),
    ((1, 2, 3), "", True),
    ((1, 2, 3), "*", True),
    ((1, 5, 0), ">=1.2, <2", True),
    ((2, 0, 0), ">=1.2 <2", False),
    ((3, 1, 0), "^1.0 || ^3.0", True),
    ((2, 1, 0), "^1.0 || ^3.0", False),
])
def test_satisfies(version: tuple[int, int, int], constraint: str, ok: bool) -> None:
    assert satisfies(version, constraint) is ok


@pytest.mark.parametrize("bad", ["latest-ish", ">=x", "1.2.3.4", ">= ", "^1 ||"])
def test_bad_constraints(bad: str) -> None:
    with pytest.raises(BadConstraint):
        check_constraint(bad)
