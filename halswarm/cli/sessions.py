"""`halctl sessions list|get|logs|start|prompt|resume|restart|handover|kill|approve|deny`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import click

from halswarm.cli.completion import complete_node_ids, complete_session_ids
from halswarm.cli.context import app
from halswarm.cli.errors import UsageProblem

SESSION_STATUSES = ("running", "idle", "waiting_input", "error", "unreachable", "completed", "killed")

# Reconnect pacing for `logs --follow` (seconds); `_sleep` is a seam for tests.
RECONNECT_MIN = 0.5
RECONNECT_MAX = 10.0
SEEN_MAX = 10_000
TYPE_WIDTH = 22  # event type column of `logs --follow` lines
_sleep: Callable[[float], None] = time.sleep


def token_counts(session: Mapping[str, Any]) -> dict[str, Any]:
    tokens = session.get("tokens")
    if isinstance(tokens, Mapping):
        return dict(tokens)
    if isinstance(tokens, int | float):
        return {"total": tokens}
    return {}


def session_cost(session: Mapping[str, Any]) -> Any:
    return session.get("cost_usd", session.get("cost"))


@click.group("sessions")
def sessions() -> None:
    """Agent sessions: list, inspect, follow logs, start and steer them."""


@sessions.command("list")
@click.option("--project", help="Only sessions of this project.")
@click.option("--node-id", help="Only sessions on this node.", shell_complete=complete_node_ids)
@click.option("--status", type=click.Choice(SESSION_STATUSES, case_sensitive=False), help="Only this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), help="At most this many (server default 100).")
def list_sessions(project: str | None, node_id: str | None, status: str | None, limit: int | None) -> None:
    """List sessions (ID NODE_ID PROJECT STATUS TOKENS COST STARTED_AT)."""
    from halswarm.cli.output import emit, fmt_cost, fmt_time, note, print_table

    ctx = app()
    params = {"project": project, "node_id": node_id, "status": status.lower() if status else None,
              "limit": limit}
    env = ctx.client().get("/sessions", params)
    items = env.data or []

    def table() -> None:
        print_table(
            ("ID", "NODE_ID", "PROJECT", "STATUS", "TOKENS", "COST", "STARTED_AT"),
            (
                (
                    str(s.get("id", "-")),
                    str(s.get("node_id") or "-"),
                    str(s.get("project") or "-"),
                    str(s.get("status") or "-"),
                    str(token_counts(s).get("total", "-")),
                    fmt_cost(session_cost(s)),
                    fmt_time(s.get("started_at")),
                )
                for s in items
            ),
        )
        total = env.meta.get("total")
        if isinstance(total, int) and total > len(items):
            note(f"showing {len(items)} of {total} sessions (use --limit to see more)")

    emit(ctx.output, items, table)


@sessions.command("get")
@click.argument("session_id", metavar="ID", shell_complete=complete_session_ids)
def get_session(session_id: str) -> None:
    """Show one session: tokens, model, compaction count, current task, cost, activity."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit, extra_fields, fmt_cost, fmt_time, print_fields

    ctx = app()
    session = ctx.client().get(f"/sessions/{path_id(session_id)}", what=f"session {session_id}").data or {}

    def table() -> None:
        tokens = token_counts(session)
        rows: list[tuple[str, Any]] = [
            ("ID", session.get("id")),
            ("NODE_ID", session.get("node_id")),
            ("PROJECT", session.get("project")),
            ("STATUS", session.get("status")),
            ("MODEL", session.get("model")),
            ("TOKENS_INPUT", tokens.get("input")),
            ("TOKENS_OUTPUT", tokens.get("output")),
            ("TOKENS_TOTAL", tokens.get("total")),
            ("COMPACTION_COUNT", session.get("compaction_count")),
            ("CURRENT_TASK", session.get("current_task")),
            ("COST_USD", fmt_cost(session_cost(session))),
            ("STARTED_AT", fmt_time(session.get("started_at"))),
            ("LAST_ACTIVITY", fmt_time(session.get("last_activity"))),
        ]
        known = {"id", "node_id", "project", "status", "model", "tokens", "compaction_count", "current_task",
                 "cost_usd", "cost", "started_at", "last_activity"}
        rows.extend(extra_fields(session, known))
        print_fields(rows)

    emit(ctx.output, session, table)


# -- logs --------------------------------------------------------------------------------------------
def _event_key(event: Mapping[str, Any]) -> str:
    if event.get("event_id"):
        return f"id:{event['event_id']}"
    if event.get("seq") is not None:
        return f"seq:{event.get('node_id')}:{event['seq']}"
    return "raw:" + json.dumps(event, sort_keys=True, default=str)


def _event_sort_key(event: Mapping[str, Any]) -> tuple[float, int]:
    from halswarm.cli.output import parse_time

    parsed = parse_time(event.get("timestamp"))
    seq = event.get("seq")
    return (parsed.timestamp() if parsed else 0.0, seq if isinstance(seq, int) else 0)


def _event_summary(event: Mapping[str, Any], width: int = 160) -> str:
    from halswarm.cli.output import truncate

    data = event.get("data")
    if data is None or data == "" or data == {}:
        return ""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, default=str)
    return truncate(text, width)


class _EventPrinter:
    """Prints events one at a time for `--follow` (a line, a JSON line, or a YAML document)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def __call__(self, event: Mapping[str, Any]) -> None:
        from halswarm.cli.output import fmt_time

        if self.fmt == "json":
            click.echo(json.dumps(event, ensure_ascii=False, default=str))
        elif self.fmt == "yaml":
            import yaml

            click.echo("---\n" + yaml.safe_dump(dict(event), sort_keys=False, allow_unicode=True), nl=False)
        else:
            line = f"{fmt_time(event.get('timestamp'))}  {event.get('type') or '-':<{TYPE_WIDTH}}"
            summary = _event_summary(event)
            click.echo(f"{line}  {summary}".rstrip() if summary else line.rstrip())
        sys.stdout.flush()


class _Seen:
    """Bounded set of event keys, so replays after a reconnect are not printed twice."""

    def __init__(self) -> None:
        self._keys: dict[str, None] = {}

    def add(self, event: Mapping[str, Any]) -> bool:
        key = _event_key(event)
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > SEEN_MAX:
            del self._keys[next(iter(self._keys))]
        return True


def _follow(session_id: str, since: Any, seen: _Seen, on_event: Callable[[Mapping[str, Any]], None]) -> None:
    """Stream `/events/stream` for the session forever; when it drops, reconnect and resume right after
    the last event received (`Last-Event-ID`), or from `since` before any arrived."""
    from halswarm.cli.errors import ApiUnreachable
    from halswarm.cli.output import note

    client = app().client()
    delay = RECONNECT_MIN
    last_id: str | None = None  # the stream's cursor: a reconnect resumes right after it
    while True:
        params: dict[str, Any] = {"session_id": session_id}
        if since is not None:
            params["since"] = since
        try:
            for sse in client.stream("/events/stream", params, last_event_id=last_id):
                last_id = sse.id or last_id
                try:
                    event = sse.json()
                except ValueError:
                    continue
                if not isinstance(event, Mapping):
                    continue
                delay = RECONNECT_MIN
                if event.get("timestamp") is not None:
                    since = event["timestamp"]
                if seen.add(event):
                    on_event(event)
            note(f"event stream closed; reconnecting in {delay:g}s")
        except ApiUnreachable as exc:
            note(f"event stream interrupted ({exc}); reconnecting in {delay:g}s")
        _sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX)


def _recent_events(session_id: str, limit: int) -> list[Mapping[str, Any]]:
    """The newest `limit` events of the session, oldest first: one page newest first (the supervisor
    seeks its index; no total or offset needed, so nothing is counted or skipped)."""
    client = app().client()
    params: dict[str, Any] = {"session_id": session_id, "limit": limit, "order": "desc"}
    env = client.get("/events", params)
    events = [e for e in env.data or [] if isinstance(e, Mapping)]
    return sorted(events, key=_event_sort_key)


class _TranscriptPrinter:
    """`--follow` without `--raw`: feed each event to the renderer, print the lines it completes."""

    def __init__(self) -> None:
        from halswarm.cli.transcript import TranscriptRenderer

        self.renderer = TranscriptRenderer()

    def __call__(self, event: Mapping[str, Any]) -> None:
        _echo_lines(self.renderer.feed(event))

    def flush(self) -> None:
        _echo_lines(self.renderer.flush())


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)
    if lines:
        sys.stdout.flush()


@sessions.command("logs")
@click.argument("session_id", metavar="ID", shell_complete=complete_session_ids)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="How many past events to show.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep streaming new events until Ctrl-C (json: one object per line).")
@click.option("--raw", is_flag=True,
              help="Show the events themselves instead of the transcript (json/yaml output always does).")
def logs(session_id: str, limit: int, follow: bool, raw: bool) -> None:
    """Show a session's transcript (prompts, replies, tool calls, permissions); --follow renders it live.

    Each part is printed once, when it is complete. --raw (or -o json/yaml) shows the events instead.
    """
    from halswarm.cli.output import emit, fmt_time, print_table

    ctx = app()
    fmt = ctx.output
    raw = raw or fmt in ("json", "yaml")
    transcript: _TranscriptPrinter | None = None
    try:
        events = _recent_events(session_id, limit)
        if not follow:
            if not raw:
                from halswarm.cli.transcript import render

                _echo_lines(render(events))
                return

            def table() -> None:
                print_table(
                    ("TIMESTAMP", "TYPE", "NODE_ID", "SEQ", "DATA"),
                    (
                        (fmt_time(e.get("timestamp")), str(e.get("type") or "-"), str(e.get("node_id") or "-"),
                         "-" if e.get("seq") is None else str(e["seq"]), _event_summary(e, 120) or "-")
                        for e in events
                    ),
                )

            emit(fmt, events, table)
            return
        printer: Callable[[Mapping[str, Any]], None]
        if raw:
            printer = _EventPrinter(fmt)
        else:
            printer = transcript = _TranscriptPrinter()
        seen = _Seen()
        since = None
        for event in events:
            seen.add(event)
            printer(event)
            if event.get("timestamp") is not None:
                since = event["timestamp"]
        _follow(session_id, since, seen, printer)
    except KeyboardInterrupt:
        if not follow:
            raise
        if transcript is not None:
            transcript.flush()
        _stop_following()


def _stop_following() -> None:
    """End `--follow` on Ctrl-C with exit 0 and a clean line."""
    click.echo("", err=True)
    raise click.exceptions.Exit(0)


# -- actions -----------------------------------------------------------------------------------------
@sessions.command("start")
@click.argument("project")
@click.option("--prompt", help="First prompt for the new session.")
@click.option("--model", help="Model to use (provider/model).")
def start(project: str, prompt: str | None, model: str | None) -> None:
    """Start a session for PROJECT on a node that has it; prints the new session id."""
    from halswarm.cli.results import COMMAND_WAIT, report_command_result

    ctx = app()
    body: dict[str, Any] = {"project": project}
    if prompt is not None:
        body["prompt"] = prompt
    if model is not None:
        body["model"] = model
    env = ctx.client().post("/sessions", body, timeout=max(ctx.timeout, COMMAND_WAIT))
    data = env.data
    if isinstance(data, Mapping) and data.get("id"):
        from halswarm.cli.output import emit

        emit(ctx.output, data, lambda: click.echo(str(data["id"])))
        return
    report_command_result(ctx.output, data, f"start session for {project}", http_status=env.status)


def _action(session_id: str, verb: str, body: dict[str, Any] | None = None, *, wait: float | None = None) -> None:
    """POST /sessions/{id}/{verb} and report the command result."""
    from halswarm.cli.client import path_id
    from halswarm.cli.results import COMMAND_WAIT, report_command_result

    ctx = app()
    env = ctx.client().post(f"/sessions/{path_id(session_id)}/{verb}", body or {}, what=f"session {session_id}",
                            timeout=max(ctx.timeout, wait or COMMAND_WAIT))
    report_command_result(ctx.output, env.data, f"{verb} session {session_id}", http_status=env.status)


@sessions.command("prompt")
@click.argument("session_id", metavar="ID", shell_complete=complete_session_ids)
@click.argument("message", metavar="MSG", nargs=-1, required=True)
def prompt(session_id: str, message: tuple[str, ...]) -> None:
    """Send MSG to the session (several words are joined; `-` reads the message from stdin)."""
    text = sys.stdin.read() if message == ("-",) else " ".join(message)
    if not text.strip():
        raise UsageProblem("the message is empty")
    _action(session_id, "prompt", {"message": text})


@sessions.command("resume")
@click.argument("session_id", metavar="ID", shell_complete=complete_session_ids)
def resume(session_id: str) -> None:
    """Nudge an idle session with the configured continue message."""
    _action(session_id, "resume")


@sessions.command("restart")
@click.argument("session_id", metavar="ID", shell_complete=complete_session_ids)
def restart(session_id: str) -> None:
    """Kill the session and start a fresh one for the same project."""
    _action(session_id, "restart")


@sessions.command("handover")
@click.argument("session_id", metavar="ID", shell_complete=complete_session_ids)
def handover(session_id: str) -> None:
    """Hand over: write context, wait for idle, kill, start a new session that reads .context/."""
    from halswarm.cli.results import HANDOVER_WAIT

    _action(session_id, "handover", wait=HANDOVER_WAIT)


@sessions.command("kill")
@click.argument("session_id", metavar="ID", shell_complete=complete_session_ids)
def kill(session_id: str) -> None:
    """Kill the session."""
    from halswarm.cli.client import path_id
    from halswarm.cli.results import COMMAND_WAIT, report_command_result

    ctx = app()
    env = ctx.client().delete(f"/sessions/{path_id(session_id)}", what=f"session {session_id}",
                              timeout=max(ctx.timeout, COMMAND_WAIT))
    report_command_result(ctx.output, env.data, f"kill session {session_id}", http_status=env.status)


@sessions.command("approve")
@click.argument("session_id", metavar="ID", shell_complete=complete_session_ids)
@click.option("--always", is_flag=True, help="Also allow what opencode offers to remember (its `always` patterns).")
@click.option("--message", "-m", help="A note for the agent (at most 2000 characters).")
def approve(session_id: str, always: bool, message: str | None) -> None:
    """Approve the session's pending permission request (it must have exactly one)."""
    from halswarm.cli.approvals_cmd import answer_for_session

    answer_for_session(session_id, "always" if always else "once", message)


@sessions.command("deny")
@click.argument("session_id", metavar="ID", shell_complete=complete_session_ids)
@click.option("--message", "-m", help="Tell the agent why (at most 2000 characters).")
def deny(session_id: str, message: str | None) -> None:
    """Deny the session's pending permission request (it must have exactly one)."""
    from halswarm.cli.approvals_cmd import answer_for_session

    answer_for_session(session_id, "reject", message)
