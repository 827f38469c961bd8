"""`halctl config validate FILE` and `halctl config init supervisor|agent|cli`.

The work is done by `halswarm.config` (validation, defaults, atomic 0600 writes); this module only
parses arguments, loads an existing file so no key is ever dropped, and never shows a token in full.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from halswarm.cli.context import app
from halswarm.cli.errors import HalctlError

DEFAULT_PATHS = {
    "supervisor": "/etc/hal-o-swarm/supervisor.config.json",
    "agent": "/etc/hal-o-swarm/agent.config.json",
    "cli": "~/.config/halctl/config.yaml",  # $XDG_CONFIG_HOME/halctl/config.yaml when that is set
}
VALIDATE_KINDS = ("supervisor", "agent", "cli", "manifest")


def mask_secret(value: Any) -> str:
    """First 4 characters and an ellipsis; short secrets are hidden entirely."""
    if not value:
        return "(none)"
    text = str(value)
    return f"{text[:4]}…" if len(text) >= 12 else "…"


def _load_existing(path: Path) -> dict[str, Any]:
    """The current file's content, so that `init --force` keeps every key it has."""
    from halswarm.config.loader import read_config_file

    try:
        if not path.read_bytes().strip():
            return {}
        return dict(read_config_file(path))
    except Exception as exc:
        problems = getattr(exc, "problems", None)
        detail = "; ".join(str(p) for p in problems) if problems else " ".join(str(exc).split())
        raise HalctlError(f"{path}: cannot read the existing file ({detail}); fix or move it first") from exc


def _token_of(data: Mapping[str, Any]) -> tuple[str, Any]:
    server = data.get("server")
    if isinstance(server, Mapping) and (server.get("auth_token") or server.get("auth_token_file")):
        if server.get("auth_token"):
            return "server.auth_token", mask_secret(server["auth_token"])
        return "server.auth_token_file", server["auth_token_file"]
    if data.get("auth_token"):
        return "auth_token", mask_secret(data["auth_token"])
    if data.get("auth_token_file"):
        return "auth_token_file", data["auth_token_file"]
    return "auth_token", "(none)"


@click.group("config")
def config() -> None:
    """Validate and create configuration files."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(VALIDATE_KINDS), help="Kind of file (default: detected).")
@click.option("--strict", is_flag=True, help="Treat unknown keys as errors.")
@click.pass_context
def validate(ctx: click.Context, file: str, kind: str | None, strict: bool) -> None:
    """Check FILE against its schema; prints `PATH: message` per problem. Exit 0 valid, 1 invalid."""
    from halswarm.config.report import run_validate

    ctx.exit(run_validate(file, kind, strict=strict))


validate.plain_output = True  # type: ignore[attr-defined]  # `PATH: message` lines only: no -o


@config.command("init")
@click.argument("kind", type=click.Choice(("supervisor", "agent", "cli")))
@click.option("--path", "path_opt", type=click.Path(dir_okay=False), help="Where to write [default per kind].")
@click.option("--force", is_flag=True, help="Update an existing file (keys it already has are kept).")
@click.option("--node", "nodes", multiple=True, metavar="NODE_ID",
              help="supervisor: generate this agent node's own token in security.agent_tokens (repeatable).")
def init(kind: str, path_opt: str | None, force: bool, nodes: tuple[str, ...]) -> None:
    """Write a default config for KIND (0600, atomically); tokens are shown masked.

    A supervisor config gets a separate admin operator token (security.operators) and, per --node, that
    agent's own token (security.agent_tokens); without --node, the shared agent token (auth_token).

    Defaults: supervisor /etc/hal-o-swarm/supervisor.config.json, agent /etc/hal-o-swarm/agent.config.json,
    cli ~/.config/halctl/config.yaml ($XDG_CONFIG_HOME respected). The global --auth-token (or
    HALCTL_AUTH_TOKEN) sets the token; for `cli`, an explicit --supervisor-url is stored too.
    """
    from halswarm.cli.output import emit
    from halswarm.config.render import render_default, write_config_atomic

    ctx = app()
    if path_opt:
        target = Path(path_opt).expanduser()
    elif kind == "cli":
        from halswarm.config.cli import default_cli_config_path

        target = default_cli_config_path()
    else:
        target = Path(DEFAULT_PATHS[kind])
    existing: dict[str, Any] | None = None
    updating = target.exists()
    if updating:
        if not force:
            raise HalctlError(f"{target} already exists; use --force to update it (existing keys are kept)")
        existing = _load_existing(target)
    if kind == "cli" and ctx.explicit_supervisor_url:
        existing = {**(existing or {}), "supervisor_url": ctx.explicit_supervisor_url}
    if nodes and kind != "supervisor":
        raise HalctlError("--node is for `config init supervisor` (agent tokens live in the supervisor config)")
    data = render_default(kind, existing=existing, token=ctx.explicit_auth_token, nodes=tuple(nodes))
    try:
        write_config_atomic(target, data)
    except OSError as exc:
        raise HalctlError(f"{target}: cannot write: {exc.strerror or exc}") from exc

    token_key, token_shown = _token_of(data)
    summary = {
        "path": str(target),
        "kind": kind,
        "action": "updated" if updating else "created",
        "mode": "0600",
        token_key: token_shown,
    }

    security = data.get("security") if kind == "supervisor" else None
    if isinstance(security, Mapping):
        for op in security.get("operators") or []:
            if isinstance(op, Mapping) and op.get("token"):
                summary[f"operators.{op.get('name')}"] = f"{op.get('role')} {mask_secret(op['token'])}"
        for node in nodes:
            summary[f"agent_tokens.{node}"] = mask_secret((security.get("agent_tokens") or {}).get(node))

    def table() -> None:
        click.echo(f"{summary['action']} {target} (mode 0600)")
        for key, value in summary.items():
            if key not in ("path", "kind", "action", "mode"):
                click.echo(f"{key}: {value}")

    try:
        fmt = ctx.output
    except HalctlError:  # a broken CLI config file must not stop us from writing a new one
        fmt = "table"
    emit(fmt, summary, table)
