"""`halctl chatops discord register [--guild ID] [--remove]` and `unregister [--guild ID]` (SPEC 11): the
slash commands of the supervisor's Discord interactions, registered or removed through Discord's REST API
(docs/chatops.md).

Discord's bulk-overwrite route replaces the application's whole command set in one call: registering twice
is harmless, and `--remove` sends the empty set. The bot token is read from a file and never printed: any
text echoed back by Discord is redacted by value before it is shown."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from halswarm.cli.errors import HalctlError, UsageProblem

DEFAULT_API_BASE = "https://discord.com/api/v10"


@click.group("chatops")
def chatops() -> None:
    """Chat front-ends of the supervisor."""


@chatops.group("discord")
def discord() -> None:
    """Discord slash commands (Interactions Endpoint URL)."""


def _token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise HalctlError(f"cannot read the bot token file {path}: {exc.strerror or exc}") from None
    if not token or any(c.isspace() for c in token):
        raise HalctlError(f"the bot token file {path} must hold one token on one line")
    return token


def _discord_options(fn: Any) -> Any:
    for option in reversed((
        click.option("--application-id", envvar="HALCTL_DISCORD_APPLICATION_ID", required=True, metavar="ID",
                     help="The Discord application id [env HALCTL_DISCORD_APPLICATION_ID]."),
        click.option("--bot-token-file", envvar="HALCTL_DISCORD_BOT_TOKEN_FILE", required=True, metavar="PATH",
                     type=click.Path(dir_okay=False),
                     help="File holding the bot token [env HALCTL_DISCORD_BOT_TOKEN_FILE]."),
        click.option("--guild", "guild_id", envvar="HALCTL_DISCORD_GUILD_ID", metavar="ID",
                     help="Only this guild (at once; the supervisor's channels.discord.guild_id) "
                          "[env HALCTL_DISCORD_GUILD_ID]; else globally."),
        click.option("--api-base", envvar="HALCTL_DISCORD_API_BASE", default=DEFAULT_API_BASE, show_default=True,
                     metavar="URL", help="Discord API root [env HALCTL_DISCORD_API_BASE]."),
    )):
        fn = option(fn)
    return fn


@discord.command("register")
@_discord_options
@click.option("--remove", is_flag=True, help="Remove the commands instead (same as `unregister`).")
def register(application_id: str, bot_token_file: str, guild_id: str | None, remove: bool, api_base: str) -> None:
    """Register the supervisor's slash commands (or remove them with --remove)."""
    _put_commands(application_id, bot_token_file, guild_id, remove, api_base)


@discord.command("unregister")
@_discord_options
def unregister(application_id: str, bot_token_file: str, guild_id: str | None, api_base: str) -> None:
    """Remove the supervisor's slash commands."""
    _put_commands(application_id, bot_token_file, guild_id, True, api_base)


def _put_commands(application_id: str, bot_token_file: str, guild_id: str | None, remove: bool,
                  api_base: str) -> None:
    import httpx

    from halswarm.core.chatops.commands import registration_payload
    from halswarm.core.secret_values import SecretValues

    for name, value in (("--application-id", application_id), ("--guild", guild_id)):
        if value is not None and not value.isdigit():
            raise UsageProblem(f"{name} must be a Discord id (digits only)")
    token = _token(os.path.expanduser(bot_token_file))
    secrets = SecretValues()
    secrets.add(token)
    scope = f"/guilds/{guild_id}" if guild_id else ""
    url = f"{api_base.rstrip('/')}/applications/{application_id}{scope}/commands"
    body = [] if remove else registration_payload()
    try:
        r = httpx.put(url, json=body, headers={"Authorization": f"Bot {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        raise HalctlError(f"Discord API unreachable: {secrets.scrub_values(str(exc))[:200]}") from None
    if r.status_code >= 300:
        detail = secrets.scrub_values(r.text[:300])
        raise HalctlError(f"Discord refused the commands: HTTP {r.status_code} {detail}")
    where = f"guild {guild_id}" if guild_id else "all guilds (global)"
    if remove:
        click.echo(f"removed the slash commands from {where}")
    else:
        names = ", ".join(f"/{c['name']}" for c in body)
        click.echo(f"registered {len(body)} slash commands for {where}: {names}")


register.plain_output = True  # type: ignore[attr-defined]
unregister.plain_output = True  # type: ignore[attr-defined]
