"""`halctl env check|provision [--project --node --dry-run --force]|status [NODE]|drift|approve NODE ITEM|manifest`.

Without ``--node``, check and provision run on every online node (that has ``--project``, if given).
Exit status: 1 when a command failed on a node, a provisioning failed, or an approved item failed;
a check that finds problems is not a failure of the command (see the STATUS column).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from halswarm.cli.completion import complete_node_ids
from halswarm.cli.context import app
from halswarm.cli.errors import CommandFailed, HalctlError, UsageProblem

LONG_WAIT = 330.0
APPROVE_WAIT = 960.0


def _nodes(project: str | None, node: str | None) -> list[str]:
    """The nodes to act on: ``--node``, else every online node (having ``--project``)."""
    if node:
        return [node]
    rows = app().client().get("/nodes", {"status": "online", "project": project, "limit": 10000}).data or []
    ids = sorted(str(n.get("id")) for n in rows if isinstance(n, Mapping) and n.get("projects"))
    if not ids:
        raise HalctlError(f"no online node has project {project}" if project else "no online node with projects")
    return ids


def _post(path: str, body: dict[str, Any], what: str, timeout: float) -> Any:
    ctx = app()
    return ctx.client().post(path, body, what=what, timeout=max(ctx.timeout, timeout)).data


# ----- rendering -----

def render_items(items: Sequence[Mapping[str, Any]], *, indent: str = "  ") -> list[str]:
    lines = []
    for i in items:
        if i.get("status") == "pass":
            continue
        fix = f" [fix: {i.get('fix')}]" if i.get("fix") else ""
        lines.append(f"{indent}{i.get('status', '?'):<5} {i.get('category')}:{i.get('item')}  expected "
                     f"{i.get('expected')}, actual {i.get('actual')}{fix}")
    return lines


def render_check(data: Mapping[str, Any]) -> str:
    lines = []
    node = data.get("node_id")
    for r in data.get("results") or []:
        s = r.get("summary") or {}
        lines.append(f"{node}/{r.get('project')}: {r.get('status')} (pass {s.get('pass', 0)}, fail {s.get('fail', 0)}, "
                     f"warn {s.get('warn', 0)})" + (f" error: {r['error']}" if r.get("error") else ""))
        lines += render_items((r.get("details") or {}).get("drift") or [])
    return "\n".join(lines) or f"{node}: no projects"


def render_provision(data: Mapping[str, Any]) -> str:
    lines = []
    node = data.get("node_id")
    for r in data.get("results") or []:
        d = r.get("details") or {}
        head = "plan (dry run, nothing changed)" if r.get("dry_run") else str(r.get("status"))
        lines.append(f"{node}/{r.get('project')}: {head}")
        verb = "would" if r.get("dry_run") else "did"
        for a in d.get("planned") or d.get("applied") or []:
            lines.append(f"  {verb} {a.get('action')} {a.get('category')}:{a.get('item')}"
                         + (f"  {a['path']}" if a.get("path") else ""))
        if not (d.get("planned") or d.get("applied")):
            lines.append("  no changes")
        for p in d.get("pending") or []:
            lines.append(f"  pending {p.get('id')}: {p.get('command')}  ({p.get('reason')}; approve with "
                         f"`halctl env approve {node} {p.get('id')}`)")
        for m in d.get("manual") or []:
            lines.append(f"  manual {m.get('category')}:{m.get('item')}: {m.get('reason')}"
                         + (f"  (e.g. {m['suggestion']})" if m.get("suggestion") else ""))
        for c in d.get("conflicts") or []:
            lines.append(f"  conflict {c.get('category')}:{c.get('item')}: {c.get('reason')}")
            lines += ["    " + ln for ln in str(c.get("diff") or "").rstrip("\n").splitlines()]
        for e in d.get("errors") or []:
            lines.append(f"  error {e}")
    return "\n".join(lines) or f"{node}: no projects"


def render_run(run: Mapping[str, Any], item: str) -> str:
    """``running ITEM on HOST ...: `COMMAND```: the exact command and its target."""
    if not run:
        return f"running {item}"
    who = "as root (become)" if run.get("become") else "as the connecting user"
    extra = f", skipped when `{' '.join(run['check'])}` succeeds" if run.get("check") else ""
    extra += f", in {run['chdir']}" if run.get("chdir") else ""
    return (f"running {item} on host {run.get('host')} (inventory {run.get('inventory')}, {run.get('module')}) "
            f"{who}{extra}: {run.get('command')}")


# ----- commands -----

@click.group("env")
def env() -> None:
    """Environment manifest: checks, drift, safe provisioning, approvals of risky items."""


@env.command("check")
@click.option("--project", "-p", help="Only this project.")
@click.option("--node", "-n", "node", help="Only this node [default: every online node].")
def check(project: str | None, node: str | None) -> None:
    """Check the projects' environments against the supervisor's manifest."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit

    ctx = app()
    out = []
    for node_id in _nodes(project, node):
        out.append(_post(f"/env/check/{path_id(node_id)}", {"project": project} if project else {},
                         f"node {node_id}", LONG_WAIT) or {})
    emit(ctx.output, out if len(out) != 1 else out[0], lambda: click.echo("\n".join(render_check(d) for d in out)))


@env.command("provision")
@click.option("--project", "-p", help="Only this project.")
@click.option("--node", "-n", "node", help="Only this node [default: every online node].")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option("--force", is_flag=True, help="Replace managed files and settings that were changed locally.")
def provision(project: str | None, node: str | None, dry_run: bool, force: bool) -> None:
    """Apply the safe fixes; risky items become pending approvals; modified files are shown as diffs."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit

    ctx = app()
    out = []
    body: dict[str, Any] = {"dry_run": dry_run, "force": force}
    if project:
        body["project"] = project
    for node_id in _nodes(project, node):
        out.append(_post(f"/env/provision/{path_id(node_id)}", body, f"node {node_id}", LONG_WAIT) or {})
    emit(ctx.output, out if len(out) != 1 else out[0],
         lambda: click.echo("\n".join(render_provision(d) for d in out)))
    failed = [f"{d.get('node_id')}/{r.get('project')}" for d in out for r in d.get("results") or []
              if r.get("status") == "failed"]
    if failed:
        raise CommandFailed(f"provisioning failed on {', '.join(failed)}")


@env.command("status")
@click.argument("node_id", metavar="[NODE]", required=False, shell_complete=complete_node_ids)
def status(node_id: str | None) -> None:
    """Env status of every node and project (or one NODE with its items and pending approvals)."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit, fmt_time, print_table

    ctx = app()
    if node_id:
        data = ctx.client().get(f"/env/status/{path_id(node_id)}", what=f"node {node_id}").data or {}

        def table() -> None:
            rows = data.get("projects") or data.get("nodes") or []
            print_table(("NODE", "PROJECT", "STATUS", "CHECKED_AT", "MANIFEST", "STALE"), [
                (r.get("node_id"), r.get("project"), r.get("status"), fmt_time(r.get("checked_at")),
                 r.get("manifest_version"), r.get("stale")) for r in rows])
            for r in rows:
                lines = render_items(r.get("items") or [])
                if lines:
                    click.echo(f"\n{r.get('node_id')}/{r.get('project')}:")
                    click.echo("\n".join(lines))
            pending = [p for p in data.get("pending") or [] if p.get("status") in ("pending", "failed", "running")]
            if pending:
                click.echo("\npending approvals:")
                for p in pending:
                    click.echo(f"  {p.get('id')} [{p.get('status')}]: {p.get('command')}")

        emit(ctx.output, data, table)
        return
    env_ = ctx.client().get("/env/status")
    rows = env_.data or []

    def table_all() -> None:
        print_table(("NODE", "PROJECT", "STATUS", "FAIL", "WARN", "CHECKED_AT", "MANIFEST", "STALE"), [
            (r.get("node_id"), r.get("project"), r.get("status"), (r.get("summary") or {}).get("fail", "-"),
             (r.get("summary") or {}).get("warn", "-"), fmt_time(r.get("checked_at")), r.get("manifest_version"),
             r.get("stale")) for r in rows])
        pending = env_.meta.get("pending")
        if pending:
            click.echo(f"\n{pending} item(s) waiting for approval (halctl env drift)")

    emit(ctx.output, rows, table_all)


@env.command("drift")
@click.option("--node", "-n", "node", help="Only this node.")
@click.option("--project", "-p", help="Only this project.")
def drift(node: str | None, project: str | None) -> None:
    """What deviates from the manifest, per node and project, and the items waiting for approval."""
    from halswarm.cli.output import emit, fmt_time, print_table

    ctx = app()
    env_ = ctx.client().get("/env/drift", {"node_id": node, "project": project})
    rows = env_.data or []
    pending = env_.meta.get("pending") or []

    def table() -> None:
        if rows:
            print_table(("NODE", "PROJECT", "CATEGORY", "ITEM", "EXPECTED", "ACTUAL", "STATUS", "CHECKED_AT"), [
                (r.get("node_id"), r.get("project"), r.get("category"), r.get("item"), r.get("expected"),
                 r.get("actual"), r.get("status"), fmt_time(r.get("checked_at"))) for r in rows])
        else:
            click.echo("no drift")
        if pending:
            click.echo("\npending approvals:")
            print_table(("NODE", "ITEM", "STATUS", "COMMAND"), [
                (p.get("node_id"), p.get("id"), p.get("status"), p.get("command")) for p in pending])

    emit(ctx.output, {"drift": rows, "pending": pending} if ctx.output != "table" else rows, table)


@env.command("approve")
@click.argument("node_id", metavar="NODE", shell_complete=complete_node_ids)
@click.argument("item", metavar="ITEM")
def approve(node_id: str, item: str) -> None:
    """Run a pending risky ITEM (id or approval token) on NODE through the Ansible collection."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit

    ctx = app()
    path = f"/env/approve/{path_id(node_id)}"
    if ctx.output == "table":
        # what runs where, from the supervisor's own manifest, shown before it runs
        preview = _post(path, {"item": item, "dry_run": True}, f"node {node_id}", LONG_WAIT) or {}
        click.echo(render_run(preview.get("run") or {}, item), nl=True)
    data = _post(path, {"item": item}, f"node {node_id}", APPROVE_WAIT) or {}
    res = data.get("result") or {}

    def table() -> None:
        replay = " (already done earlier)" if data.get("replayed") else ""
        via = f" via {res['address']}" if res.get("address") and res.get("address") != node_id else ""
        click.echo(f"{item} on {node_id}{via}: {data.get('status')}{replay} (rc {res.get('rc')}, "
                   f"changed {str(bool(res.get('changed'))).lower()})")
        for key in ("stdout", "stderr"):
            text = str(res.get(key) or "").rstrip()
            if text:
                click.echo(f"{key}:\n{text}")
        if res.get("msg") and data.get("status") != "succeeded":
            click.echo(f"message: {res['msg']}")
        chk = data.get("check")
        if chk:
            click.echo(f"re-check of {chk.get('project')}: {chk.get('status')}")

    emit(ctx.output, data, table)
    if data.get("status") != "succeeded":
        raise CommandFailed(f"approved item {item} failed on {node_id}: {res.get('msg') or 'see above'}")


@env.group("manifest")
def manifest() -> None:
    """The supervisor's environment manifest."""


@manifest.command("show")
def manifest_show() -> None:
    """Print the stored manifest (JSON; YAML with -o yaml)."""
    from halswarm.cli.output import emit, print_json

    ctx = app()
    data = ctx.client().get("/env/manifest", what="env manifest").data
    emit(ctx.output, data, lambda: print_json(data))


@manifest.command("set")
@click.argument("path", type=click.Path(exists=True, dir_okay=False), metavar="FILE")
def manifest_set(path: str) -> None:
    """Validate and store FILE (JSON or YAML; Go or spec 8.1 format); it is pushed to the agents."""
    from halswarm.cli.errors import SupervisorRefused
    from halswarm.cli.output import emit
    from halswarm.config import ConfigError, read_config_file

    ctx = app()
    try:
        doc = read_config_file(path)
    except ConfigError as exc:
        raise UsageProblem(f"{path}: {exc}") from None
    try:
        env_ = ctx.client()._call("PUT", "/api/v1/env/manifest", json_body=doc, what="env manifest")
    except SupervisorRefused as exc:
        raise CommandFailed(exc.server_message) from None
    data = env_.data or {}

    def table() -> None:
        state = "stored" if data.get("changed") else "unchanged"
        click.echo(f"manifest {state}: version {data.get('version')} ({data.get('format')} format)")
        if data.get("pushed_to"):
            click.echo(f"pushed to: {', '.join(data['pushed_to'])}")
        for w in data.get("warnings") or []:
            click.echo(f"warning: {w}", err=True)

    emit(ctx.output, data, table)
