"""Risky provisioning items (pure): the command that fixes one, rebuilt from the manifest's requirements
only, and the approval token that binds an admin's approval to exactly that command."""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass, field

from halswarm.core.manifest.requirements import APT_NAMES, Requirements
from halswarm.core.manifest.templates import DEFAULT_HOOK, render
from halswarm.core.manifest_rules import git_hook_refusal


def pending_id(project: str, category: str, item: str) -> str:
    return f"{project}:{category}:{item}"


def approval_token(project: str, category: str, item: str, command: str) -> str:
    raw = "\0".join((project, category, item, command)).encode()
    return "prov_" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class RiskyCommand:
    command: str
    become: bool
    check: list[str] = field(default_factory=list)
    chdir: str = ""


def risky_command(req: Requirements, category: str, item: str, *, directory: str,
                  missing: bool = False) -> RiskyCommand | None:
    """The command that fixes a risky item, derived from the manifest's requirements only.

    The agent's planner suggests it and the supervisor rebuilds it from its own stored manifest before an
    approved item runs (it never runs command text an agent reported). ``missing``: the tool is not
    installed, or the node did not probe it (then its probe is the idempotence ``check``, run only after
    approval); ``directory``: the project dir."""
    if category in ("runtime", "tools"):
        r = next((r for r in [*req.runtime, *req.tools] if r.category == category and r.name == item), None)
        if r is None:
            return None
        command = r.install or f"apt-get install -y {shlex.quote(APT_NAMES.get(r.name, r.name))}"
        check = list(r.approval_check) if missing or r.command else []
        return RiskyCommand(command, r.become if r.install else True, check)
    if category == "git" and item.startswith("hooks/"):
        return hook_command(req, item.split("/", 1)[1], directory)
    if category == "native_libs":
        lib = next((x for x in req.native_libs if x.name == item), None)
        if lib is None:
            return None
        command = lib.install or f"apt-get install -y lib{lib.name.removeprefix('lib')}-dev"
        return RiskyCommand(command, lib.become if lib.install else True)
    if category == "android_sdk":
        a = req.android
        if a is None:
            return None
        if a.install:
            command = a.install
        elif item == "sdk_root":
            pkgs = [f"platforms;{p}" for p in a.platforms] + [f"build-tools;{b}" for b in a.build_tools]
            command = "sdkmanager " + " ".join(shlex.quote(x) for x in pkgs or ["platform-tools"])
        else:
            command = "sdkmanager " + shlex.quote(item.replace("/", ";"))
        return RiskyCommand(command, False)
    if category == "disk":
        d = req.disk
        if d is None or item != "free_space":
            return None
        command = d.cleanup or f"git -C {shlex.quote(directory)} gc --prune=now --quiet"
        return RiskyCommand(command, False, chdir=directory)
    return None


def hook_command(req: Requirements, hook: str, directory: str) -> RiskyCommand | None:
    """Install git hook ``hook`` in ``<directory>/.git/hooks`` (only after approval: a hook is code that git
    runs). The content is the manifest's ``hooks/<name>`` template, shown in full in the pending command,
    else the built-in no-op hook. The file is never written through a symlink (``set -C``: exclusive
    create) and an existing regular file is only made executable."""
    if req.git is None or hook not in req.git.hooks or git_hook_refusal(hook) or not directory:
        return None
    path = shlex.quote(os.path.join(directory, ".git", "hooks", hook))
    content = render(req.hook_templates.get(hook, DEFAULT_HOOK), {**req.variables, "hook": hook})
    command = (f"test ! -L {path} && {{ test -e {path} || {{ set -C; umask 022; printf '%s' "
               f"{shlex.quote(content)} > {path}; }}; }} && chmod 0755 {path}")
    return RiskyCommand(command, False, ["test", "-x", os.path.join(directory, ".git", "hooks", hook)])
