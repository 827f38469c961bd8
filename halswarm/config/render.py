"""`halctl config init`: a full default document over an existing file, written atomically (0600)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halswarm.config.loader import is_yaml_path
from halswarm.config.schemas import KINDS, defaults
from halswarm.config.secrets import token_weakness

DEFAULT_AGENT_URL = "ws://127.0.0.1:8420/ws/agent"


def _under(existing: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """`existing` with `base` filled in underneath: every existing key (known or not) and its order
    are kept; only keys it lacks are added."""
    out = copy.deepcopy(dict(existing))
    for key, value in base.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = _under(out[key], value)
    return out


def new_token() -> str:
    """64 hex characters (32 random bytes), as the Go wizard generated."""
    import secrets

    return secrets.token_hex(32)


def _set_token(doc: dict[str, Any], locations: tuple[tuple[str, ...], ...], token: str | None, generate: bool) -> None:
    """Put `token` where the document keeps its token (first location that exists, else the first).

    Without an explicit token, a missing or weak one is replaced by a fresh one when `generate`.
    A document that reads its token from a file is left alone."""
    def get(path: tuple[str, ...]) -> Any:
        node: Any = doc
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    if any(isinstance(get((*loc[:-1], loc[-1] + "_file")), str) for loc in locations) and token is None:
        return
    target = next((loc for loc in locations if isinstance(get(loc), str)), locations[0])
    current = get(target)
    if token is None:
        if not generate or (isinstance(current, str) and token_weakness(current) is None):
            return
        token = new_token()
    node = doc
    for part in target[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return  # e.g. `server: []` in a broken file: leave it for validation to report
    node[target[-1]] = token


def _set_credentials(doc: dict[str, Any], token: str | None, nodes: tuple[str, ...]) -> None:
    """Supervisor credentials (issue 14): one token per agent node in `security.agent_tokens`, a separate
    admin operator token in `security.operators`, and the shared agent token only when no node has its
    own (Go-era layout) or when `token` is given explicitly."""
    security = doc.setdefault("security", {})
    if not isinstance(security, dict):
        return
    agent_tokens = security.get("agent_tokens")
    if not isinstance(agent_tokens, dict):
        agent_tokens = security["agent_tokens"] = {}
    for node in nodes:
        current = agent_tokens.get(node)
        if not (isinstance(current, str) and token_weakness(current) is None):
            agent_tokens[node] = new_token()
    if token is not None or not agent_tokens:
        _set_token(doc, (("server", "auth_token"), ("auth_token",)), token, generate=True)
    has_operator = any(isinstance(security.get(k), str) and security.get(k)
                       for k in ("operator_token", "operator_token_file")) or bool(security.get("operators"))
    if not has_operator:
        security["operators"] = [{"name": "admin", "role": "admin", "token": new_token()}]


def render_default(kind: str, *, existing: Mapping[str, Any] | None = None, token: str | None = None,
                   nodes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The document `halctl config init KIND` writes: schema defaults under `existing` (which keeps
    every key, unknown ones included), with `token` set, or a generated one for supervisor/agent
    when the existing token is missing or weak (a placeholder such as CHANGE_ME_SHARED_TOKEN).

    For the supervisor, `nodes` get a token each and an admin operator token is added when none exists."""
    if kind not in KINDS:
        raise ValueError(f"unknown config kind {kind!r} (expected one of {', '.join(KINDS)})")
    existing = existing or {}
    base = defaults(kind)
    if kind == "supervisor" and isinstance(existing.get("auto_intervention"), Mapping):
        base.pop("policies", None)  # the alias already carries them
    if kind == "agent":
        base["supervisor_url"] = DEFAULT_AGENT_URL
    if kind == "cli" and "format" in existing:
        base.pop("output", None)  # `output` would override the Go `format`
    if kind == "manifest":
        base = {"version": "1.0", "requirements": {}}
    doc = _under(existing, base)
    if kind == "supervisor":
        _set_credentials(doc, token, nodes)
    elif kind == "agent":
        _set_token(doc, (("auth_token",),), token, generate=True)
    elif kind == "cli":
        _set_token(doc, (("auth_token",),), token, generate=False)
    return doc


def dumps_config(path: str | os.PathLike[str], data: Mapping[str, Any]) -> str:
    """Serialise for `path`: YAML for .yaml/.yml, else JSON with a 2-space indent."""
    if is_yaml_path(path):
        import yaml

        return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_config_atomic(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write `data` so that readers see the old or the new file, never half of one.

    Temp file in the same directory, mode 0600, fsync, rename over the target, fsync the directory.
    An existing target's owner is kept (so root rewriting a service's config does not lock the
    service out).
    """
    import tempfile

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = dumps_config(target, data)
    try:
        owner: tuple[int, int] | None = (target.stat().st_uid, target.stat().st_gid)
    except FileNotFoundError:
        owner = None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        if owner is not None:
            with contextlib.suppress(PermissionError):
                os.fchown(fd, *owner)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
