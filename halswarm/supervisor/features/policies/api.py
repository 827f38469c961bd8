"""`/api/v1/policies`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from halswarm.supervisor.apikit.deps import VIEWER, service
from halswarm.supervisor.apikit.envelope import ok
from halswarm.supervisor.features.policies.engine import PolicyEngine

router = APIRouter(prefix="/api/v1/policies", tags=["policies"], dependencies=[VIEWER])
Policies = Annotated[PolicyEngine, service(PolicyEngine)]


@router.get("")
async def policies(engine: Policies) -> JSONResponse:
    return ok(engine.snapshot())
