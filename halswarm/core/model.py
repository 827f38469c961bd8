"""In-memory state of nodes and sessions, with their API shapes.

Status changes go through `transition` methods that assert the move is legal, so a bug shows up
as a failed assertion in tests rather than as a node quietly stuck in the wrong state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from halswarm.core.timeutil import iso

NODE_STATUSES = ("online", "offline")
SESSION_STATUSES = ("running", "idle", "waiting_input", "error", "unreachable", "completed", "killed")
TERMINAL_SESSION_STATUSES = frozenset({"completed", "killed"})


@dataclass
class Node:
    id: str
    hostname: str = ""
    status: str = "offline"
    version: str = ""
    projects: list[dict[str, str]] = field(default_factory=list)
    capabilities: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    auth_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    credential_version: int | None = None
    last_seq: int = 0
    last_heartbeat: float | None = None
    connected_at: float | None = None
    first_seen_at: float | None = None

    def set_status(self, new: str) -> bool:
        """Move to `new`; returns whether it changed."""
        assert new in NODE_STATUSES, new
        changed = new != self.status
        self.status = new
        return changed

    @property
    def project_names(self) -> list[str]:
        return [p["name"] for p in self.projects]

    def auth_summary(self) -> dict[str, str]:
        return {tool: str(state.get("status", "")) for tool, state in sorted(self.auth_states.items())}

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hostname": self.hostname,
            "status": self.status,
            "version": self.version,
            "projects": self.project_names,
            "project_directories": {p["name"]: p.get("directory", "") for p in self.projects},
            "capabilities": self.capabilities,
            "resources": self.resources,
            "last_heartbeat": iso(self.last_heartbeat),
            "connected_at": iso(self.connected_at),
            "last_seq": self.last_seq,
            "auth": self.auth_summary(),
            "credential_version": self.credential_version,
        }


@dataclass
class Session:
    id: str
    node_id: str
    project: str = ""
    status: str = "running"
    model: str | None = None
    tokens_input: int = 0
    tokens_output: int = 0
    tokens_total: int = 0
    compaction_count: int = 0
    current_task: str | None = None
    cost_usd: float = 0.0
    error: str | None = None
    title: str | None = None
    started_at: float | None = None
    last_activity: float | None = None

    def set_status(self, new: str) -> bool:
        assert new in SESSION_STATUSES, new
        changed = new != self.status
        self.status = new
        return changed

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_SESSION_STATUSES

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node_id": self.node_id,
            "project": self.project,
            "status": self.status,
            "model": self.model,
            "tokens": {"input": self.tokens_input, "output": self.tokens_output, "total": self.tokens_total},
            "compaction_count": self.compaction_count,
            "current_task": self.current_task,
            "cost_usd": self.cost_usd,
            "error": self.error,
            "title": self.title,
            "started_at": iso(self.started_at),
            "last_activity": iso(self.last_activity),
        }
