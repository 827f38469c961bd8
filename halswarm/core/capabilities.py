"""The coding-agent CLIs a node can have (tool ids, ``tool_paths`` keys) and what a probe found.

Pure: the probing itself (PATH lookup, ``--version``) is I/O and lives in ``halswarm.agent.capabilities``.
Tool ids are the Go ones (``opencode``, ``claude_code``, ``codex``); the ``tool_paths`` keys are
``opencode``, ``claude``, ``codex``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# tool id -> (tool_paths key, default binary name)
TOOLS: dict[str, tuple[str, str]] = {
    "opencode": ("opencode", "opencode"),
    "claude_code": ("claude", "claude"),
    "codex": ("codex", "codex"),
}


@dataclass(frozen=True)
class ToolInfo:
    tool: str
    installed: bool
    path: str | None = None
    version: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"installed": self.installed, "path": self.path, "version": self.version, "reason": self.reason}


def version_probes(tool_paths: Mapping[str, str] | None = None, *,
                   opencode_binary: str = "opencode") -> dict[str, tuple[str, ...]]:
    """These CLIs as env-check version probes: tool id and binary name -> ``(binary, "--version")``, the
    configured ``tool_paths`` winning like in ``detect_tools`` (trusted node config, never the manifest)."""
    out: dict[str, tuple[str, ...]] = {}
    for tool, (key, default) in TOOLS.items():
        binary = (tool_paths or {}).get(key) or (opencode_binary if tool == "opencode" else default)
        out[tool] = out[default] = (binary, "--version")
    return out
