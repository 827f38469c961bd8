"""The `cost` section of the supervisor config, typed and parsed once (Go rules: go-original.md section 5.1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from halswarm.config.fields import boolean, number, obj, string
from halswarm.config.supervisor import SupervisorConfig

KNOWN_PROVIDERS = ("anthropic", "openai")
DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com"}


@dataclass(frozen=True)
class Rate:
    """USD per 1000 tokens (the Go `model_rates` unit)."""

    input: float = 0.0
    output: float = 0.0

    @property
    def blended(self) -> float:
        """Go rule for a token total without an input/output split: the average of both when both are
        set, else whichever one is."""
        if self.input > 0 and self.output > 0:
            return (self.input + self.output) / 2
        return self.input or self.output


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    api_key: str = field(default="", repr=False)
    enabled: bool = False
    base_url: str = ""
    rates: dict[str, Rate] = field(default_factory=dict)

    @property
    def root(self) -> str:
        """API root without a trailing `/v1` (the paths below add it): `https://api.anthropic.com`."""
        root = (self.base_url or DEFAULT_BASE_URLS.get(self.name, "")).rstrip("/")
        return root[:-3] if root.endswith("/v1") else root


@dataclass(frozen=True)
class CostSettings:
    poll_interval_s: float = 3600.0
    timeout_s: float = 15.0
    max_retries: int = 3
    backoff_base_s: float = 0.5
    degraded_retry_s: float = 60.0
    providers: dict[str, ProviderSettings] = field(default_factory=dict)

    @property
    def enabled(self) -> list[ProviderSettings]:
        return [p for p in self.providers.values() if p.enabled and p.api_key and p.name in KNOWN_PROVIDERS]

    def rates_for(self, provider: str) -> dict[str, Rate]:
        p = self.providers.get(provider)
        return p.rates if p else {}

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> CostSettings:
        return cls.parse(config.section("cost"))

    @classmethod
    def parse(cls, section: Any) -> CostSettings:
        """The `cost` section; ConfigError (one line) for a wrong value, defaults for missing ones."""
        cost = obj(section, "cost")
        providers: dict[str, ProviderSettings] = {}
        for name, p in obj(cost.get("providers"), "cost.providers").items():
            path = f"cost.providers.{name}"
            p = obj(p, path)
            key = next((k for k in (string(p, f, path) for f in ("api_key", "admin_api_key", "org_api_key")) if k), "")
            enabled = boolean(p, "enabled", path, bool(key))
            rates: dict[str, Rate] = {}
            for model, r in obj(p.get("model_rates"), f"{path}.model_rates").items():
                where = f"{path}.model_rates.{model}"
                r = obj(r, where)
                if model:
                    rates[str(model)] = Rate(number(r, "input", where, 0.0, at_least=0),
                                             number(r, "output", where, 0.0, at_least=0))
            providers[str(name)] = ProviderSettings(str(name), key, enabled, string(p, "base_url", path) or "", rates)
        return cls(
            poll_interval_s=number(cost, "poll_interval_minutes", "cost", 60.0, above=0) * 60,
            timeout_s=number(cost, "request_timeout_seconds", "cost", 15.0, above=0),
            max_retries=number(cost, "max_retries", "cost", 3, at_least=0),
            backoff_base_s=number(cost, "backoff_base_ms", "cost", 500.0, above=0) / 1000,
            degraded_retry_s=number(cost, "degraded_retry_seconds", "cost", 60.0, above=0),
            providers=providers,
        )
