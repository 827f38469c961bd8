"""`chatops.slack.*` of the supervisor config: the signing secret (it verifies every request), the bot
token and channel the approval and escalation messages with buttons are posted to, and who may do what.

Secrets come from env (`HAL_SLACK_SIGNING_SECRET`, `HAL_SLACK_BOT_TOKEN`), else from `signing_secret_file` /
`bot_token_file` (0600 files; an unreadable or empty file stops the start), never inline in the config."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from halswarm.config.errors import ConfigError
from halswarm.config.secrets import resolve_secret
from halswarm.config.supervisor import SupervisorConfig
from halswarm.core.roles import Role
from halswarm.core.secret_values import SECRETS

DEFAULT_API_BASE = "https://slack.com/api"
DEFAULT_RESPONSE_BASE = "https://hooks.slack.com/"
ENV_SIGNING_SECRET, ENV_BOT_TOKEN = "HAL_SLACK_SIGNING_SECRET", "HAL_SLACK_BOT_TOKEN"
_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")  # U... (W... on Enterprise Grid)
_GROUP = re.compile(r"^S[A-Z0-9]{2,20}$")
_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,20}$")
_KEY = "chatops.slack"
log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class SlackSettings:
    signing_secret: str | None = None  # None: both routes refuse every request
    bot_token: str | None = None  # None: no messages posted, no user groups resolved
    channel: str | None = None  # where requests, alerts, escalations are posted with buttons
    users: dict[str, Role] = field(default_factory=dict)  # Slack user id -> role
    groups: dict[str, Role] = field(default_factory=dict)  # Slack user group id -> role of its members
    api_base: str = DEFAULT_API_BASE
    response_base: str = DEFAULT_RESPONSE_BASE  # response_url must start with it (no request elsewhere)
    max_skew_sec: float = 300.0
    http_timeout_sec: float = 10.0
    group_refresh_sec: float = 300.0

    def __repr__(self) -> str:  # the secrets never appear in a log line
        return f"SlackSettings(enabled={self.enabled}, channel={self.channel!r}, users={len(self.users)})"

    @property
    def enabled(self) -> bool:
        return self.signing_secret is not None

    @property
    def posts(self) -> bool:
        return self.bot_token is not None and self.channel is not None

    @classmethod
    def from_config(cls, config: SupervisorConfig, env: Mapping[str, str] | None = None) -> SlackSettings:
        section = (config.section("chatops") or {}).get("slack") or {}
        if not isinstance(section, dict):
            raise ConfigError.single(_KEY, "must be a mapping")
        return parse(section, os.environ if env is None else env, config.source_path)


def parse(section: dict[str, Any], env: Mapping[str, str], source_path: str | None = None) -> SlackSettings:
    """The settings of a `chatops.slack` mapping; ConfigError naming the key of a bad value."""
    for inline in ("signing_secret", "bot_token"):
        if section.get(inline) is not None:
            raise ConfigError.single(f"{_KEY}.{inline}", f"put it in a 0600 file named by {inline}_file, or env")
    secret = _secret(section, "signing_secret_file", ENV_SIGNING_SECRET, env, source_path)
    token = _secret(section, "bot_token_file", ENV_BOT_TOKEN, env, source_path)
    if token is not None and not token.startswith("xox"):
        raise ConfigError.single(f"{_KEY}.bot_token_file", "is not a Slack bot token (xoxb-...)")
    SECRETS.add(secret, token)
    channel = section.get("channel")
    if channel is not None and (not isinstance(channel, str) or not _CHANNEL.match(channel)):
        raise ConfigError.single(f"{_KEY}.channel", f"must be a Slack channel id like C0123ABCD (got {channel!r})")
    return SlackSettings(
        signing_secret=secret, bot_token=token, channel=channel,
        users=_grants(section, "users", _USER, "a Slack user id (U...)"),
        groups=_grants(section, "groups", _GROUP, "a Slack user group id (S...)"),
        api_base=_url(section, "api_base", DEFAULT_API_BASE).rstrip("/"),
        response_base=_url(section, "response_base", DEFAULT_RESPONSE_BASE),
        max_skew_sec=_number(section, "max_skew_sec", 300.0, 5, 3600),
        http_timeout_sec=_number(section, "http_timeout_sec", 10.0, 1, 120),
        group_refresh_sec=_number(section, "group_refresh_sec", 300.0, 10, 86400))


def _secret(section: dict[str, Any], key: str, env_var: str, env: Mapping[str, str],
            source_path: str | None) -> str | None:
    raw = section.get(key)
    if raw is not None and (not isinstance(raw, str) or not raw.strip()):
        raise ConfigError.single(f"{_KEY}.{key}", "must be a file path")
    result = resolve_secret({"f": raw} if raw else {}, inline=(), files=("f",), env_var=env_var, env=env,
                            source_path=source_path)
    errors = [p for p in result.problems if p.severity == "error"]
    if errors:
        raise ConfigError.single(f"{_KEY}.{key}", errors[0].message)
    for warning in result.problems:  # e.g. readable by group/others
        log.warning("%s.%s: %s", _KEY, key, warning.message)
    return result.value


def _grants(section: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> dict[str, Role]:
    raw = section.get(name) or {}
    if not isinstance(raw, dict):
        raise ConfigError.single(f"{_KEY}.{name}", "must map Slack ids to viewer, operator or admin")
    out: dict[str, Role] = {}
    for ident, role in raw.items():
        ident = str(ident)
        if not pattern.match(ident):
            raise ConfigError.single(f"{_KEY}.{name}", f"{ident!r} is not {what}")
        try:
            out[ident] = Role.parse(str(role))
        except ValueError as exc:
            raise ConfigError.single(f"{_KEY}.{name}.{ident}", str(exc)) from None
    return out


def _url(section: dict[str, Any], name: str, default: str) -> str:
    value = section.get(name, default)
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise ConfigError.single(f"{_KEY}.{name}", f"must be an http(s) URL (got {value!r})")
    return value


def _number(section: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError.single(f"{_KEY}.{name}", f"must be a number from {low:g} to {high:g} (got {value!r})")
    return float(value)
