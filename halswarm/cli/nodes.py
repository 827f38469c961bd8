"""`halctl nodes list|get ID`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from halswarm.cli.completion import complete_node_ids
from halswarm.cli.context import app


def node_projects(node: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for project in node.get("projects") or []:
        name = project.get("name") if isinstance(project, Mapping) else project
        if name:
            names.append(str(name))
    return names


def _resources(node: Mapping[str, Any]) -> list[tuple[str, str]]:
    res = node.get("resources")
    if not isinstance(res, Mapping) or not res:
        return [("RESOURCES", "-")]
    rows: list[tuple[str, str]] = []
    if res.get("cpu_percent") is not None:
        rows.append(("CPU", f"{float(res['cpu_percent']):.1f}%"))
    if res.get("ram_used_mb") is not None or res.get("ram_total_mb") is not None:
        rows.append(("RAM", f"{_num(res.get('ram_used_mb'))} / {_num(res.get('ram_total_mb'))} MB"))
    if res.get("disk_used_gb") is not None or res.get("disk_total_gb") is not None:
        rows.append(("DISK", f"{_num(res.get('disk_used_gb'))} / {_num(res.get('disk_total_gb'))} GB"))
    known = {"cpu_percent", "ram_used_mb", "ram_total_mb", "disk_used_gb", "disk_total_gb"}
    from halswarm.cli.output import fmt_value

    rows.extend((f"RESOURCES.{k}".upper(), fmt_value(v)) for k, v in res.items() if k not in known)
    return rows


def _num(value: Any) -> str:
    if value is None:
        return "?"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.0f}" if number >= 100 or number.is_integer() else f"{number:.1f}"


@click.group("nodes")
def nodes() -> None:
    """Worker nodes known to the supervisor."""


@nodes.command("list")
def list_nodes() -> None:
    """List nodes (ID HOSTNAME STATUS PROJECTS LAST_HEARTBEAT CONNECTED_AT)."""
    from halswarm.cli.output import emit, fmt_time, print_table

    ctx = app()
    env = ctx.client().get("/nodes")
    items = env.data or []

    def table() -> None:
        print_table(
            ("ID", "HOSTNAME", "STATUS", "PROJECTS", "LAST_HEARTBEAT", "CONNECTED_AT"),
            (
                (
                    str(n.get("id", "-")),
                    str(n.get("hostname") or "-"),
                    str(n.get("status") or "-"),
                    ",".join(node_projects(n)) or "-",
                    fmt_time(n.get("last_heartbeat")),
                    fmt_time(n.get("connected_at")),
                )
                for n in items
            ),
        )

    emit(ctx.output, items, table)


@nodes.command("get")
@click.argument("node_id", metavar="ID", shell_complete=complete_node_ids)
def get_node(node_id: str) -> None:
    """Show one node, with its resources and auth summary."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit, extra_fields, fmt_time, print_fields

    ctx = app()
    node = ctx.client().get(f"/nodes/{path_id(node_id)}", what=f"node {node_id}").data or {}

    def table() -> None:
        rows: list[tuple[str, Any]] = [
            ("ID", node.get("id")),
            ("HOSTNAME", node.get("hostname")),
            ("STATUS", node.get("status")),
            ("PROJECTS", ", ".join(node_projects(node)) or "-"),
            ("LAST_HEARTBEAT", fmt_time(node.get("last_heartbeat"))),
            ("CONNECTED_AT", fmt_time(node.get("connected_at"))),
        ]
        rows.extend(_resources(node))
        known = {"id", "hostname", "status", "projects", "last_heartbeat", "connected_at", "resources"}
        rows.extend(extra_fields(node, known))
        print_fields(rows)

    emit(ctx.output, node, table)
