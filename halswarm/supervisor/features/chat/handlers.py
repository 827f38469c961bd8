"""One coroutine per slash command: call the service the HTTP route calls, shape one embed.

Session commands take a `session_id` and target that session (its node comes from the session), which is
what the Go bot got wrong: it sent `/status` and `/resume` to a project without a session id."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from halswarm.core.chatops.commands import LOGS_MAX
from halswarm.core.chatops.components import reply_line
from halswarm.core.chatops.embeds import FAILURE, INFO, SUCCESS, embed
from halswarm.core.paging import PageRequest
from halswarm.protocol import is_permission_id
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.chat.ports import ChatPorts

Embed = dict[str, Any]
Handler = Callable[[ChatPorts, dict[str, Any], str], Awaitable[Embed]]
LIST_MAX = 10  # lines of a list in one embed (the Go bot's "...and N more" after 10)


def _hb(ts: float | None) -> str:
    if not ts:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _more(lines: list[str], total: int) -> str:
    if total > len(lines):
        lines = [*lines, f"...and {total - len(lines)} more"]
    return "\n".join(lines)


def _str(opts: dict[str, Any], name: str) -> str | None:
    value = opts.get(name)
    return str(value).strip() or None if value is not None else None


def _required(opts: dict[str, Any], name: str) -> str:
    value = _str(opts, name)
    if value is None:
        raise ApiError("VALIDATION_ERROR", f"{name} is required")
    return value


def _result(title: str, data: dict[str, Any], description: str = "") -> Embed:
    fields = [("Status", str(data.get("status") or "done"), True)]
    if data.get("command_id"):
        fields.append(("Command ID", str(data["command_id"]), True))
    return embed(title, description, SUCCESS, fields)


async def status(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    project = _str(opts, "project")
    page, total = await ports.sessions.page(project, None, None, PageRequest(LIST_MAX))
    lines = [f"`{s.id}` {s.project} on {s.node_id} - {s.status}" for s in page.items]
    nodes, node_total = await ports.nodes.page(None, project, PageRequest(LIST_MAX))
    serving = ", ".join(f"{n.id} ({n.status})" for n in nodes.items) or "none"
    title = f"Status of {project}" if project else "Fleet status"
    return embed(title, _more(lines, total) or "No sessions.", INFO,
                 [("Sessions", str(total), True), ("Nodes", f"{serving}" + (" ..." if node_total > LIST_MAX else ""),
                                                    False)])


async def nodes(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    page, total = await ports.nodes.page(None, None, PageRequest(LIST_MAX))
    lines = [f"`{n.id}` ({n.hostname or '-'}) - {n.status} - hb: {_hb(n.last_heartbeat)}" for n in page.items]
    head = f"**Connected:** {ports.connected()}\n**Known nodes:** {total}"
    return embed("Agent Nodes", "\n".join([head, _more(lines, total)]).strip(), INFO)


async def logs(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    session_id = _required(opts, "session_id")
    limit = opts.get("limit") or 20
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LOGS_MAX:
        raise ApiError("VALIDATION_ERROR", f"limit must be an integer from 1 to {LOGS_MAX}")
    session = await ports.sessions.get(session_id)
    page, _total, _estimate = await ports.events.page({"session_id": session_id}, PageRequest(limit), "desc")
    lines = [f"`{e['timestamp']}` {e['type']}" for e in reversed(page.items)]
    return embed(f"Logs of {session_id}", "\n".join(lines) or "No events.", INFO,
                 [("Project", session.project or "-", True), ("Node", session.node_id, True),
                  ("Status", session.status, True), ("Model", session.model or "-", True),
                  ("Task", session.current_task or "-", True), ("Tokens", str(session.tokens_total), True)])


async def resume(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    session_id = _required(opts, "session_id")
    data = await ports.sessions.act(session_id, "resume", actor=actor, ip=None)
    message = _str(opts, "message")
    if message:
        data = await ports.sessions.prompt(session_id, message, None, actor=actor, ip=None)
    return _result(f"Resumed {session_id}", data, "Message sent." if message else "")


async def inject(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    session_id = _required(opts, "session_id")
    data = await ports.sessions.prompt(session_id, _required(opts, "message"), None, actor=actor, ip=None)
    return _result(f"Prompt sent to {session_id}", data)


async def restart(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    session_id = _required(opts, "session_id")
    return _result(f"Restarted {session_id}", await ports.sessions.act(session_id, "restart", actor=actor, ip=None))


async def kill(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    session_id = _required(opts, "session_id")
    return _result(f"Killed {session_id}", await ports.sessions.act(session_id, "kill", actor=actor, ip=None))


async def start(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    project = _required(opts, "project")
    data = await ports.sessions.create(project, _str(opts, "prompt"), None, _str(opts, "node_id"), None,
                                       actor=actor, ip=None)
    return _result(f"Session started for {project}", data, f"Session `{data.get('id')}` on {data.get('node_id')}")


async def cost(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    period = _str(opts, "period") or "today"
    report, _meta = await ports.cost.report(period)
    fields = [("Total Cost", f"${report['total_cost_usd']:.2f}", True),
              ("Total Tokens", str(report["total_tokens"]), True)]
    top = [f"{p['project']}: ${p.get('cost_usd', 0):.2f}" for p in report.get("by_project", [])[:LIST_MAX]
           if isinstance(p, dict) and "project" in p]
    if top:
        fields.append(("By project", "\n".join(top), False))
    if report.get("degraded_providers"):
        fields.append(("Degraded providers", ", ".join(report["degraded_providers"]), False))
    return embed(f"Cost ({report['period']})", "", INFO, fields)


async def remediate(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    incident = _required(opts, "incident")
    data = await ports.remediate.request(incident, _str(opts, "host"), check=opts.get("check") is True, actor=actor)
    what = remediate_outcome(data)
    colour = FAILURE if data["action"] == "checked" and data.get("status") in ("failed", "escalated") else SUCCESS
    return embed(f"Remediate {incident}", what, colour,
                 [("Host", data["host"], True), ("Action", data["action"], True),
                  ("Command", f"`{data['command']}`", False)])


def remediate_outcome(data: dict[str, Any]) -> str:
    """What a `/remediate` (or its button) did, in one sentence; a check run names its report's status."""
    if data.get("action") == "checked":
        error = f": {str(data['error'])[:200]}" if data.get("error") else ""
        return f"Check finished: {data.get('status')} (report {data.get('report_id')}){error}."
    return {"started": "Remediation started.", "throttled": "Already run recently: throttled.",
            "busy": "A check of it is already running.",
            "routed": "Routed to the operators with the command to run."}.get(str(data.get("action")),
                                                                              str(data.get("action")))


async def env_drift(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    rows, _meta = await ports.env.drift(_str(opts, "node_id"), _str(opts, "project"))
    lines = [f"`{r.get('node_id')}` {r.get('project') or '-'}: {r.get('category')} {r.get('item')} "
             f"{r.get('status')}" for r in rows[:LIST_MAX]]
    return embed("Environment drift", _more(lines, len(rows)) or "No drift.", INFO,
                 [("Items", str(len(rows)), True), ("Nodes", ", ".join(_meta.get("nodes") or []) or "none", True)])


def _approval_id(opts: dict[str, Any]) -> str:
    approval_id = _required(opts, "approval_id")
    if not is_permission_id(approval_id):
        raise ApiError("VALIDATION_ERROR", "approval_id must be a request id (per_..., see /approvals)")
    return approval_id


def _answered(title: str, data: dict[str, Any]) -> Embed:
    colour = FAILURE if data.get("reply") == "reject" else SUCCESS
    fields = [("Permission", str(data.get("permission") or "-"), True), ("Node", str(data.get("node_id") or "-"), True),
              ("Session", str(data.get("session_id") or "-"), True)]
    return embed(title, reply_line(str(data.get("reply")), str(data.get("replied_by") or ""), data.get("message")),
                 colour, fields)


async def approve(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    approval_id = _approval_id(opts)
    data = await ports.approvals.reply(approval_id, "always" if opts.get("always") is True else "once", None,
                                       actor=actor)
    return _answered(f"Approved {approval_id}", data)


async def deny(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    approval_id = _approval_id(opts)
    data = await ports.approvals.reply(approval_id, "reject", _str(opts, "message"), actor=actor)
    return _answered(f"Denied {approval_id}", data)


async def approvals(ports: ChatPorts, opts: dict[str, Any], actor: str) -> Embed:
    page, total, _now = await ports.approvals.page(PageRequest(LIST_MAX), project=_str(opts, "project"))
    lines = [f"`{r['id']}` {r['permission']} `{(r.get('command') or ', '.join(r.get('patterns') or []))[:80]}` "
             f"- session `{r['session_id']}` on {r['node_id']}" for r in page.items]
    return embed("Pending approvals", _more(lines, total) or "No pending requests.", INFO,
                 [("Pending", str(total), True)])


HANDLERS: dict[str, Handler] = {
    "status": status, "nodes": nodes, "logs": logs, "resume": resume, "inject": inject, "restart": restart,
    "kill": kill, "start": start, "cost": cost, "remediate": remediate, "env drift": env_drift,
    "approve": approve, "deny": deny, "approvals": approvals,
}
