"""The `Problem` record and JSON-path rendering shared by every config module."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]

ROOT = "(root)"
FILE = "(file)"

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class Problem:
    """One finding about a config document, addressed by a dotted JSON path."""

    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


TYPE_NAMES = {
    "integer": "an integer", "number": "a number", "string": "a string", "boolean": "a boolean",
    "object": "an object", "array": "an array", "null": "null",
}


def json_type(value: Any) -> str:
    """JSON Schema type name of a parsed value (`integer` before `number`; bool is not a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for py, name in ((int, "integer"), (float, "number"), (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, py):
            return name
    return type(value).__name__


def format_path(parts: Iterable[str | int]) -> str:
    """Render path parts as `server.port`, `projects[0].directory`, `x["a.b"]`; empty -> `(root)`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or ROOT


def join_path(base: str, *parts: str | int) -> str:
    """Append parts to an already rendered path."""
    tail = format_path(parts)
    if base in ("", ROOT):
        return tail
    if tail == ROOT:
        return base
    return base + tail if tail.startswith("[") else f"{base}.{tail}"


def render(problem: Problem) -> str:
    """`PATH: message`, with ` (warning)` appended to warnings."""
    return str(problem) if problem.is_error else f"{problem} (warning)"


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Deduplicate; errors first, then by path, keeping the order of discovery otherwise."""
    seen: dict[Problem, None] = {}
    for p in problems:
        seen.setdefault(p, None)
    return sorted(seen, key=lambda p: (not p.is_error, p.path))
