"""`halctl approvals list|approve|deny` (and the helpers of `halctl sessions approve|deny`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from halswarm.cli.completion import complete_approval_ids, complete_node_ids, complete_session_ids
from halswarm.cli.context import app
from halswarm.cli.errors import CommandFailed

MESSAGE_MAX = 2000  # the API's bound (halswarm.protocol.permission.MESSAGE_MAX)
VERB = {"once": "approved", "always": "approved (always)", "reject": "denied"}


def asked_for(a: Mapping[str, Any]) -> str:
    """What the request asks for: the command, else its patterns."""
    patterns = p if isinstance(p := a.get("patterns"), list) else []
    return str(a.get("command") or ", ".join(str(p) for p in patterns) or "-")


def fmt_age(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def answer(approval_id: str, reply: str, message: str | None) -> None:
    """POST /approvals/{id} and say what happened (errors, incl. 409, end the command)."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit
    from halswarm.cli.results import COMMAND_WAIT

    ctx = app()
    body: dict[str, Any] = {"reply": reply}
    if message:
        body["message"] = message
    env = ctx.client().post(f"/approvals/{path_id(approval_id)}", body, what=f"approval {approval_id}",
                            timeout=max(ctx.timeout, COMMAND_WAIT))
    data = env.data or {}
    emit(ctx.output, data, lambda: click.echo(
        f"{VERB[reply]} {approval_id}: {data.get('permission', '-')} {asked_for(data)} "
        f"(session {data.get('session_id', '-')} on {data.get('node_id', '-')})"))


def pending_of_session(session_id: str) -> list[dict[str, Any]]:
    env = app().client().get("/approvals", {"session_id": session_id, "limit": 100})
    return list(env.data or [])


def answer_for_session(session_id: str, reply: str, message: str | None) -> None:
    """Answer the session's single pending request; none or several is an error naming them."""
    pending = pending_of_session(session_id)
    if not pending:
        raise CommandFailed(f"session {session_id} has no pending approval")
    if len(pending) > 1:
        listed = "; ".join(f"{a.get('id')} ({a.get('permission')}: {asked_for(a)})" for a in pending)
        raise CommandFailed(f"session {session_id} has {len(pending)} pending approvals, answer one with "
                            f"`halctl approvals approve|deny ID`: {listed}")
    answer(str(pending[0]["id"]), reply, message)


message_option = click.option("--message", "-m", help="A note for the agent (at most 2000 characters).")


def _check_message(message: str | None) -> None:
    if message is not None and len(message) > MESSAGE_MAX:
        raise click.BadParameter(f"at most {MESSAGE_MAX} characters", param_hint="--message")


@click.group("approvals")
def approvals() -> None:
    """Agents' permission requests: list the pending ones, approve or deny one."""


@approvals.command("list")
@click.option("--session", "session_id", help="Only this session's requests.", shell_complete=complete_session_ids)
@click.option("--node-id", help="Only requests on this node.", shell_complete=complete_node_ids)
@click.option("--project", help="Only this project's requests.")
@click.option("--limit", type=click.IntRange(1, 10_000), help="At most this many (server default 100).")
def list_approvals(session_id: str | None, node_id: str | None, project: str | None, limit: int | None) -> None:
    """List pending requests, oldest first (ID NODE_ID SESSION PROJECT PERMISSION ASKED_FOR AGE)."""
    from halswarm.cli.output import emit, note, print_table

    ctx = app()
    env = ctx.client().get("/approvals", {"session_id": session_id, "node_id": node_id, "project": project,
                                          "limit": limit})
    items = env.data or []

    def table() -> None:
        print_table(("ID", "NODE_ID", "SESSION", "PROJECT", "PERMISSION", "ASKED_FOR", "AGE"), (
            (str(a.get("id", "-")), str(a.get("node_id") or "-"), str(a.get("session_id") or "-"),
             str(a.get("project") or "-"), str(a.get("permission") or "-"), asked_for(a), fmt_age(a.get("age_sec")))
            for a in items))
        total = env.meta.get("total")
        if isinstance(total, int) and total > len(items):
            note(f"showing {len(items)} of {total} pending approvals (use --limit to see more)")

    emit(ctx.output, items, table)


@approvals.command("approve")
@click.argument("approval_id", metavar="ID", shell_complete=complete_approval_ids)
@click.option("--always", is_flag=True, help="Also allow what opencode offers to remember (its `always` patterns).")
@message_option
def approve(approval_id: str, always: bool, message: str | None) -> None:
    """Approve the request ID (once, or --always)."""
    _check_message(message)
    answer(approval_id, "always" if always else "once", message)


@approvals.command("deny")
@click.argument("approval_id", metavar="ID", shell_complete=complete_approval_ids)
@message_option
def deny(approval_id: str, message: str | None) -> None:
    """Deny (reject) the request ID; --message tells the agent why."""
    _check_message(message)
    answer(approval_id, "reject", message)
