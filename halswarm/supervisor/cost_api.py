"""Cost aggregator health and forced refresh (runbook "Cost Data Discrepancy", remediation
``cost-data-discrepancy``).

- ``GET /api/v1/cost/status``: the aggregator's health: ``{running, poll_interval_s, providers_configured,
  window, last_update_age_s, missing_dates, degraded_providers, providers: {name: {degraded, reason,
  last_success, last_update, last_update_age_s, missing_dates, ...}}}``. Read-only.
- ``POST /api/v1/cost/refresh`` {providers?: [names]}: polls the providers now (re-poll plus back-fill of
  every uncovered day of the window), audited (action ``cost_refresh``) and emitted as ``cost.refreshed``;
  answers ``{results: {provider: ok}, health}``. 400 when a named provider is not enabled.

Both are registered before ``GET /api/v1/cost/{period}``, which would otherwise take ``status`` as a period.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from pydantic import BaseModel

from halswarm.core.roles import Role
from halswarm.store.repos.audit import insert_audit
from halswarm.supervisor.apikit.deps import actor_of, client_actor_of, role_dependencies
from halswarm.supervisor.apikit.envelope import ApiError, ok

if TYPE_CHECKING:
    from halswarm.supervisor.app import Supervisor

REFRESH_TIMEOUT = 120.0


class RefreshBody(BaseModel):
    providers: list[str] | None = None


def include_cost_routes(app: FastAPI, sup: Supervisor) -> None:
    need = role_dependencies()

    async def cost_report(period: str) -> Any:
        """`data` is exactly the report (SPEC 6); `meta.providers` tells each provider's poll state."""
        from halswarm.supervisor.costs import BadPeriod

        try:
            report = await sup.costs.report(period.strip().lower())
        except BadPeriod as exc:
            raise ApiError("VALIDATION_ERROR", str(exc)) from None
        return ok(report, meta={"providers": sup.costs.status()})

    @app.get("/api/v1/cost", dependencies=need[Role.viewer], tags=["cost"])
    async def cost(period: str = "today") -> Any:
        return await cost_report(period)

    @app.get("/api/v1/cost/status", dependencies=need[Role.viewer], tags=["cost"])
    async def cost_status() -> Any:
        return ok(await sup.costs.health())

    @app.post("/api/v1/cost/refresh", dependencies=need[Role.operator], tags=["cost"])
    async def cost_refresh(request: Request, body: RefreshBody | None = None) -> Any:
        actor, ip = actor_of(request)
        enabled = [p.name for p in sup.costs.settings.enabled]
        names = body.providers if body is not None and body.providers else None
        unknown = sorted(set(names or []) - set(enabled))
        if unknown:
            raise ApiError("VALIDATION_ERROR", f"provider(s) not enabled: {', '.join(unknown)} "
                                               f"(enabled: {', '.join(enabled) or 'none'})")
        started = time.monotonic()
        try:
            results = await asyncio.wait_for(sup.costs.refresh(names), REFRESH_TIMEOUT)
        except TimeoutError:
            raise ApiError("TIMEOUT", f"cost refresh did not finish within {REFRESH_TIMEOUT:g}s") from None
        health = await sup.costs.health()
        failed = sorted(n for n, good in results.items() if not good)
        result = "failure" if failed else "success"
        error = "; ".join(f"{n}: {health['providers'].get(n, {}).get('reason')}" for n in failed) or None
        row = {"timestamp": time.time(), "actor": actor, "action": "cost_refresh", "target": ",".join(results),
               "args": {"providers": names}, "result": result, "error": error,
               "duration_ms": int((time.monotonic() - started) * 1000), "ip_address": ip,
               "client_actor": client_actor_of(request)}
        await sup.writer.run(lambda c: insert_audit(c, row))
        await sup.ingestor.emit_stored(None, "cost.refreshed", {
            "results": results, "actor": actor, "missing_dates": len(health["missing_dates"]),
            "degraded_providers": health["degraded_providers"]})
        return ok({"results": results, "health": health})

    @app.get("/api/v1/cost/{period}", dependencies=need[Role.viewer], tags=["cost"])
    async def cost_period(period: str) -> Any:
        return await cost_report(period)
