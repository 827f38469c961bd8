"""Carrying out a provisioning plan's safe actions (the I/O half of provisioning).

Files are created with an exclusive link of a fully written temporary file, so an existing file is
never replaced by ``create`` (even one that appeared since the check); ``overwrite`` (force only)
replaces atomically and keeps the file's mode, and never reads or replaces through a symlink. With
``root`` (the project directory), every path is checked again right before the write (symlinks resolved)
and git config keys and remote names against the manifest rules: the agent never applies what those
rules refuse, whatever plan it is given.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from halswarm.agent.env.envfile import EnvFile
from halswarm.agent.env.facts import run
from halswarm.agent.env.model import Action
from halswarm.agent.env.paths import PathRefused, check_inside
from halswarm.core.manifest_rules import (
    env_var_refusal,
    git_config_refusal,
    remote_name_refusal,
    remote_url_refusal,
)


class ApplyError(Exception):
    pass


def _write_new(path: str, content: str, mode: int) -> bool:
    """Create ``path`` with ``content``; False (nothing written) when it already exists."""
    if os.path.lexists(path):
        return False
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hal-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.chmod(tmp, mode)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _mkdir(path: str, mode: int) -> bool:
    if os.path.isdir(path):
        return False
    os.makedirs(path, mode=mode, exist_ok=True)
    return True


def _replace(path: str, content: str) -> bool:
    if os.path.islink(path):
        raise ApplyError(f"{path} is a symlink: not replaced")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, encoding="utf-8") as fh:
            if fh.read() == content:
                return False
            mode = os.fstat(fh.fileno()).st_mode & 0o7777
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=".hal-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


async def _git(directory: str, args: list[str], env: Mapping[str, str], timeout: float) -> None:
    rc, out = await run(["git", "-C", directory, *args], env=env, timeout=timeout)
    if rc != 0:
        raise ApplyError(f"git {' '.join(args[:2])}: {out.strip()[:300] or f'exit {rc}'}")


def _guard(a: Action, root: str | None) -> None:
    """Refuse an action the manifest rules do not allow (defence in depth: the planner never makes one)."""
    if a.action in ("create", "overwrite", "mkdir", "chmod") and root is not None:
        check_inside(root, a.path)
    if a.action == "git_config" and (why := git_config_refusal(a.args[0], a.args[1])):
        raise ApplyError(why)
    if a.action == "env_set" and (why := env_var_refusal(a.args[0])):
        raise ApplyError(why)
    if a.action.startswith("git_remote"):
        why = remote_name_refusal(a.args[0]) or remote_url_refusal(a.args[1])
        if why:
            raise ApplyError(why)


async def apply_action(a: Action, *, env_file: EnvFile, env: Mapping[str, str], timeout: float = 30.0,
                       root: str | None = None) -> bool:
    """Carry out one action; returns whether something changed."""
    _guard(a, root)
    if a.action == "create":
        return _write_new(a.path, a.content or "", a.mode if a.mode is not None else 0o644)
    if a.action == "overwrite":
        return _replace(a.path, a.content or "")
    if a.action == "mkdir":
        return _mkdir(a.path, a.mode or 0o755)
    if a.action == "chmod":
        mode = os.stat(a.path).st_mode & 0o7777
        new = mode | 0o111 if a.mode == 0o755 else (a.mode or mode)
        if new == mode:
            return False
        os.chmod(a.path, new)
        return True
    if a.action == "git_config":
        await _git(a.path, ["config", "--local", "--", a.args[0], a.args[1]], env, timeout)
        return True
    if a.action == "git_remote_add":
        await _git(a.path, ["remote", "add", "--", a.args[0], a.args[1]], env, timeout)
        return True
    if a.action == "git_remote_set_url":
        await _git(a.path, ["remote", "set-url", "--", a.args[0], a.args[1]], env, timeout)
        return True
    if a.action == "env_set":
        return env_file.set(a.args[0], a.args[1])
    raise ApplyError(f"unknown action {a.action}")


async def apply_actions(actions: list[Action], *, env_file: EnvFile, env: Mapping[str, str],
                        timeout: float = 30.0, root: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Apply each action (one failing does not stop the others): (applied, errors). ``root``: the project
    directory every written path must stay in."""
    applied: list[dict[str, Any]] = []
    errors: list[str] = []
    for a in actions:
        try:
            changed = await apply_action(a, env_file=env_file, env=env, timeout=timeout, root=root)
        except (OSError, ApplyError, PathRefused, ValueError) as exc:
            errors.append(f"{a.change}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if changed:
            entry = a.to_dict()
            if a.action == "env_set":
                entry["path"] = str(env_file.path)
            applied.append(entry)
    return applied, errors
