"""Pushed credentials on the agent: validation, persistence, the version, where each value went.

The values are handed to the tools (the environment of the processes the agent starts, and
opencode's own credential store through its API) and kept in ``data_dir``:

- ``credentials.values.json`` (0600, written atomically): ``{version, env}``, the values of the last
  push, reloaded at start so pushed credentials survive an agent restart. It is the only file with
  values; a push older than the version held is refused, so it never replaces a newer one.
- ``credentials.json`` (0600): version, variable *names*, where each went; no values (safe to show
  in a diagnostics bundle).

An agent that has ``credentials.json`` but no usable values file (written by a version that kept
values in memory only) reports version 0, so the supervisor sees drift and pushes them again.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halswarm.config.render import write_config_atomic

STATE_FILE = "credentials.json"
VALUES_FILE = "credentials.values.json"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_VARS = 200
MAX_VALUE = 64 * 1024
# Never accepted from a push: they would change how the agent or its tools run, not what they log in with.
RESERVED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LD_PRELOAD", "LD_LIBRARY_PATH",
                      "PYTHONPATH", "HAL_AUTH_TOKEN", "OPENCODE_SERVER_PASSWORD"})


class PushRejected(ValueError):
    """The push payload is invalid; the message names keys, never values."""


class StalePush(PushRejected):
    """The push is older than the credentials this agent holds."""

    def __init__(self, version: int, held: int) -> None:
        super().__init__(f"version {version} is older than version {held} held by this agent; not applied")
        self.version, self.held = version, held


@dataclass(frozen=True)
class Push:
    env_vars: dict[str, str] = field(repr=False)
    version: int

    @property
    def names(self) -> list[str]:
        return sorted(self.env_vars)


def validate_push(args: Mapping[str, Any]) -> Push:
    clean = _valid_env(args.get("env_vars", args.get("env")))
    version = args.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise PushRejected("version must be an integer >= 0")
    return Push(clean, version)


def _valid_env(env: Any) -> dict[str, str]:
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
    return clean


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
    """The two 0600 files in ``data_dir``: the values of the last push, and its version and names."""

    def __init__(self, data_dir: str | os.PathLike[str] | None) -> None:
        self.path = Path(data_dir) / STATE_FILE if data_dir else None
        self.values_path = Path(data_dir) / VALUES_FILE if data_dir else None

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

    def load_values(self) -> Push | None:
        """The persisted push, or None when there is none; PushRejected when the file is unusable
        (its message never quotes a value)."""
        if self.values_path is None or not self.values_path.exists():
            return None
        try:
            doc = json.loads(self.values_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PushRejected(f"{self.values_path} is unreadable ({type(exc).__name__})") from None
        if not isinstance(doc, dict):
            raise PushRejected(f"{self.values_path} does not hold an object")
        return validate_push({"env_vars": doc.get("env"), "version": doc.get("version")})

    def save(self, state: CredentialState, env: Mapping[str, str] | None = None) -> None:
        """Persist a push: the values first (refused when the file holds a newer version), then the
        names and version. Each file is replaced atomically (temp file, fsync, rename)."""
        if self.path is None:
            return
        if env is not None and self.values_path is not None:
            try:
                held = self.load_values()
            except PushRejected:
                held = None  # an unusable file is replaced
            if held is not None and held.version > state.version:
                raise StalePush(state.version, held.version)
            write_config_atomic(self.values_path, {"version": state.version, "env": dict(env),
                                              "applied_at": state.applied_at})
        write_config_atomic(self.path, state.to_json())


def restored_version(state: CredentialState) -> int:
    """The version to report after a restart: kept when every pushed name was also stored outside memory
    (``stored``, e.g. opencode's credential store), 0 when any value lived in memory only and was lost."""
    lost = [n for n in state.names if n not in state.stored]
    return 0 if lost else state.version
