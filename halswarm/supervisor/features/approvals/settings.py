"""`approvals.timeout_minutes` and `approvals.on_timeout`, typed once from the config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig

REJECT, ESCALATE = "reject", "escalate"
ON_TIMEOUT = (REJECT, ESCALATE)


@dataclass(frozen=True)
class ApprovalSettings:
    # A request left unanswered this long is rejected or escalated; 0: never (the default).
    timeout_minutes: float = 0.0
    on_timeout: str = REJECT

    def __post_init__(self) -> None:
        v = self.timeout_minutes
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ConfigError.single("approvals.timeout_minutes", f"must be a number >= 0 (got {v!r})")
        if self.on_timeout not in ON_TIMEOUT:
            raise ConfigError.single("approvals.on_timeout",
                                     f"must be one of {'|'.join(ON_TIMEOUT)} (got {self.on_timeout!r})")

    @property
    def enabled(self) -> bool:
        return self.timeout_minutes > 0

    @property
    def timeout_sec(self) -> float:
        return float(self.timeout_minutes) * 60.0

    @property
    def check_interval_sec(self) -> float:
        """A quarter of the timeout, between 0.2 s and 30 s."""
        return min(30.0, max(0.2, self.timeout_sec / 4))

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> ApprovalSettings:
        section: Any = config.section("approvals") or {}
        if not isinstance(section, dict):
            raise ConfigError.single("approvals", f"must be a mapping (got {section!r})")
        return cls(section.get("timeout_minutes", cls.timeout_minutes), section.get("on_timeout", cls.on_timeout))
