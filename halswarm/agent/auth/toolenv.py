"""The environment the tools' CLIs run in: the agent's user, its HOME, plus pushed credentials.

``ToolEnv`` answers three questions for probes, device flows and credential apply:
which binary (``tool_paths`` > PATH > /usr/local/bin, /usr/bin, /snap/bin), which environment
(the base env, HOME of the service user, then the pushed env vars on top) and which user.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from halswarm.agent.auth.runner import RunAs
from halswarm.agent.capabilities import resolve_binary
from halswarm.core.auth_capability import capability

_DROP = ("OPENCODE_SERVER_PASSWORD", "HAL_AUTH_TOKEN")


@dataclass
class ToolEnv:
    tool_paths: Mapping[str, str] = field(default_factory=dict)
    base_env: Mapping[str, str] | None = None  # None: the agent's own environment
    home: str | None = None  # None: HOME of base_env, else of run_as
    run_as: RunAs | None = None
    pushed: dict[str, str] = field(default_factory=dict, repr=False)
    opencode_binary: str = "opencode"

    def binary(self, tool: str) -> str | None:
        cap = capability(tool)
        if cap is None:
            return None
        default = self.opencode_binary if tool == "opencode" else cap.binary
        configured = self.tool_paths.get(cap.path_key) or None
        if not configured and os.sep not in default:
            # the PATH the tools run with (the service user's, e.g. ~/.local/bin) before the agent's own
            found = shutil.which(default, path=self.env().get("PATH"))
            if found:
                return os.path.abspath(found)
        return resolve_binary(default, configured)

    def env(self) -> dict[str, str]:
        env = dict(os.environ if self.base_env is None else self.base_env)
        for key in _DROP:
            env.pop(key, None)
        home = self.home or (self.run_as.home if self.run_as else None)
        if home:
            env["HOME"] = home
            if self.run_as is not None:
                env["USER"] = env["LOGNAME"] = self.run_as.name
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update(self.pushed)
        return env

    @property
    def home_dir(self) -> Path:
        return Path(self.env().get("HOME") or os.path.expanduser("~"))

    def path_in_env(self, var: str, default: Path) -> Path:
        value = self.env().get(var)
        return Path(value) if value else default

    # ---- per-tool locations (only for diagnosis: the CLIs stay the authority) ----

    def claude_config_dir(self) -> Path:
        return self.path_in_env("CLAUDE_CONFIG_DIR", self.home_dir / ".claude")

    def codex_home(self) -> Path:
        return self.path_in_env("CODEX_HOME", self.home_dir / ".codex")

    def opencode_auth_file(self) -> Path:
        data = self.path_in_env("XDG_DATA_HOME", self.home_dir / ".local" / "share")
        return data / "opencode" / "auth.json"
