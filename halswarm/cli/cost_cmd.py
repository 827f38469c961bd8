"""`halctl cost today|week|month`: the supervisor's cost report (`GET /api/v1/cost/{period}`).

json/yaml print the report exactly as the API sends it: period, total_tokens, total_cost_usd,
daily_average_usd, by_provider[], by_model[], by_project[], degraded_providers[].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from halswarm.cli.context import app

PERIODS = ("today", "week", "month")


def _rows(items: Any, keys: tuple[str, ...]) -> list[tuple[str, ...]]:
    from halswarm.cli.output import fmt_cost, fmt_value

    out = []
    for item in items or []:
        if isinstance(item, Mapping):
            out.append((*(fmt_value(item.get(k)) for k in keys), fmt_value(item.get("tokens")),
                        fmt_cost(item.get("cost_usd"))))
    return out


@click.command("cost")
@click.argument("period", type=click.Choice(PERIODS, case_sensitive=False), default="today")
def cost(period: str) -> None:
    """Cost of PERIOD (today, week = last 7 days, month = last 30 days; UTC): totals, daily average, and
    the split by provider, model and project. Degraded providers are estimated from model_rates."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit, fmt_cost, fmt_value, note, print_fields, print_table

    ctx = app()
    env = ctx.client().get(f"/cost/{path_id(period.lower())}", what="cost report")
    report = env.data if isinstance(env.data, Mapping) else {}

    def table() -> None:
        degraded = report.get("degraded_providers") or []
        print_fields([
            ("PERIOD", fmt_value(report.get("period"))),
            ("TOTAL_TOKENS", fmt_value(report.get("total_tokens"))),
            ("TOTAL_COST_USD", fmt_cost(report.get("total_cost_usd"))),
            ("DAILY_AVERAGE_USD", fmt_cost(report.get("daily_average_usd"))),
            ("DEGRADED_PROVIDERS", ", ".join(map(str, degraded)) or "-"),
        ])
        for title, columns, keys in (("BY PROVIDER", ("PROVIDER",), ("provider",)),
                                     ("BY MODEL", ("PROVIDER", "MODEL"), ("provider", "model")),
                                     ("BY PROJECT", ("PROJECT",), ("project",))):
            rows = _rows(report.get(f"by_{keys[-1]}"), keys)
            if rows:
                click.echo(f"\n{title}")
                print_table((*columns, "TOKENS", "COST_USD"), rows)
        if degraded:
            note(f"estimated from model_rates for: {', '.join(map(str, degraded))} (provider reports unavailable)")

    emit(ctx.output, dict(report), table)
