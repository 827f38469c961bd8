"""`halctl cost today|week|month`: the supervisor's cost report (`GET /api/v1/cost/{period}`).

json/yaml print the report exactly as the API sends it: period, total_tokens, total_cost_usd,
daily_average_usd, by_provider[], by_model[], by_project[], degraded_providers[].

The runbook's "force cost update" is `halctl cost today`: unless `--cached`, the command first asks the
supervisor to poll the providers now (`POST /api/v1/cost/refresh`), waits at most `--refresh-timeout`
seconds, names on stderr every provider whose poll failed, then prints the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from halswarm.cli.context import app

PERIODS = ("today", "week", "month")
DEFAULT_REFRESH_TIMEOUT = 60.0


def refresh_notes(results: Any, health: Any) -> list[str]:
    """One stderr line per provider whose refresh failed, with the supervisor's reason."""
    if not isinstance(results, Mapping):
        return []
    providers = health.get("providers") if isinstance(health, Mapping) else None
    notes = []
    for name, good in sorted(results.items()):
        if not good:
            info = providers.get(name) if isinstance(providers, Mapping) else None
            reason = info.get("reason") if isinstance(info, Mapping) else None
            notes.append(f"cost refresh: provider {name} failed ({reason or 'no reason given'}); "
                         "its figures are the last stored or estimated")
    return notes


def _refresh(timeout: float) -> None:
    """Poll the providers now; any failure is reported on stderr and the (stored) report still follows."""
    from halswarm.cli.errors import ApiAuthError, ApiUnreachable, SupervisorRefused
    from halswarm.cli.output import note

    ctx = app()
    try:
        env = ctx.client().post("/cost/refresh", {}, what="cost refresh", timeout=timeout)
    except ApiUnreachable as exc:
        if "timed out" not in str(exc).lower() and "timeout" not in str(exc).lower():
            raise
        note(f"cost refresh: no answer within {timeout:g} s; showing the figures stored so far")
        return
    except (SupervisorRefused, ApiAuthError) as exc:
        note(f"cost refresh failed: {exc}; showing the figures stored so far")
        return
    data = env.data if isinstance(env.data, Mapping) else {}
    for line in refresh_notes(data.get("results"), data.get("health")):
        note(line)


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
@click.option("--cached", is_flag=True, help="Print the stored figures without polling the providers first.")
@click.option("--refresh-timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_REFRESH_TIMEOUT,
              show_default=True, metavar="SECONDS", help="Longest wait for the providers' poll.")
def cost(period: str, cached: bool, refresh_timeout: float) -> None:
    """Cost of PERIOD (today, week = last 7 days, month = last 30 days; UTC): totals, daily average, and
    the split by provider, model and project. Degraded providers are estimated from model_rates.

    First polls the providers now (a bounded wait; failures are named on stderr), unless --cached."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit, fmt_cost, fmt_value, line_mode, note, print_fields, print_table

    ctx = app()
    if not cached:
        _refresh(refresh_timeout)
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
            if rows and line_mode():  # one line per item: the section is a field
                print_table(("BY", *columns, "TOKENS", "COST_USD"), [(keys[-1], *row) for row in rows])
            elif rows:
                click.echo(f"\n{title}")
                print_table((*columns, "TOKENS", "COST_USD"), rows)
        if degraded:
            note(f"estimated from model_rates for: {', '.join(map(str, degraded))} (provider reports unavailable)")

    emit(ctx.output, dict(report), table)
