"""`alerts.*` of the supervisor config (the token itself is resolved by the config loader as a secret)."""

from __future__ import annotations

from dataclasses import dataclass

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig
from halswarm.core.alerts import MAX_ALERTS


@dataclass(frozen=True)
class AlertSettings:
    max_alerts: int = MAX_ALERTS
    auto: tuple[str, ...] = ()  # remediation.auto: incidents an alert starts by itself
    chat_check: tuple[str, ...] = ()  # remediation.chat_check: incidents a chat admin may run in check mode
    inventory: str | None = None  # remediation.inventory, for the command routed to operators
    supervisor_host: str | None = None  # remediation.supervisor_host

    def __post_init__(self) -> None:
        value = self.max_alerts
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise ConfigError.single("alerts.max_alerts", f"must be an integer from 1 to 1000 (got {value!r})")

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> AlertSettings:
        section = config.section("alerts") or {}
        return cls(max_alerts=section.get("max_alerts", MAX_ALERTS), auto=tuple(config.remediation_auto),
                   chat_check=tuple(config.remediation_chat_check),
                   inventory=config.remediation_inventory, supervisor_host=config.remediation_supervisor_host)
