"""Presenting command results (`data` = `{command_id, status, output, error}`) and their exit status."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from halswarm.cli.errors import CommandFailed

SUCCESS = "success"
PENDING = frozenset({"pending", "accepted", "queued", "dispatched", "running", "in_progress"})

# Minimum seconds to wait for an HTTP answer to a dispatched command: the supervisor's own command
# timeout is 30 s (60 s for handover), so a shorter client timeout would misreport slow agents as
# "cannot reach the supervisor".
COMMAND_WAIT = 45.0
HANDOVER_WAIT = 90.0


def _output_text(output: Any) -> str:
    if output is None or output == "":
        return ""
    if isinstance(output, str):
        return output.rstrip("\n")
    return json.dumps(output, indent=2, ensure_ascii=False, default=str)


def report_command_result(fmt: str, data: Any, action: str, *, http_status: int = 200) -> None:
    """Print a command result; raise CommandFailed (exit 1) when its status is not `success`.

    `action` names what was asked, e.g. `restart session 1234`. A 202 / pending status means the
    supervisor accepted the command and it is still running: that is not a failure.
    """
    from halswarm.cli.output import emit

    if not isinstance(data, Mapping) or "status" not in data:
        emit(fmt, data, lambda: click.echo(f"{action}: ok" + (f"\n{_output_text(data)}" if data else "")))
        return
    status = str(data.get("status") or "")
    command_id = data.get("command_id")
    output = _output_text(data.get("output"))
    pending = status in PENDING or (http_status == 202 and status != "failure" and status != "timeout")

    def table() -> None:
        if status == SUCCESS:
            click.echo(f"{action}: ok")
        elif pending:
            suffix = f" (command {command_id})" if command_id else ""
            click.echo(f"{action}: accepted, still running{suffix}")
        if output:
            click.echo(output)

    emit(fmt, dict(data), table)
    if status == SUCCESS or pending:
        return
    error = data.get("error") or "no error message"
    kind = "" if status in ("", "failure") else f" ({status})"
    suffix = f" [command {command_id}]" if command_id else ""
    raise CommandFailed(f"{action} failed{kind}: {error}{suffix}")
