"""Templates the provisioner writes (pure): AGENT.md, git hooks, doc stubs, ``.context/`` scaffolding.

The supervisor owns the templates (manifest ``templates``: name -> text); the built-in ones below are
used when the manifest has none. Rendering replaces ``{{ name }}`` placeholders (``{{PROJECT_NAME}}``
of the Go version included) with the project variables; unknown placeholders are left as written, so
rendering is deterministic and the SHA-256 of the result is what a node's AGENT.md is compared with.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping

AGENT_MD = "AGENT.md"
MAX_DIFF_CHARS = 64 * 1024

DEFAULT_AGENT_MD = """# AGENT.md: {{project}}

This file is managed by HAL-O-SWARM: it is rendered from the supervisor's template for the project
`{{project}}`. Local edits are reported as drift and are never overwritten without `--force`.

## Working agreements

- At the start of a session, read `.context/` (CURRENT_TASK.md, PROGRESS.md) before anything else.
- Keep `.context/CURRENT_TASK.md` current: its first line is a one-line summary of the task in progress.
- Before you stop, record what was done, what was decided and why, and what is left in
  `.context/PROGRESS.md`.
- Commit small, coherent changes with clear messages; never rewrite published history.
- Do not put secrets in files, commits or logs.
"""

DEFAULT_HOOK = """#!/bin/sh
# {{hook}} hook - hal-o-swarm managed
exit 0
"""

CONTEXT_FILES = {
    "CURRENT_TASK.md": "",
    "PROGRESS.md": "# Progress\n",
}

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")


def render(template: str, variables: Mapping[str, str]) -> str:
    """Substitute ``{{ name }}`` placeholders; the result always ends with one newline."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in variables:
            return str(variables[name])
        return m.group(0)

    text = _PLACEHOLDER.sub(sub, template.replace("\r\n", "\n"))
    return text.rstrip("\n") + "\n"


def project_variables(project: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables every template sees: the project name (also as the Go ``PROJECT_NAME``) and the
    manifest's ``variables`` (global, then the project's)."""
    out = {"project": project, "project_name": project, "PROJECT_NAME": project}
    out.update({str(k): str(v) for k, v in (extra or {}).items()})
    return out


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def doc_stub(path: str) -> str:
    """``# <name>`` for a required document (the Go provisioner's stub)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"# {stem}\n"


def unified_diff(old: str, new: str, path: str, *, old_label: str = "local", new_label: str = "template") -> str:
    """A unified diff from the file on disk (``a/``) to the wanted content (``b/``); "" when equal."""
    if old == new:
        return ""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"a/{path} ({old_label})", tofile=f"b/{path} ({new_label})",
    )
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    if len(text) > MAX_DIFF_CHARS:
        text = text[:MAX_DIFF_CHARS] + f"\n... diff truncated at {MAX_DIFF_CHARS} characters\n"
    return text
