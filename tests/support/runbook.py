"""Commands of the operator runbook that name one of our programs (for tests/integration/test_runbook.py)."""

from __future__ import annotations

import re

PROGRAMS = ("halctl", "hal-supervisor", "hal-agent", "sqlite3")
_NAMED = re.compile(r"(?<![\w.-])(?:/usr/local/bin/)?(halctl|hal-supervisor|hal-agent|sqlite3)(?![\w-])")
_FENCE = re.compile(r"^\s*```")
_INLINE = re.compile(r"`([^`\n]+)`")


def _logical_lines(block: list[str]) -> list[str]:
    """Join backslash continuations; drop comments and blank lines."""
    out, buf = [], ""
    for raw in block:
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        out.append((buf + line).strip())
        buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def extract_commands(markdown: str) -> list[str]:
    """Every shell line of a fenced code block (bash/sh or unlabelled) and every inline code span that
    names halctl, hal-supervisor, hal-agent or sqlite3, in order, without duplicates."""
    found: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        if _FENCE.match(lines[i]):
            lang = lines[i].strip().strip("`").strip().lower()
            j = i + 1
            while j < len(lines) and not _FENCE.match(lines[j]):
                j += 1
            if lang in ("", "bash", "sh", "shell", "console"):
                found += [ln for ln in _logical_lines(lines[i + 1:j]) if _NAMED.search(ln)]
            i = j + 1
            continue
        found += [span.strip() for span in _INLINE.findall(lines[i]) if _NAMED.search(span) and " " in span.strip()]
        i += 1
    seen: set[str] = set()
    return [c for c in found if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]
