"""`database.integrity_check_hours`, typed once from the config."""

from __future__ import annotations

from dataclasses import dataclass

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig


@dataclass(frozen=True)
class IntegritySettings:
    check_hours: float = 24.0  # 0: only the check at start-up

    def __post_init__(self) -> None:
        value = self.check_hours
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError.single("database.integrity_check_hours", f"must be a number >= 0 (got {value!r})")

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> IntegritySettings:
        return cls(config.integrity_check_hours)
