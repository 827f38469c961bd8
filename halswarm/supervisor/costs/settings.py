"""The `cost` section of the supervisor config, typed (Go rules: go-original.md section 5.1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    def from_raw(cls, raw: Mapping[str, Any]) -> CostSettings:
        cost = found if isinstance(found := raw.get("cost"), Mapping) else {}

        def pos(key: str, default: float) -> float:
            v = cost.get(key)
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else default

        providers: dict[str, ProviderSettings] = {}
        given = found if isinstance(found := cost.get("providers"), Mapping) else {}
        for name, p in given.items():
            if not isinstance(p, Mapping):
                continue
            key = next((p[k].strip() for k in ("api_key", "admin_api_key", "org_api_key")
                        if isinstance(p.get(k), str) and p[k].strip()), "")
            enabled = p["enabled"] if isinstance(p.get("enabled"), bool) else bool(key)
            rates: dict[str, Rate] = {}
            for model, r in (p.get("model_rates") or {}).items():
                if isinstance(r, Mapping) and model:
                    rates[str(model)] = Rate(float(r.get("input") or 0.0), float(r.get("output") or 0.0))
            base = found if isinstance(found := p.get("base_url"), str) else ""
            providers[str(name)] = ProviderSettings(str(name), key, enabled, base.strip(), rates)
        retries = cost.get("max_retries")
        return cls(
            poll_interval_s=pos("poll_interval_minutes", 60) * 60,
            timeout_s=pos("request_timeout_seconds", 15),
            max_retries=retries if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0 else 3,
            backoff_base_s=pos("backoff_base_ms", 500) / 1000,
            degraded_retry_s=pos("degraded_retry_seconds", 60),
            providers=providers,
        )
