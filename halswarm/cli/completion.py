"""Shell-completion callbacks for halctl arguments (click's `_HALCTL_COMPLETE`).

Incident ids come from the remediation catalog (offline).  Node and session ids are asked from the
supervisor with a short timeout; any failure (no URL, no token, unreachable, denied) completes
nothing instead of printing an error into the operator's shell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from click.shell_completion import CompletionItem

COMPLETION_TIMEOUT = 2.0  # seconds: a tab press must not hang
COMPLETION_LIMIT = 500


def complete_incident_ids(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    from halswarm.core.remediation import catalog

    return [CompletionItem(i.id, help=i.section) for i in catalog.INCIDENTS if i.id.startswith(incomplete)]


def _api_items(ctx: click.Context, path: str) -> list[Mapping[str, Any]]:
    """GET `path` with the root command's settings (flags, env, config file); [] on any failure."""
    from halswarm.cli.context import AppContext

    params = ctx.find_root().params
    try:
        timeout = min(float(params.get("timeout") or COMPLETION_TIMEOUT), COMPLETION_TIMEOUT)
        settings = AppContext(supervisor_url=params.get("supervisor_url"), auth_token=params.get("auth_token"),
                              timeout=timeout)
        with ctx.scope(cleanup=False):  # click does not push the context while completing
            env = settings.client().get(path, {"limit": COMPLETION_LIMIT})
    except Exception:  # completion is best effort: never a traceback or an error line in the shell
        return []
    return [item for item in env.data or [] if isinstance(item, Mapping)]


def _complete_ids(ctx: click.Context, path: str, incomplete: str, describe: tuple[str, ...]) -> list[CompletionItem]:
    items = []
    for obj in _api_items(ctx, path):
        ident = obj.get("id")
        if isinstance(ident, str) and ident.startswith(incomplete):
            help_text = " ".join(str(obj[k]) for k in describe if obj.get(k))
            items.append(CompletionItem(ident, help=help_text or None))
    return items


def complete_node_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _complete_ids(ctx, "/nodes", incomplete, ("hostname", "status"))


def complete_session_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _complete_ids(ctx, "/sessions", incomplete, ("project", "status"))


def complete_approval_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Pending permission requests, described by session and what they ask for."""
    return _complete_ids(ctx, "/approvals", incomplete, ("session_id", "permission", "command"))
