"""`/api/v1/dependencies`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from halswarm.supervisor.apikit.deps import VIEWER, service
from halswarm.supervisor.apikit.envelope import ok
from halswarm.supervisor.features.dependencies.service import DependencyManager

router = APIRouter(prefix="/api/v1/dependencies", tags=["dependencies"], dependencies=[VIEWER])
Dependencies = Annotated[DependencyManager, service(DependencyManager)]


@router.get("")
async def dependencies(manager: Dependencies) -> JSONResponse:
    return ok(await manager.snapshot())
