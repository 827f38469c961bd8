"""What an environment manifest may ask of a node (pure, stdlib only).

A manifest is data written by an admin and pushed to every agent: it must never become a command, a
file outside a project, or code that git runs later. These rules are checked by the supervisor when a
manifest is stored (``PUT /api/v1/env/manifest`` answers 400 naming the offending key) and again by the
agent before it acts (an agent never applies what these rules refuse, whatever the supervisor sends).
"""

from __future__ import annotations

import posixpath
import re

# Git config keys a manifest may set (compared case-insensitively, like git). Each is inert: none makes
# git run a program, read another file, or talk to another host. Everything else is refused, notably
# core.fsmonitor, core.hooksPath, core.sshCommand, core.pager, core.editor, *.command, alias.*,
# include.*, includeIf.*, filter.*, diff.*.textconv, credential.*, url.*, http.*.
GIT_CONFIG_ALLOWED = frozenset({
    "user.name", "user.email",
    "core.autocrlf", "core.eol", "core.filemode", "core.ignorecase", "core.safecrlf", "core.whitespace",
    "init.defaultbranch",
    "pull.rebase", "pull.ff", "push.default", "push.autosetupremote", "fetch.prune",
    "merge.ff", "rebase.autostash", "rebase.autosquash",
    "commit.gpgsign", "tag.gpgsign",
    "branch.autosetuprebase", "branch.autosetupmerge",
    "status.showuntrackedfiles", "log.date", "color.ui",
})
# Keys allowed with these values only (signing would run gpg for every commit of the agent).
GIT_CONFIG_VALUES = {"commit.gpgsign": frozenset({"false"}), "tag.gpgsign": frozenset({"false"})}
# Manifest values that only check a key is set (never written).
GIT_CONFIG_MARKERS = frozenset({"required", "optional"})

# Git hooks a manifest may ask for (the schema's ``gitHook`` enum): hook files are installed only after
# an admin approves them (see halswarm/core/manifest/risky.py).
GIT_HOOKS = frozenset({"pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase",
                       "post-rewrite", "post-checkout", "post-merge", "pre-push", "pre-auto-gc"})

# A supervisor template file name: one path component, no leading dot or dash.
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A program name a version probe may run as ``<name> --version`` (looked up on the node's PATH).
PROGRAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
# A git remote name (``git remote add NAME URL``): never an option.
REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# Environment variables a manifest may not give a value: each makes a loader, an interpreter, a shell or
# git run or load other code in the agent's processes (opencode, probes, git).
ENV_VAR_REFUSED = frozenset({
    "PATH", "NODE_OPTIONS", "NODE_PATH", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE",
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PROMPT_COMMAND", "IFS", "PERL5OPT", "PERL5LIB", "PERLLIB",
    "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    "SSH_ASKPASS", "EDITOR", "VISUAL", "PAGER", "SHELL", "HOME", "XDG_CONFIG_HOME", "OPENCODE_CONFIG",
    "OPENCODE_CONFIG_DIR", "OPENCODE_CONFIG_CONTENT",
})
ENV_VAR_REFUSED_PREFIXES = ("LD_", "DYLD_", "GIT_", "BASH_FUNC_")


def env_var_refusal(name: str) -> str | None:
    """Why the manifest may not set environment variable ``name`` to a value (None: it may)."""
    if name.upper() in ENV_VAR_REFUSED or name.upper().startswith(ENV_VAR_REFUSED_PREFIXES):
        return f"environment variable {name} may not be set by the manifest (it can make programs run other code)"
    return None


def git_config_refusal(key: str, value: str | None = None) -> str | None:
    """Why the manifest may not set git config ``key`` (to ``value``, when given); None: allowed."""
    k = key.lower()
    if k not in GIT_CONFIG_ALLOWED:
        return f"git config key {key!r} is not allowed (allowed: {', '.join(sorted(GIT_CONFIG_ALLOWED))})"
    allowed = GIT_CONFIG_VALUES.get(k)
    if value is not None and allowed is not None and value.lower() not in allowed | GIT_CONFIG_MARKERS:
        return f"git config {key} may only be set to {', '.join(sorted(allowed))} (got {value!r})"
    return None


def git_hook_refusal(name: str) -> str | None:
    if name in GIT_HOOKS:
        return None
    return f"git hook {name!r} is not a known hook name"


def relative_path_refusal(path: str) -> str | None:
    """Why ``path`` cannot name something inside a project (None: it can, lexically).

    Lexical only: symlinks are resolved by the agent (``halswarm/agent/env/paths.py``)."""
    if not path or not path.strip():
        return "empty path"
    if "\0" in path or "\\" in path:
        return f"path {path!r} contains a NUL or a backslash"
    if path.startswith("/") or path.startswith("~"):
        return f"path {path!r} is absolute; paths are relative to the project directory"
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return f"path {path!r} leaves the project directory ('..')"
    if not parts:
        return f"path {path!r} is the project directory itself"
    if parts[0] == ".git":
        return f"path {path!r} is inside .git (git internals are not manifest files)"
    return None


def inside(root: str, path: str) -> bool:
    """Whether absolute, normalised ``path`` is ``root`` or below it (both already resolved)."""
    root, path = posixpath.normpath(root), posixpath.normpath(path)
    return path == root or path.startswith(root.rstrip("/") + "/")


def template_name_refusal(name: str) -> str | None:
    """Why ``name`` cannot name a file of the supervisor's template directory (None: it can)."""
    if TEMPLATE_NAME.match(name) and ".." not in name:
        return None
    return (f"template {name!r} is not a template name (letters, digits, '.', '_', '-'; no '/'; it is read "
            "only from the supervisor's template directory)")


def program_name_refusal(name: str) -> str | None:
    if PROGRAM_NAME.match(name):
        return None
    return f"{name!r} is not a plain program name; it is not probed"


def remote_url_refusal(url: str) -> str | None:
    """Why ``url`` may not be a git remote: an option, or a transport helper (``ext::cmd`` runs a command)."""
    if url.startswith("-") or "::" in url or any(c in url for c in "\0\n\r"):
        return f"git remote URL {url!r} is not allowed (an option or a transport helper such as ext::)"
    return None


def remote_name_refusal(name: str) -> str | None:
    if REMOTE_NAME.match(name):
        return None
    return f"git remote name {name!r} is not allowed (letters, digits, '.', '_', '-')"
