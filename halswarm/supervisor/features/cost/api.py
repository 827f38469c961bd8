"""`/api/v1/cost`: the cost report, the aggregator's health and a forced refresh.

- ``GET /api/v1/cost/status``: the aggregator's health: ``{running, poll_interval_s, providers_configured,
  window, last_update_age_s, missing_dates, degraded_providers, providers: {name: {degraded, reason,
  last_success, last_update, last_update_age_s, missing_dates, ...}}}``. Read-only.
- ``POST /api/v1/cost/refresh`` {providers?: [names]}: polls the providers now (re-poll plus back-fill of
  every uncovered day of the window), audited (action ``cost_refresh``) and emitted as ``cost.refreshed``;
  answers ``{results: {provider: ok}, health}``. 400 when a named provider is not enabled.

Both are declared before ``GET /api/v1/cost/{period}``, which would otherwise take ``status`` as a period.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from halswarm.supervisor.apikit.deps import OPERATOR, VIEWER, CallerDep, service
from halswarm.supervisor.apikit.envelope import ok
from halswarm.supervisor.features.cost.service import CostService

router = APIRouter(prefix="/api/v1/cost", tags=["cost"])
Costs = Annotated[CostService, service(CostService)]


class RefreshBody(BaseModel):
    providers: list[str] | None = None


async def _report(costs: CostService, period: str) -> JSONResponse:
    """`data` is exactly the report (SPEC 6); `meta.providers` tells each provider's poll state."""
    report, meta = await costs.report(period)
    return ok(report, meta=meta)


@router.get("", dependencies=[VIEWER])
async def cost(costs: Costs, period: str = "today") -> JSONResponse:
    return await _report(costs, period)


@router.get("/status", dependencies=[VIEWER])
async def cost_status(costs: Costs) -> JSONResponse:
    return ok(await costs.health())


@router.post("/refresh", dependencies=[OPERATOR])
async def cost_refresh(costs: Costs, caller: CallerDep, body: RefreshBody | None = None) -> JSONResponse:
    names = body.providers if body is not None and body.providers else None
    return ok(await costs.refresh(names, actor=caller.actor, ip=caller.ip, client_actor=caller.client_actor))


@router.get("/{period}", dependencies=[VIEWER])
async def cost_period(costs: Costs, period: str) -> JSONResponse:
    return await _report(costs, period)
