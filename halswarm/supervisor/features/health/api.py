"""`/healthz`, `/readyz`, `/metrics` (unauthenticated: probes and scrapers)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from halswarm import __version__
from halswarm.supervisor.apikit.deps import service
from halswarm.supervisor.features.health.service import HealthService

router = APIRouter(tags=["health"])
Health = Annotated[HealthService, service(HealthService)]


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"status": "alive", "version": __version__}


@router.get("/readyz")
async def readyz(health: Health) -> JSONResponse:
    components = await health.readiness()
    # `degraded`: working with less (the LISTEN connection down, the polls carry on): still ready.
    failing = [k for k, v in components.items() if v["status"] not in ("ok", "degraded")]
    body: dict[str, Any] = {"status": "ok" if not failing else "unavailable", "components": components}
    if failing:
        body |= {"error": f"not ready: {', '.join(failing)}", "code": "SERVICE_UNAVAILABLE"}
    return JSONResponse(body, status_code=200 if not failing else 503)


@router.get("/metrics")
async def metrics(health: Health) -> Response:
    text, media_type = health.exposition()
    return Response(text, media_type=media_type)
