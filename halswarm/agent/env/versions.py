"""Version extraction from ``X --version`` output and constraint matching (pure).

Constraints follow the Go manifest validator (go-original 5.3) and Masterminds semver semantics:
an optional operator ``>=``, ``<=``, ``>``, ``<``, ``^``, ``~`` or ``=`` then ``X[.Y[.Z]]``.
Several constraints may be joined with ``,`` or spaces (all must hold) and with ``||`` (any).
A bare or ``=`` constraint with fewer parts is a prefix match (``3.11`` matches ``3.11.4``).
"""

from __future__ import annotations

import re

Version = tuple[int, int, int]

_CONSTRAINT = re.compile(r"^(>=|<=|>|<|\^|~|=)?\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_VERSION = re.compile(r"(?<![\d.])v?(\d+)\.(\d+)(?:\.(\d+))?")
_BARE_AFTER_VERSION = re.compile(r"version\W{0,3}(\d+)\b", re.IGNORECASE)


class BadConstraint(ValueError):
    """The text is not a version constraint."""


def parse_version(text: str) -> Version | None:
    """The first ``X.Y[.Z]`` in a tool's version output (``v20.11.1``, ``Python 3.11.4``,
    ``openjdk version "17.0.2"``, ``codex-cli 0.171.0``); ``java -version`` of 21 prints ``"21"``."""
    m = _VERSION.search(text or "")
    if m:
        return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    m = _BARE_AFTER_VERSION.search(text or "")
    if m:
        return int(m.group(1)), 0, 0
    return None


def format_version(v: Version) -> str:
    return f"{v[0]}.{v[1]}.{v[2]}"


def _one(spec: str) -> tuple[str, tuple[int, ...]]:
    m = _CONSTRAINT.match(spec.strip())
    if not m:
        raise BadConstraint(f"not a version constraint: {spec!r}")
    parts = tuple(int(p) for p in m.groups()[1:] if p is not None)
    return m.group(1) or "=", parts


def _pad(parts: tuple[int, ...]) -> Version:
    p = (*parts, 0, 0, 0)
    return p[0], p[1], p[2]


def _upper_caret(parts: tuple[int, ...]) -> Version:
    major, minor, patch = _pad(parts)
    if major > 0 or len(parts) == 1:
        return major + 1, 0, 0
    if minor > 0 or len(parts) == 2:
        return 0, minor + 1, 0
    return 0, 0, patch + 1


def _upper_tilde(parts: tuple[int, ...]) -> Version:
    major, minor, _ = _pad(parts)
    return (major + 1, 0, 0) if len(parts) == 1 else (major, minor + 1, 0)


def _holds(version: Version, op: str, parts: tuple[int, ...]) -> bool:
    base = _pad(parts)
    if op == ">=":
        return version >= base
    if op == ">":
        return version > base
    if op == "<=":
        return version <= base
    if op == "<":
        return version < base
    if op == "^":
        return base <= version < _upper_caret(parts)
    if op == "~":
        return base <= version < _upper_tilde(parts)
    return version[: len(parts)] == parts  # "=" / bare: prefix match


def _clauses(constraint: str) -> list[list[tuple[str, tuple[int, ...]]]]:
    alternatives = []
    for alt in constraint.split("||"):
        text = re.sub(r"(>=|<=|>|<|\^|~|=)\s+", r"\1", alt.strip())
        specs = [s for s in re.split(r"[,\s]+", text) if s]
        if not specs:
            raise BadConstraint(f"empty alternative in {constraint!r}")
        alternatives.append([_one(s) for s in specs])
    return alternatives


def check_constraint(constraint: str) -> None:
    """Raise BadConstraint when ``constraint`` cannot be parsed ("" means any version)."""
    if constraint.strip():
        _clauses(constraint)


def satisfies(version: Version, constraint: str) -> bool:
    """Whether ``version`` meets ``constraint`` ("" or "*" = any version)."""
    text = (constraint or "").strip()
    if text in ("", "*", "any", "latest"):
        return True
    return any(all(_holds(version, op, parts) for op, parts in alt) for alt in _clauses(text))
