"""`policies.*` (alias `auto_intervention`) of the supervisor config, typed and parsed once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from halswarm.config.fields import boolean, number, obj, optional_number, string
from halswarm.config.supervisor import SupervisorConfig

RESUME, COMPACTION, COST = "resume_on_idle", "restart_on_compaction", "kill_on_cost"


@dataclass(frozen=True)
class PolicySettings:
    enabled: bool = False
    max_retries: int = 3
    retry_reset_seconds: float = 3600.0
    idle_threshold_seconds: float = 300.0
    message: str | None = None
    compaction_threshold: int | float | None = None  # as configured (the API answers them as written)
    token_threshold: int | float | None = None
    cost_threshold_usd: int | float | None = None
    daily_limit_usd: int | float | None = None


@dataclass(frozen=True)
class PolicyConfig:
    check_interval_seconds: float = 30.0
    resume: PolicySettings = PolicySettings(max_retries=3)
    compaction: PolicySettings = PolicySettings(max_retries=2)
    cost: PolicySettings = PolicySettings(max_retries=1, retry_reset_seconds=86400.0)

    def of(self, policy: str) -> PolicySettings:
        return {RESUME: self.resume, COMPACTION: self.compaction, COST: self.cost}[policy]

    @property
    def any_enabled(self) -> bool:
        return self.resume.enabled or self.compaction.enabled or self.cost.enabled

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> PolicyConfig:
        return cls.parse(config.section("policies"))

    @classmethod
    def parse(cls, section: Any) -> PolicyConfig:
        """From the normalized `policies` section (`auto_intervention` already folded into it); ConfigError
        (one line) for a wrong value, defaults for missing ones."""
        p = obj(section, "policies")

        def sec(name: str) -> tuple[Mapping[str, Any], str]:
            return obj(p.get(name), f"policies.{name}"), f"policies.{name}"

        def base(m: Mapping[str, Any], path: str, retries: int, reset: float) -> dict[str, Any]:
            return {"enabled": boolean(m, "enabled", path, False),
                    "max_retries": number(m, "max_retries", path, retries, above=0),
                    "retry_reset_seconds": number(m, "retry_reset_seconds", path, reset, above=0)}

        (r, rp), (c, cp), (k, kp) = sec(RESUME), sec(COMPACTION), sec(COST)
        return cls(
            check_interval_seconds=number(p, "check_interval_seconds", "policies", 30.0, above=0),
            resume=PolicySettings(**base(r, rp, 3, 3600.0),
                                  idle_threshold_seconds=number(r, "idle_threshold_seconds", rp, 300.0, above=0),
                                  message=string(r, "message", rp)),
            compaction=PolicySettings(**base(c, cp, 2, 3600.0),
                                      compaction_threshold=optional_number(c, "compaction_threshold", cp),
                                      token_threshold=optional_number(c, "token_threshold", cp)),
            cost=PolicySettings(**base(k, kp, 1, 86400.0),
                                cost_threshold_usd=optional_number(k, "cost_threshold_usd", kp),
                                daily_limit_usd=optional_number(k, "daily_limit_usd", kp)),
        )

    def to_api(self) -> dict[str, Any]:
        def clean(s: PolicySettings, keys: Iterable[str]) -> dict[str, Any]:
            d = asdict(s)
            return {k: d[k] for k in ("enabled", *keys, "max_retries", "retry_reset_seconds")}

        return {RESUME: clean(self.resume, ("idle_threshold_seconds", "message")),
                COMPACTION: clean(self.compaction, ("compaction_threshold", "token_threshold")),
                COST: clean(self.cost, ("cost_threshold_usd", "daily_limit_usd"))}
