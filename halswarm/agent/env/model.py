"""Result records of env checks and provisioning (pure data, JSON-ready)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, WARN = "pass", "fail", "warn"
READY, DEGRADED, MISSING = "ready", "degraded", "missing"
# How a failing item can be fixed: by the provisioner (safe), after approval (risky), by a person (manual).
SAFE, RISKY, MANUAL = "safe", "risky", "manual"


@dataclass
class Item:
    """One checked requirement (the Go ``drift`` entry plus how to fix it). Values are never shown
    for env vars: ``actual`` is ``set`` / ``not set``."""

    category: str
    item: str
    expected: str
    actual: str
    status: str
    fix: str | None = None
    detail: str = ""
    drift: bool = False  # present but different from what the manifest manages

    @property
    def key(self) -> str:
        return f"{self.category}:{self.item}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overall(items: list[Item]) -> str:
    """Go rule: any fail -> missing, else any warn -> degraded, else ready."""
    if any(i.status == FAIL for i in items):
        return MISSING
    if any(i.status == WARN for i in items):
        return DEGRADED
    return READY


@dataclass
class Action:
    """A safe change the provisioner makes (or would make, in a dry run)."""

    category: str
    item: str
    action: str  # create | mkdir | chmod | overwrite | git_config | git_remote_add | git_remote_set_url | env_set
    path: str = ""
    content: str | None = None
    mode: int | None = None
    args: tuple[str, ...] = ()

    @property
    def change(self) -> str:
        return f"{self.category}:{self.item}:{self.action}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"category": self.category, "item": self.item, "action": self.action}
        if self.path:
            out["path"] = self.path
        if self.mode is not None:
            out["mode"] = f"{self.mode:04o}"
        return out


@dataclass
class Pending:
    """A risky item (packages, SDKs, disk clean-up): waits for ``approve`` with its suggested command."""

    id: str
    token: str
    project: str
    category: str
    item: str
    command: str
    reason: str
    become: bool = False
    check: list[str] = field(default_factory=list)
    chdir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": "pending", "approval": "manual_approval_required"}


@dataclass
class Conflict:
    """A managed file (or setting) that was changed locally: not overwritten without force."""

    category: str
    item: str
    path: str
    diff: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manual:
    """Something only a person can do (a secret to supply, a branch to switch)."""

    category: str
    item: str
    reason: str
    suggestion: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    manual: list[Manual] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"actions": [a.to_dict() for a in self.actions], "pending": [p.to_dict() for p in self.pending],
                "conflicts": [c.to_dict() for c in self.conflicts], "manual": [m.to_dict() for m in self.manual]}
