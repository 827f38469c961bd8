"""`sessions.memory_grace_seconds`, typed once from the config."""

from __future__ import annotations

import math
from dataclasses import dataclass

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig

KEY = "sessions.memory_grace_seconds"


@dataclass(frozen=True)
class SessionSettings:
    memory_grace_seconds: float = 300.0  # an ended session leaves memory this long after its last change

    def __post_init__(self) -> None:
        v = self.memory_grace_seconds
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ConfigError.single(KEY, f"must be a number >= 0 (got {v!r})")

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> SessionSettings:
        section = config.section("sessions") or {}
        if not isinstance(section, dict):
            raise ConfigError.single("sessions", f"must be a mapping (got {section!r})")
        return cls(section.get("memory_grace_seconds", cls.memory_grace_seconds))
