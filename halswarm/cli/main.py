"""`halctl`: the operator CLI. Root group, global options, and the one place errors become exit codes.

Exit codes: 0 ok, 1 failure, 2 usage error, 3 cannot reach the supervisor, 4 authentication failed.
Start-up stays fast: command modules import only click here; httpx, rich and yaml load on use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from halswarm.cli.agentmd_cmd import agentmd
from halswarm.cli.approvals_cmd import approvals
from halswarm.cli.audit import audit
from halswarm.cli.auth_cmd import auth
from halswarm.cli.backup_cmd import backup, restore
from halswarm.cli.chatops_cmd import chatops
from halswarm.cli.config_cmd import config
from halswarm.cli.context import (
    DEFAULT_SUPERVISOR_URL,
    DEFAULT_TIMEOUT,
    OUTPUT_FORMATS,
    AppContext,
    app,
    normalize_supervisor_url,
)
from halswarm.cli.cost_cmd import cost
from halswarm.cli.diagnostics_cmd import diagnostics
from halswarm.cli.env_cmd import env
from halswarm.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, HalctlError
from halswarm.cli.nodes import nodes
from halswarm.cli.ops_cmd import COMMANDS as OPS_COMMANDS
from halswarm.cli.remediate_cmd import remediate
from halswarm.cli.sessions import sessions
from halswarm.cli.status import status
from halswarm.cli.storage_cmd import storage
from halswarm.cli.version_cmd import print_version, version

EXIT_INTERRUPTED = 130


@click.group(
    name="halctl",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--supervisor-url",
    envvar="HALCTL_SUPERVISOR_URL",
    metavar="URL",
    help=f"Supervisor HTTP API [default: {DEFAULT_SUPERVISOR_URL}; env HALCTL_SUPERVISOR_URL]. "
    "The agents' ws://HOST:8420 URL is accepted and mapped to http://HOST:8421.",
)
@click.option(
    "--auth-token",
    envvar="HALCTL_AUTH_TOKEN",
    metavar="TOKEN",
    help="Operator token [env HALCTL_AUTH_TOKEN, else ~/.config/halctl/config.yaml].",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(OUTPUT_FORMATS, case_sensitive=False),
    envvar="HALCTL_OUTPUT",
    help="Output format [default: table].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    envvar="HALCTL_TIMEOUT",
    metavar="SECONDS",
    help=f"HTTP timeout [default: {DEFAULT_TIMEOUT:g}]; commands sent to agents wait at least as long "
    "as the supervisor's own command timeout.",
)
@click.option(
    "--actor",
    envvar="HALCTL_ACTOR",
    metavar="NAME",
    help="Who you say you are, recorded in the supervisor's audit log beside the name of your operator token "
    "[default: USER@HOST; env HALCTL_ACTOR, else `actor` in the config file].",
)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=print_version,
              help="Show the package, Ansible and collection versions, and where the collection was found.")
@click.pass_context
def cli(
    ctx: click.Context,
    supervisor_url: str | None,
    auth_token: str | None,
    output: str | None,
    timeout: float | None,
    actor: str | None,
) -> None:
    """Operate a HAL-O-SWARM fleet: nodes, sessions, status, audit, configuration.

    Settings come from flags, then HALCTL_* environment variables, then ~/.config/halctl/config.yaml
    (or the Go version's ~/.halctl/config.json), then defaults.

    \b
    Output: a terminal gets tables. When stdout is not a terminal (a pipe or a file) and neither
    --output nor HALCTL_OUTPUT is given, lists print one line per item as `key: value` fields, e.g.
    `id: ses_1  node_id: node-a  status: idle`, so `| wc -l` counts items and
    `| grep "node_id: node-a"` selects them. `--output table|json|yaml` always wins.
    """
    if supervisor_url:
        normalize_supervisor_url(supervisor_url)  # fail early: a bad URL is a usage error (exit 2)
    ctx.obj = AppContext(supervisor_url=supervisor_url, auth_token=auth_token, output=output, timeout=timeout,
                         actor=actor)


# One module per command group; register new groups here (before add_output_option below).
for _command in (nodes, sessions, approvals, status, audit, config, auth, cost, remediate, backup, restore, env,
                 agentmd, diagnostics, version, chatops, storage, *OPS_COMMANDS):
    cli.add_command(_command)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        app(ctx).set_output(value)


def add_output_option(group: click.Group) -> None:
    """Let every leaf command also take `-o/--output` after its name (`halctl sessions start P --output json`),
    unless it defines its own `-o`/`--output` or is marked `plain_output` (its output has no formats)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            add_output_option(command)
            continue
        taken = {opt for param in command.params for opt in getattr(param, "opts", [])}
        if taken & {"-o", "--output"} or getattr(command, "plain_output", False):
            continue
        command.params.append(
            click.Option(
                ["--output", "-o"],
                type=click.Choice(OUTPUT_FORMATS, case_sensitive=False),
                expose_value=False,
                callback=_set_output,
                help="Output format (same as the global option).",
            )
        )


add_output_option(cli)


def _usage_line(exc: click.UsageError) -> str:
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return f"error: {exc.format_message()}{hint}"


def run(argv: Sequence[str] | None = None) -> int:
    """Run halctl and return its exit code; every failure becomes one `error: ...` line on stderr."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="halctl", standalone_mode=False)
    except HalctlError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx is not None else str(exc), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        click.echo(_usage_line(exc), err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # click exits this way on a broken pipe
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    except Exception as exc:
        if os.environ.get("HALCTL_DEBUG"):
            raise
        click.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
        return EXIT_FAILURE
    return rv if isinstance(rv, int) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    code = run(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # `halctl ... | head`: the reader went away; exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


if __name__ == "__main__":
    main()
