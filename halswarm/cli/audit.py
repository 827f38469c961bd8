"""`halctl audit list [--actor --action --since --limit]`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click

from halswarm.cli.context import app

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since_param(value: str | None, *, now: datetime | None = None) -> str | None:
    """`30m`, `2h`, `7d`, `1w` -> ISO-8601 UTC instant that long ago; anything else is passed as given
    (ISO-8601 text or unix seconds, which the API accepts)."""
    if value is None or not value.strip():
        return None
    match = _RELATIVE.match(value)
    if not match:
        return value.strip()
    amount, unit = float(match.group(1)), match.group(2).lower()
    instant = (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group("audit")
def audit() -> None:
    """The supervisor's audit log (who did what, with which outcome)."""


@audit.command("list")
@click.option("--actor", help="Only entries by this actor (the operator token's name).")
@click.option("--action", help="Only this action (e.g. kill_session).")
@click.option("--since", help="Only entries at or after this time: ISO-8601, unix seconds, or 30m/2h/7d/1w ago.")
@click.option("--limit", type=click.IntRange(1, 10_000), help="At most this many (server default 100).")
def list_audit(actor: str | None, action: str | None, since: str | None, limit: int | None) -> None:
    """List audit entries, newest first (TIMESTAMP ACTOR CLIENT ACTION TARGET RESULT ERROR).

    ACTOR is the name of the operator token the supervisor authenticated; CLIENT is what the client
    said it is (halctl's --actor, default user@host), recorded beside it."""
    from halswarm.cli.output import emit, fmt_time, fmt_value, note, print_table, truncate

    ctx = app()
    params = {"actor": actor, "action": action, "since": since_param(since), "limit": limit}
    env = ctx.client().get("/audit", params)
    items = env.data or []

    def table() -> None:
        print_table(
            ("TIMESTAMP", "ACTOR", "CLIENT", "ACTION", "TARGET", "RESULT", "ERROR"),
            (
                (
                    fmt_time(a.get("timestamp")),
                    fmt_value(a.get("actor")),
                    fmt_value(a.get("client_actor")),
                    fmt_value(a.get("action")),
                    fmt_value(a.get("target")),
                    fmt_value(a.get("result", a.get("outcome"))),
                    truncate(fmt_value(a.get("error")), 100),
                )
                for a in items
            ),
        )
        total = env.meta.get("total")
        if isinstance(total, int) and total > len(items):
            more = "+" if env.meta.get("total_is_estimate") else ""
            note(f"showing {len(items)} of {total}{more} entries (use --limit / --since)")

    emit(ctx.output, items, table)
