"""Which configured values of the supervisor are secrets (registered for by-value redaction)."""

from __future__ import annotations

from typing import Any

from halswarm.core.secret_values import SECRETS, SecretValues, config_secret_values


def register_config_secrets(cfg: Any, registry: SecretValues = SECRETS) -> int:
    """Add the agent, per-node and operator tokens, provider keys, webhook URLs and credential-push
    values of `cfg` (a SupervisorConfig) to `registry`; returns how many values it now holds."""
    values: list[str | None] = [getattr(cfg, "auth_token", None), getattr(cfg, "operator_token", None),
                                   getattr(cfg, "alert_token", None), getattr(cfg, "storage_password", None)]
    values += list(getattr(cfg, "agent_tokens", {}).values())
    values += [ident.token for ident in getattr(cfg, "operators", ())]  # named operators, token_file ones too
    values += sorted(config_secret_values(getattr(cfg, "raw", {})))
    registry.add(*values)
    return len(registry)
