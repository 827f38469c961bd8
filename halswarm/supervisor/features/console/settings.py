"""`console.*`: the web console's switch and login session lifetimes, typed once from the config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig


def _positive(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError.single(f"console.{key}", f"must be a number > 0 (got {value!r})")
    return float(value)


@dataclass(frozen=True)
class ConsoleSettings:
    enabled: bool = True
    # A login ends after this long without a request, and in any case this long after it began.
    idle_minutes: float = 720.0
    max_hours: float = 168.0
    max_sessions: int = 1000  # stored login sessions at most (the least recently used go first)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError.single("console.enabled", f"must be true or false (got {self.enabled!r})")
        _positive("idle_minutes", self.idle_minutes)
        _positive("max_hours", self.max_hours)

    @property
    def idle_sec(self) -> float:
        return float(self.idle_minutes) * 60.0

    @property
    def max_sec(self) -> float:
        return float(self.max_hours) * 3600.0

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> ConsoleSettings:
        section: Any = config.section("console") or {}
        if not isinstance(section, dict):
            raise ConfigError.single("console", f"must be a mapping (got {section!r})")
        return cls(section.get("enabled", cls.enabled), section.get("idle_minutes", cls.idle_minutes),
                   section.get("max_hours", cls.max_hours))
