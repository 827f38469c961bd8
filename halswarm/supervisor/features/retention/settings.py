"""`retention.events_days` / `retention.audit_days` (or the Go key `security.audit.retention_days`),
typed once by the config loader; the retention job reads them from here."""

from __future__ import annotations

from dataclasses import dataclass

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig


@dataclass(frozen=True)
class RetentionSettings:
    events_days: int = 30
    audit_days: int = 90

    def __post_init__(self) -> None:
        for key, value in (("events_days", self.events_days), ("audit_days", self.audit_days)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError.single(f"retention.{key}", f"must be an integer >= 1 (got {value!r})")

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> RetentionSettings:
        return cls(config.events_retention_days, config.audit_retention_days)
