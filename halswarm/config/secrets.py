"""Secret resolution (env > file > inline), token strength rules and file-permission checks.

Messages never contain a secret's value.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halswarm.config.problems import FILE, Problem, Severity

ENV_TOKEN = "HAL_AUTH_TOKEN"
MIN_TOKEN_LENGTH = 32

_PLACEHOLDER_PREFIXES = ("change_me", "changeme", "change-me")
_PLACEHOLDERS = frozenset({"your-shared-secret-here", "your-token-here", "token", "secret", "..."})

# Key names whose string values are secrets (Go's IsSecretKey, minus path/file/id-like keys).
_SECRET_KEY = re.compile(r"token|password|passwd|secret|api_?key|credential|private_key", re.IGNORECASE)
_NOT_SECRET_KEY = re.compile(r"(_file|_path|_dir|_id|_url|_seconds|_sec|_count|_rotation)$", re.IGNORECASE)


def token_weakness(token: str) -> str | None:
    """Why `token` must be refused (placeholder or too short), or None when it is acceptable."""
    value = token.strip()
    lowered = value.lower()
    if lowered.startswith(_PLACEHOLDER_PREFIXES) or lowered in _PLACEHOLDERS:
        return "is a placeholder, not a secret; generate one with `halctl config init` or `openssl rand -hex 32`"
    if len(value) < MIN_TOKEN_LENGTH:
        chars = "character" if len(value) == 1 else "characters"
        return f"is too short ({len(value)} {chars}; at least {MIN_TOKEN_LENGTH} are required)"
    return None


def resolve_path(raw: str, source_path: str | os.PathLike[str] | None) -> Path:
    """`~` expands; a relative path is taken relative to the config file's directory."""
    path = Path(os.path.expanduser(raw))
    if not path.is_absolute() and source_path is not None:
        path = Path(source_path).resolve().parent / path
    return path


def group_or_other_readable(path: str | os.PathLike[str]) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRGRP | stat.S_IROTH))


@dataclass
class SecretResult:
    """Outcome of resolving one secret: its value (None when absent) and the problems found."""

    value: str | None = None
    where: str | None = None
    problems: list[Problem] = field(default_factory=list)


def read_secret_file(raw: str, json_path: str, source_path: str | os.PathLike[str] | None) -> SecretResult:
    path = resolve_path(raw, source_path)
    result = SecretResult(where=json_path)
    try:
        text = path.read_text("utf-8").strip()
    except FileNotFoundError:
        result.problems.append(Problem(json_path, f"cannot read {path}: file not found"))
        return result
    except OSError as exc:
        result.problems.append(Problem(json_path, f"cannot read {path}: {exc.strerror or exc}"))
        return result
    except UnicodeDecodeError:
        result.problems.append(Problem(json_path, f"cannot read {path}: not valid UTF-8"))
        return result
    if not text:
        result.problems.append(Problem(json_path, f"{path} is empty"))
        return result
    if group_or_other_readable(path):
        result.problems.append(
            Problem(json_path, f"{path} is readable by group/others; chmod 600", "warning")
        )
    result.value = text
    return result


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def resolve_secret(
    data: Mapping[str, Any],
    *,
    inline: tuple[str, ...],
    files: tuple[str, ...],
    env_var: str | None,
    env: Mapping[str, str],
    source_path: str | os.PathLike[str] | None,
) -> SecretResult:
    """Resolve a secret: env var > first `*_file` key that is set > first non-empty inline key.

    `inline`/`files` are dotted keys in priority order. An unreadable or empty file is an error and
    does not fall back to the inline value (the operator asked for the file).
    """
    if env_var and env.get(env_var, "").strip():
        return SecretResult(value=env[env_var].strip(), where=f"${env_var}")
    for key in files:
        raw = _lookup(data, key)
        if isinstance(raw, str) and raw:
            return read_secret_file(raw, key, source_path)
    for key in inline:
        raw = _lookup(data, key)
        if isinstance(raw, str) and raw.strip():
            return SecretResult(value=raw.strip(), where=key)
    return SecretResult()


def check_token(result: SecretResult, severity: Severity = "error") -> list[Problem]:
    """Strength problems of a resolved token (none when it is absent: presence is checked apart)."""
    if result.value is None or result.where is None:
        return []
    why = token_weakness(result.value)
    if why is None:
        return []
    subject = "token in the file" if result.where.endswith("_file") else "token"
    return [Problem(result.where, f"{subject} {why}", severity)]


def holds_inline_secret(value: Any, key: str = "") -> bool:
    """True when a document contains a non-empty secret value (by key name, as Go's IsSecretKey)."""
    if isinstance(value, Mapping):
        secretish = bool(key) and bool(_SECRET_KEY.search(key)) and not _NOT_SECRET_KEY.search(key)
        if secretish and any(isinstance(v, str) and v for v in value.values()):
            return True  # e.g. security.agent_tokens, credentials env maps
        return any(holds_inline_secret(v, str(k)) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_inline_secret(v, key) for v in value)
    if isinstance(value, str) and value and key:
        return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET_KEY.search(key)
    return False


def file_permission_problems(data: Mapping[str, Any], source_path: str | os.PathLike[str] | None) -> list[Problem]:
    """Warn when the config file itself holds a secret and group/others can read it."""
    if source_path is None or not group_or_other_readable(source_path):
        return []
    if not (holds_inline_secret(data) or _credentials_hold_values(data)):
        return []
    return [Problem(FILE, "readable by group/others and holds secrets; chmod 600", "warning")]


def _credentials_hold_values(data: Mapping[str, Any]) -> bool:
    """Pushed credential values are secrets whatever their names (`GITHUB_PAT`, `DATABASE_URL`)."""
    creds = data.get("credentials")
    if not isinstance(creds, Mapping):
        return False
    return _any_string(creds.get("defaults")) or _any_string(creds.get("agents"))


def _any_string(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_any_string(v) for v in value.values())
    return isinstance(value, str) and bool(value)
