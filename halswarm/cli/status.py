"""`halctl status [PROJECT]`: the operator's one-screen overview."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import click

from halswarm.cli.context import app

ATTENTION_STATUSES = ("waiting_input", "error", "unreachable")
ATTENTION_ROWS = 20
SESSION_ORDER = ("running", "idle", "waiting_input", "error", "unreachable", "completed", "killed")


def _readiness() -> dict[str, Any]:
    """`GET /readyz`: 200 ready, 503 not ready (with the failing components)."""
    from halswarm.cli.errors import ApiUnreachable, SupervisorRefused

    ctx = app()
    info: dict[str, Any] = {"url": ctx.supervisor_url, "ready": None, "status": "unknown", "components": {}}
    try:
        code, body = ctx.client().get_plain("/readyz", ok=(200, 503))
    except ApiUnreachable:
        raise
    except SupervisorRefused as exc:
        info["status"] = f"unknown ({exc.server_message})"
        return info
    info["ready"] = code == 200
    if isinstance(body, Mapping):
        info["status"] = str(body.get("status") or ("ok" if code == 200 else "not ready"))
        components = body.get("components")
        if isinstance(components, Mapping):
            info["components"] = dict(components)
    else:
        info["status"] = "ok" if code == 200 else "not ready"
    return info


def _component_status(value: Any) -> str:
    if isinstance(value, Mapping):
        status = str(value.get("status") or "?")
        if value.get("error"):
            return f"{status} ({value['error']})"
        # `degraded` (ready, working with less: the LISTEN connection down on a shared PostgreSQL) says why.
        return f"{status} ({value['detail']})" if status == "degraded" and value.get("detail") else status
    return str(value)


def _ordered(counter: Counter[str], order: tuple[str, ...]) -> dict[str, int]:
    out = {key: counter[key] for key in order if counter.get(key)}
    out.update({key: n for key, n in sorted(counter.items()) if key not in out})
    return out


def build_status(project: str | None) -> dict[str, Any]:
    client = app().client()
    supervisor = _readiness()
    nodes = [n for n in client.get("/nodes").data or [] if isinstance(n, Mapping)]
    env = client.get("/sessions", {"project": project, "limit": 10_000})
    sessions = [s for s in env.data or [] if isinstance(s, Mapping)]

    node_counts = Counter(str(n.get("status") or "unknown") for n in nodes)
    session_counts = Counter(str(s.get("status") or "unknown") for s in sessions)
    total = env.meta.get("total")
    attention = [
        {k: s.get(k) for k in ("id", "node_id", "project", "status", "last_activity")}
        for s in sessions
        if s.get("status") in ATTENTION_STATUSES
    ]
    return {
        "supervisor": supervisor,
        "nodes": {
            "total": len(nodes),
            "online": node_counts.get("online", 0),
            "offline": node_counts.get("offline", 0),
            "by_status": _ordered(node_counts, ("online", "offline")),
            "offline_nodes": [str(n.get("id")) for n in nodes if n.get("status") != "online"],
        },
        "sessions": {
            "project": project,
            "total": total if isinstance(total, int) and total >= len(sessions) else len(sessions),
            "by_status": _ordered(session_counts, SESSION_ORDER),
        },
        "attention": attention,
    }


def _print_summary(report: dict[str, Any]) -> None:
    from halswarm.cli.output import fmt_time, print_table

    sup, nodes, sessions = report["supervisor"], report["nodes"], report["sessions"]
    ready = {True: "ready", False: "NOT READY", None: "readiness unknown"}[sup["ready"]]
    lines = [("Supervisor", f"{sup['url']}  {ready} ({sup['status']})")]
    if sup["components"]:
        lines.append(("Components", ", ".join(f"{k} {_component_status(v)}" for k, v in sup["components"].items())))
    node_text = f"{nodes['total']} total: {nodes['online']} online, {nodes['offline']} offline"
    others = {k: v for k, v in nodes["by_status"].items() if k not in ("online", "offline")}
    if others:
        node_text += ", " + ", ".join(f"{v} {k}" for k, v in others.items())
    lines.append(("Nodes", node_text))
    if nodes["offline_nodes"]:
        lines.append(("Offline", ", ".join(nodes["offline_nodes"])))
    scope = f" in project {sessions['project']}" if sessions["project"] else ""
    by_status = ", ".join(f"{v} {k}" for k, v in sessions["by_status"].items()) or "none"
    lines.append(("Sessions", f"{sessions['total']} total{scope}: {by_status}"))
    width = max(len(label) for label, _ in lines)
    for label, text in lines:
        click.echo(f"{label:<{width}}  {text}")

    attention = report["attention"]
    if attention:
        click.echo("")
        click.echo(f"Sessions needing attention ({len(attention)}):")
        print_table(
            ("ID", "NODE_ID", "PROJECT", "STATUS", "LAST_ACTIVITY"),
            (
                (str(s["id"]), str(s["node_id"] or "-"), str(s["project"] or "-"), str(s["status"]),
                 fmt_time(s["last_activity"]))
                for s in attention[:ATTENTION_ROWS]
            ),
        )
        if len(attention) > ATTENTION_ROWS:
            click.echo(f"... and {len(attention) - ATTENTION_ROWS} more (halctl sessions list --status ...)")


@click.command("status")
@click.argument("project", required=False)
def status(project: str | None) -> None:
    """Overview: supervisor readiness, nodes online/offline, sessions by status (of PROJECT if given)."""
    from halswarm.cli.output import emit

    report = build_status(project)
    emit(app().output, report, lambda: _print_summary(report))
