"""One tool's authentication state, as the agent reports it in ``auth_state`` frames."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from halswarm.protocol import AuthStateEntry

MAX_REASON = 200


def one_line(text: str, limit: int = MAX_REASON) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class ToolAuth:
    tool: str
    status: str
    reason: str = ""
    checked_at: float = field(default_factory=time.time)
    installed: bool = True
    version: str | None = None
    path: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # method, providers...: never secret values

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", one_line(self.reason))

    def entry(self) -> AuthStateEntry:
        return AuthStateEntry(self.tool, self.status, self.reason, self.checked_at)

    def key(self) -> tuple[str, str]:
        """What counts as a change worth reporting at once (not checked_at)."""
        return (self.status, self.reason)

    def with_status(self, status: str, reason: str) -> ToolAuth:
        return replace(self, status=status, reason=reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "status": self.status,
            "reason": self.reason,
            "checked_at": self.checked_at,
            "installed": self.installed,
            "version": self.version,
            "path": self.path,
            **({"detail": self.detail} if self.detail else {}),
        }
