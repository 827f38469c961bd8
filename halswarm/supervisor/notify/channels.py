"""Route targets -> where and how to POST, from the `channels` config section.

    discord#<name>  channels.discord.channels.<name> holding a webhook URL -> that webhook;
                    holding a channel id, with channels.discord.bot_token -> the bot API
                    (POST {api_base}/channels/<id>/messages, `Authorization: Bot ...`): only these
                    messages carry buttons (a webhook not owned by the application cannot), and they
                    are edited once their permission request is answered;
                    else channels.discord.webhook_url (one webhook for every Discord route)
    slack#<name>    channels.slack.channels.<name> holding an incoming-webhook URL -> that webhook;
                    holding a channel id, with channels.slack.bot_token -> chat.postMessage;
                    else channels.slack.webhook_url
    n8n             channels.n8n.webhook_url (JSON POST)
    webhook:<url>   JSON POST to the URL
`api_base` (Discord default https://discord.com/api/v10, Slack https://slack.com/api) is configurable
for tests and proxies. Webhook URLs carry secrets: logs and metrics name targets, never full URLs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from halswarm.supervisor.notify.formats import Notification, discord_payload, slack_payload, webhook_payload

DISCORD_API = "https://discord.com/api/v10"
SLACK_API = "https://slack.com/api"


class ChannelError(ValueError):
    pass


@dataclass(frozen=True, repr=False)
class Channel:
    target: str
    kind: str  # discord_webhook | discord_bot | slack_webhook | slack_bot | json
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    channel_id: str | None = None
    console_url: str | None = None  # the web console's public URL (channels.discord.console_url)

    def __repr__(self) -> str:
        return f"Channel({self.label!r}, {self.kind!r})"

    @cached_property
    def label(self) -> str:
        """Safe to log and to use as a metric label."""
        if self.target.startswith("webhook:"):
            parts = urlsplit(self.target[len("webhook:"):])
            return f"webhook:{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"
        return self.target

    def payload(self, n: Notification) -> dict[str, Any]:
        if self.kind == "discord_webhook":
            return discord_payload(n, console_url=self.console_url)
        if self.kind == "discord_bot":
            return discord_payload(n, webhook=False, console_url=self.console_url)
        if self.kind == "slack_webhook":
            return slack_payload(n)
        if self.kind == "slack_bot":
            return slack_payload(n, self.channel_id)
        return webhook_payload(n, self.label)

    def refusal(self, status: int, body: Callable[[], Any]) -> str | None:
        """Why a 2xx answer still means 'not delivered' (Slack's Web API answers 200 {"ok": false})."""
        if self.kind == "slack_bot":
            try:
                data = body()
            except ValueError:
                return "Slack answered without JSON"
            if not isinstance(data, dict) or not data.get("ok"):
                return f"Slack refused: {data.get('error') if isinstance(data, dict) else data!r}"
        return None


def _is_url(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def _section(channels: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    v = channels.get(name)
    return v if isinstance(v, Mapping) else {}


def resolve(target: str, channels: Mapping[str, Any]) -> Channel:
    """A Channel for a route target, or ChannelError saying what configuration is missing."""
    if target.startswith("webhook:"):
        url = target[len("webhook:"):].strip()
        if not _is_url(url):
            raise ChannelError(f"{target}: not an http(s) URL")
        return Channel(target, "json", url)
    if target == "n8n":
        hook = _section(channels, "n8n").get("webhook_url")
        if not _is_url(hook):
            raise ChannelError("n8n: channels.n8n.webhook_url is not set")
        return Channel(target, "json", hook.strip())
    for kind in ("discord", "slack"):
        if target.startswith(f"{kind}#"):
            return _chat(kind, target, target[len(kind) + 1:], _section(channels, kind))
    raise ChannelError(f"{target}: unknown target (use discord#<channel>, slack#<channel>, n8n or webhook:<url>)")


def _chat(kind: str, target: str, name: str, cfg: Mapping[str, Any]) -> Channel:
    mapped = _section(cfg, "channels").get(name)
    console = cfg.get("console_url") if kind == "discord" else None
    console_url = console.strip().rstrip("/") if _is_url(console) else None
    if _is_url(mapped):
        return Channel(target, f"{kind}_webhook", mapped.strip(), console_url=console_url)
    token = cfg.get("bot_token")
    if isinstance(mapped, str) and mapped.strip() and isinstance(token, str) and token.strip():
        base = str(cfg.get("api_base") or (DISCORD_API if kind == "discord" else SLACK_API)).rstrip("/")
        if kind == "discord":
            return Channel(target, "discord_bot", f"{base}/channels/{mapped.strip()}/messages",
                           {"Authorization": f"Bot {token.strip()}"}, console_url=console_url)
        return Channel(target, "slack_bot", f"{base}/chat.postMessage",
                       {"Authorization": f"Bearer {token.strip()}"}, mapped.strip())
    if _is_url(cfg.get("webhook_url")):
        return Channel(target, f"{kind}_webhook", cfg["webhook_url"].strip(), console_url=console_url)
    raise ChannelError(f"{target}: set channels.{kind}.channels.{name} to a webhook URL (or a channel id with "
                       f"channels.{kind}.bot_token), or channels.{kind}.webhook_url")
