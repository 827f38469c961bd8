"""Per-session cost estimates from `model_rates` (USD per 1000 tokens) and model -> provider mapping.

Agents report models as opencode writes them, `provider/model` (e.g. `anthropic/claude-sonnet-4-5`);
a bare model name is matched against each provider's `model_rates`, then by well-known prefixes.
"""

from __future__ import annotations

from collections.abc import Mapping

from halswarm.core.cost import UNKNOWN_MODEL
from halswarm.supervisor.features.cost.settings import Rate

_PREFIXES = {"anthropic": ("claude",), "openai": ("gpt", "o1", "o3", "o4", "chatgpt", "codex")}


def split_model(model: str | None) -> tuple[str | None, str]:
    """`anthropic/claude-x` -> ("anthropic", "claude-x"); `claude-x` -> (None, "claude-x")."""
    if not model:
        return None, UNKNOWN_MODEL
    if "/" in model:
        prefix, name = model.split("/", 1)
        return prefix.strip().lower() or None, name.strip() or UNKNOWN_MODEL
    return None, model.strip() or UNKNOWN_MODEL


def find_rate(name: str, rates: Mapping[str, Rate]) -> Rate | None:
    """Exact model name, else the longest configured name it starts with (`claude-sonnet-4-5` covers
    `claude-sonnet-4-5-20250929`)."""
    if name in rates:
        return rates[name]
    best = max((k for k in rates if name.startswith(k)), key=len, default=None)
    return rates[best] if best is not None else None


def provider_of(model: str | None, rates_by_provider: Mapping[str, Mapping[str, Rate]]) -> tuple[str, str]:
    """(provider, bare model name) for a session's model."""
    prefix, name = split_model(model)
    if prefix:
        return prefix, name
    for provider, rates in rates_by_provider.items():
        if find_rate(name, rates) is not None:
            return provider, name
    low = name.lower()
    for provider, prefixes in _PREFIXES.items():
        if low.startswith(prefixes):
            return provider, name
    return "unknown", name


def estimate(rate: Rate | None, input_tokens: int, output_tokens: int, total_tokens: int = 0) -> float:
    """USD for some tokens; input/output priced separately when the split is known, else Go's blended rate."""
    if rate is None:
        return 0.0
    if input_tokens or output_tokens:
        split = input_tokens * rate.input + output_tokens * rate.output
        rest = max(0, total_tokens - input_tokens - output_tokens) * rate.blended
        return (split + rest) / 1000.0
    return total_tokens * rate.blended / 1000.0
