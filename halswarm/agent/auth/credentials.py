"""Pushed credentials on the agent: validation, the persisted version, where each value went.

Values live in memory (they are handed to the tools: the environment of the processes the agent
starts, and opencode's own credential store through its API). On disk (``data_dir``, 0600) only the
version and the variable *names* are kept. After an agent restart the values that existed only in
memory are gone; the agent then reports version 0, the supervisor sees drift and (when it has the
credentials configured) pushes them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "credentials.json"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_VARS = 200
MAX_VALUE = 64 * 1024
# Never accepted from a push: they would change how the agent or its tools run, not what they log in with.
RESERVED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LD_PRELOAD", "LD_LIBRARY_PATH",
                      "PYTHONPATH", "HAL_AUTH_TOKEN", "OPENCODE_SERVER_PASSWORD"})


class PushRejected(ValueError):
    """The push payload is invalid; the message names keys, never values."""


@dataclass(frozen=True)
class Push:
    env_vars: dict[str, str] = field(repr=False)
    version: int

    @property
    def names(self) -> list[str]:
        return sorted(self.env_vars)


def validate_push(args: Mapping[str, Any]) -> Push:
    env = args.get("env_vars", args.get("env"))
    if not isinstance(env, Mapping) or not env:
        raise PushRejected("env_vars must be a non-empty object of NAME: value")
    if len(env) > MAX_VARS:
        raise PushRejected(f"at most {MAX_VARS} variables per push")
    clean: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise PushRejected(f"invalid variable name {str(name)[:60]!r}")
        if name.upper() in RESERVED:
            raise PushRejected(f"variable {name} may not be pushed")
        if not isinstance(value, str) or not value:
            raise PushRejected(f"value of {name} must be a non-empty string")
        if len(value) > MAX_VALUE or "\x00" in value:
            raise PushRejected(f"value of {name} is too long or holds a NUL byte")
        clean[name] = value
    version = args.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise PushRejected("version must be an integer >= 0")
    return Push(clean, version)


@dataclass
class CredentialState:
    version: int = 0
    names: list[str] = field(default_factory=list)
    # name -> where the value lives besides memory ("opencode:<provider>"): those survive a restart
    stored: dict[str, str] = field(default_factory=dict)
    applied_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "names": self.names, "stored": self.stored, "applied_at": self.applied_at}


class CredentialStore:
    """The 0600 state file in ``data_dir`` (names and version only)."""

    def __init__(self, data_dir: str | os.PathLike[str] | None) -> None:
        self.path = Path(data_dir) / STATE_FILE if data_dir else None

    def load(self) -> CredentialState:
        if self.path is None:
            return CredentialState()
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return CredentialState()
        if not isinstance(doc, dict):
            return CredentialState()
        version = doc.get("version")
        names = doc.get("names")
        stored = doc.get("stored")
        return CredentialState(
            version=version if isinstance(version, int) and not isinstance(version, bool) and version >= 0 else 0,
            names=[n for n in names if isinstance(n, str)] if isinstance(names, list) else [],
            stored={k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)}
            if isinstance(stored, dict) else {},
            applied_at=doc.get("applied_at") if isinstance(doc.get("applied_at"), int | float) else None,
        )

    def save(self, state: CredentialState) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".credentials.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(state.to_json(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def restored_version(state: CredentialState) -> int:
    """The version to report after a restart: kept when every pushed name was also stored outside memory
    (``stored``, e.g. opencode's credential store), 0 when any value lived in memory only and was lost."""
    lost = [n for n in state.names if n not in state.stored]
    return 0 if lost else state.version
