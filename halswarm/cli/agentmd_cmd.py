"""`halctl agent-md show|diff|sync [PROJECT] [--node NODE]`: AGENT.md against the supervisor's template.

- ``show PROJECT``: the project's AGENT.md as it is on the node (raw text), or with ``--template`` the
  rendered template; without PROJECT, a table of every project and whether it is in sync.
- ``diff [PROJECT]``: unified diff from the node's AGENT.md to the template ("" when in sync).
- ``sync [PROJECT] [--force]``: create a missing AGENT.md from the template; a modified one is only
  replaced with ``--force`` (otherwise its diff is shown and halctl exits 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from halswarm.cli.context import app
from halswarm.cli.errors import CommandFailed, HalctlError

WAIT = 90.0


def _projects(node: str | None) -> list[tuple[str, str]]:
    """(node, project) of every online node's projects (or one node's)."""
    rows = app().client().get("/nodes", {"status": "online", "limit": 10000}).data or []
    out = []
    for n in rows:
        if not isinstance(n, Mapping) or (node and n.get("id") != node):
            continue
        for p in n.get("projects") or []:
            out.append((str(n.get("id")), str(p.get("name") if isinstance(p, Mapping) else p)))
    if not out:
        raise HalctlError(f"node {node} is not online or has no projects" if node else "no online node with projects")
    return sorted(out)


def _get(project: str, node: str | None, suffix: str = "") -> dict[str, Any]:
    from halswarm.cli.client import path_id

    ctx = app()
    params = {"node_id": node} if node else None
    what = f"project {project}" + (f" on node {node}" if node else "")
    # agent commands may take a while: the client timeout applies to GET too
    data = ctx.client().get(f"/agent-md/{path_id(project)}{suffix}", params, what=what).data
    return data if isinstance(data, dict) else {}


@click.group("agent-md")
def agentmd() -> None:
    """AGENT.md of the projects, rendered from the supervisor's templates."""


@agentmd.command("show")
@click.argument("project", metavar="[PROJECT]", required=False)
@click.option("--node", "-n", "node", help="Node to ask [default: an online node with the project].")
@click.option("--template", "template", is_flag=True, help="Show the rendered template instead of the node's file.")
def show(project: str | None, node: str | None, template: bool) -> None:
    """Print PROJECT's AGENT.md (without PROJECT: a table of every project's sync state)."""
    from halswarm.cli.output import emit, print_table

    ctx = app()
    if project is None:
        rows = [(n, p, _get(p, n)) for n, p in _projects(node)]
        emit(ctx.output, [d for _, _, d in rows], lambda: print_table(
            ("NODE", "PROJECT", "EXISTS", "IN_SYNC", "SHA256"),
            [(n, p, d.get("exists"), d.get("in_sync"), (d.get("sha256") or "-")[:16]) for n, p, d in rows]))
        return
    if template:
        data = _get(project, None, "/template")
        emit(ctx.output, data, lambda: click.echo(str(data.get("content") or ""), nl=False))
        return
    data = _get(project, node)

    def text() -> None:
        if not data.get("exists"):
            raise CommandFailed(f"{project} on {data.get('node_id')}: AGENT.md does not exist "
                                f"(`halctl agent-md sync {project}` creates it)")
        click.echo(str(data.get("content") or ""), nl=False)

    emit(ctx.output, data, text)


@agentmd.command("diff")
@click.argument("project", metavar="[PROJECT]", required=False)
@click.option("--node", "-n", "node", help="Node to ask [default: an online node with the project].")
def diff(project: str | None, node: str | None) -> None:
    """Unified diff of the node's AGENT.md (a/) against the template (b/); nothing when in sync."""
    from halswarm.cli.output import emit

    ctx = app()
    targets = [(node, project)] if project else [(n, p) for n, p in _projects(node)]
    out = [_get(p, n, "/diff") for n, p in targets if p]

    def text() -> None:
        for d in out:
            body = str(d.get("diff") or "")
            if body:
                click.echo(body, nl=not body.endswith("\n"))
            elif len(out) > 1 or ctx.output == "table":
                click.echo(f"# {d.get('project')} on {d.get('node_id')}: AGENT.md matches the template", err=True)

    emit(ctx.output, out[0] if project else out, text)


@agentmd.command("sync")
@click.argument("project", metavar="[PROJECT]", required=False)
@click.option("--node", "-n", "node", help="Only this node [default: every online node with the project].")
@click.option("--force", is_flag=True, help="Replace a locally modified AGENT.md.")
def sync(project: str | None, node: str | None, force: bool) -> None:
    """Create (or with --force replace) AGENT.md from the template on every node with PROJECT."""
    from halswarm.cli.output import emit

    ctx = app()
    body: dict[str, Any] = {"force": force}
    if project:
        body["project"] = project
    if node:
        body["node_id"] = node
    rows = ctx.client().post("/agent-md/sync", body, what=f"project {project}" if project else None,
                             timeout=max(ctx.timeout, WAIT)).data or []

    def text() -> None:
        for r in rows:
            click.echo(f"{r.get('node_id')}/{r.get('project')}: {r.get('status')}: {r.get('message')}")
            if r.get("status") == "modified" and r.get("diff"):
                click.echo(str(r["diff"]), nl=not str(r["diff"]).endswith("\n"))

    emit(ctx.output, rows, text)
    bad = [f"{r.get('node_id')}/{r.get('project')}" for r in rows if r.get("status") in ("modified", "failed")]
    if bad:
        raise CommandFailed(f"AGENT.md not synced on {', '.join(bad)}"
                            + ("" if force else " (modified locally: review the diff, then use --force)"))
