"""A finished CLI run (exit code, output, timeout, spawn failure) and the cleaning of its output."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from halswarm.core.auth_capability import ERROR

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*(?:\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>]")
# codex with HOME/CODEX_HOME under /tmp (peers.md 4): harmless, never part of the answer
_CODEX_PATH_WARNING = re.compile(r"^WARNING: proceeding, even though we could not create PATH aliases.*$", re.M)


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def clean_output(text: str) -> str:
    """ANSI codes and codex's PATH-alias warning removed, blank lines dropped."""
    text = _CODEX_PATH_WARNING.sub("", strip_ansi(text))
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    spawn_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.spawn_error is None

    @property
    def text(self) -> str:
        """stdout and stderr, cleaned, stdout first."""
        return "\n".join(t for t in (clean_output(self.stdout), clean_output(self.stderr)) if t)


def run_failure(result: CliResult, command: str) -> tuple[str, str, dict[str, Any]] | None:
    """The ``error`` answer when ``command`` did not run to an exit (timed out, could not start), else None."""
    if result.timed_out:
        return ERROR, f"{command} timed out", {}
    if result.spawn_error:
        return ERROR, result.spawn_error, {}
    return None
