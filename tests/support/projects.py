"""Project directories and probe tools for the env tests: real git work trees (``make_repo``), a clean
environment for the agent's probes (``tool_env``), stand-in CLIs answering ``--version``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def tool_env(root: Path) -> dict[str, str]:
    """A clean environment for the agent's probes: its own bin dir first, git without user/system config."""
    bin_dir = root / "bin"
    home = root / "home"
    bin_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"), "LANG": "C.UTF-8"}


def probed(*names: str) -> dict[str, list[str]]:
    """An agent config ``env.probe_tools`` listing ``names``, each probed as ``<name> --version``."""
    return {n: [n, "--version"] for n in names}


def stand_in_tool(bin_dir: Path, name: str, version: str) -> Path:
    """A CLI that answers ``--version`` like real ones do."""
    p = bin_dir / name
    p.write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && {{ echo \"{name} version {version}\"; exit 0; }}\nexit 0\n")
    p.chmod(0o755)
    return p


def git(directory: Path, *args: str, env: Mapping[str, str]) -> str:
    out = subprocess.run(["git", "-C", str(directory), *args], env=dict(env), capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout


def make_repo(directory: Path, env: Mapping[str, str], *, branch: str = "main", remote: str | None = None,
              hooks: Mapping[str, str] | None = None, config: Mapping[str, str] | None = None,
              files: Mapping[str, str] | None = None) -> Path:
    """A git work tree with one commit; ``hooks`` name -> body (executable), ``files`` committed."""
    directory.mkdir(parents=True, exist_ok=True)
    git(directory, "init", "-q", "-b", branch, env=env)
    git(directory, "config", "user.email", "test@example.invalid", env=env)
    git(directory, "config", "user.name", "Test User", env=env)
    for k, v in (config or {}).items():
        git(directory, "config", k, v, env=env)
    for rel, text in (files or {"README.md": "# readme\n"}).items():
        p = directory / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    git(directory, "add", "-A", env=env)
    git(directory, "commit", "-q", "-m", "initial", env=env)
    if remote:
        git(directory, "remote", "add", "origin", remote, env=env)
    for name, body in (hooks or {}).items():
        h = directory / ".git" / "hooks" / name
        h.write_text(body)
        h.chmod(0o755)
    return directory


def tree_digest(directory: Path) -> dict[str, str]:
    """SHA-256 (and mode) of every file under ``directory`` except git's object store and index."""
    out: dict[str, str] = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if rel.startswith((".git/objects", ".git/logs")) or rel == ".git/index":
            continue
        if p.is_file():
            out[rel] = f"{p.stat().st_mode & 0o777:o}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
        elif p.is_dir():
            out[rel + "/"] = "dir"
    return out
