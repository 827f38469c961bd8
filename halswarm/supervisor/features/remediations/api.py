"""`/api/v1/remediations` (SPEC 6/8).

- ``GET``: stored reports, newest first, each the report itself plus ``received_at`` and ``actor``;
  filters ``incident``, ``status``, ``host``, ``since``; ``meta`` has total/limit/offset.
- ``POST`` (a report of ``halswarm.core.remediation.report``): validated, stored (201), audited, and routed
  as ``remediation.completed`` or, when the run failed or was escalated, ``remediation.escalated``.
  Re-posting the same report id answers 409.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from halswarm.supervisor.apikit.deps import OPERATOR, VIEWER, CallerDep, Limit, Offset, page, parse_since, service
from halswarm.supervisor.apikit.envelope import ok, page_meta
from halswarm.supervisor.features.remediations.service import RemediationsService, check_status

router = APIRouter(prefix="/api/v1/remediations", tags=["remediations"])
Remediations = Annotated[RemediationsService, service(RemediationsService)]


@router.get("", dependencies=[VIEWER])
async def list_remediations(remediations: Remediations, incident: str | None = None, status: str | None = None,
                            host: str | None = None, since: str | None = None, limit: Limit = 100,
                            offset: Offset = 0) -> JSONResponse:
    limit, offset = page(limit, offset)
    check_status(status)  # before `since`, as the errors have always come
    items, total = await remediations.history(incident=incident, status=status, host=host, since=parse_since(since),
                                              limit=limit, offset=offset)
    return ok(items, meta=page_meta(total, limit, offset))


@router.post("", dependencies=[OPERATOR], status_code=201)
async def post_remediation(remediations: Remediations, request: Request, caller: CallerDep) -> JSONResponse:
    stored = await remediations.record(await request.body(), actor=caller.actor, ip=caller.ip,
                                       client_actor=caller.client_actor)
    return ok(stored, status=201)
