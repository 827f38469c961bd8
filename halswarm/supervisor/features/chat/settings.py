"""`chatops.discord.*` of the supervisor config: the application's public key (it verifies every
interaction; not a secret), who may do what, and where follow-ups go."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig
from halswarm.core.roles import Role

DEFAULT_API_BASE = "https://discord.com/api/v10"
_SNOWFLAKE = re.compile(r"^[0-9]{1,20}$")
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_KEY = "chatops.discord"


@dataclass(frozen=True)
class DiscordSettings:
    public_key: bytes | None = None  # 32 raw bytes of the Ed25519 key; None: the route refuses everything
    api_base: str = DEFAULT_API_BASE
    users: dict[str, Role] = field(default_factory=dict)  # Discord user id -> role
    roles: dict[str, Role] = field(default_factory=dict)  # Discord role id -> role
    max_skew_sec: float = 300.0
    followup_timeout_sec: float = 10.0
    guild_id: str | None = None  # channels.discord.guild_id: interactions from anywhere else are refused

    @property
    def enabled(self) -> bool:
        return self.public_key is not None

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> DiscordSettings:
        section = (config.section("chatops") or {}).get("discord") or {}
        if not isinstance(section, dict):
            raise ConfigError.single(_KEY, "must be a mapping")
        out = parse(section)
        channels = (config.section("channels") or {}).get("discord") or {}
        guild = channels.get("guild_id") if isinstance(channels, dict) else None
        if not out.enabled or guild in (None, ""):  # only interactions use it: a Go-era placeholder stays harmless
            return out
        if not isinstance(guild, str | int) or isinstance(guild, bool) or not _SNOWFLAKE.match(str(guild)):
            raise ConfigError.single("channels.discord.guild_id", "must be a Discord id (digits only; quote it)")
        return replace(out, guild_id=str(guild))


def parse(section: dict[str, Any]) -> DiscordSettings:
    """The settings of a `chatops.discord` mapping; ConfigError naming the key of a bad value."""
    key = section.get("public_key")
    if key is not None and (not isinstance(key, str) or not _HEX_KEY.match(key.strip())):
        raise ConfigError.single(f"{_KEY}.public_key", "must be the application's public key: 64 hex digits")
    base = section.get("api_base", DEFAULT_API_BASE)
    if not isinstance(base, str) or not re.match(r"^https?://[^\s/]+", base):
        raise ConfigError.single(f"{_KEY}.api_base", f"must be an http(s) URL (got {base!r})")
    return DiscordSettings(
        public_key=bytes.fromhex(key.strip()) if key else None, api_base=base.rstrip("/"),
        users=_grants(section, "users"), roles=_grants(section, "roles"),
        max_skew_sec=_number(section, "max_skew_sec", 300.0, 5, 3600),
        followup_timeout_sec=_number(section, "followup_timeout_sec", 10.0, 1, 120))


def _grants(section: dict[str, Any], name: str) -> dict[str, Role]:
    raw = section.get(name) or {}
    if not isinstance(raw, dict):
        raise ConfigError.single(f"{_KEY}.{name}", "must map Discord ids to viewer, operator or admin")
    out: dict[str, Role] = {}
    for ident, role in raw.items():
        ident = str(ident)
        if not _SNOWFLAKE.match(ident):
            raise ConfigError.single(f"{_KEY}.{name}", f"{ident!r} is not a Discord id (digits only; quote it)")
        try:
            out[ident] = Role.parse(str(role))
        except ValueError as exc:
            raise ConfigError.single(f"{_KEY}.{name}.{ident}", str(exc)) from None
    return out


def _number(section: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError.single(f"{_KEY}.{name}", f"must be a number from {low:g} to {high:g} (got {value!r})")
    return float(value)
