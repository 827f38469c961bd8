"""The agent's view of its configured projects: which directories really exist.

opencode accepts any directory, even a missing one (peers.md section 2), so the agent checks them
itself. A project whose directory is missing, is not a directory or is not readable is *reported*
(an ``agent.warning`` event and ``capabilities.projects_invalid``) and left out of the ``register``
payload, so that the supervisor never routes a session to a node that cannot run it. Validation is
repeated at every registration and every ``create_session``: a directory created later (a fresh
``git clone``) is picked up without restarting the agent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from halswarm.config.agent import Project


@dataclass(frozen=True)
class ProjectCheck:
    name: str
    directory: str  # absolute, normalised
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "directory": self.directory, "reason": self.problem}


def normalize_directory(directory: str) -> str:
    """Absolute, normalised path (``~`` expanded). Symlinks are kept: opencode reports the path it
    was given, and the session -> project mapping compares paths textually."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(directory)))


def check_directory(directory: str) -> str | None:
    """Why ``directory`` cannot host sessions, or None when it can."""
    if not os.path.exists(directory):
        return "directory does not exist"
    if not os.path.isdir(directory):
        return "not a directory"
    if not os.access(directory, os.R_OK | os.X_OK):
        return "directory is not readable by the agent"
    return None


def check_projects(projects: Iterable[Project]) -> list[ProjectCheck]:
    """Check every configured project, in config order. A duplicate name keeps the first entry."""
    out: list[ProjectCheck] = []
    seen: set[str] = set()
    for p in projects:
        directory = normalize_directory(p.directory)
        if p.name in seen:
            out.append(ProjectCheck(p.name, directory, "duplicate project name (the first entry is used)"))
            continue
        seen.add(p.name)
        out.append(ProjectCheck(p.name, directory, check_directory(directory)))
    return out


def project_map(projects: Iterable[Project]) -> dict[str, str]:
    """name -> normalised directory of every configured project (valid or not; first entry wins)."""
    out: dict[str, str] = {}
    for p in projects:
        out.setdefault(p.name, normalize_directory(p.directory))
    return out


def warning_text(check: ProjectCheck) -> str:
    return f"project {check.name}: {check.directory}: {check.problem}; not offered to the supervisor"
