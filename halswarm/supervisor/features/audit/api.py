"""`/api/v1/audit`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from halswarm.supervisor.apikit.deps import VIEWER, Limit, Offset, page, parse_since, service
from halswarm.supervisor.apikit.envelope import ok, page_meta
from halswarm.supervisor.features.audit.service import AuditService

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], dependencies=[VIEWER])
Audit = Annotated[AuditService, service(AuditService)]


@router.get("")
async def audit(log: Audit, actor: str | None = None, action: str | None = None, since: str | None = None,
                limit: Limit = 100, offset: Offset = 0) -> JSONResponse:
    limit, offset = page(limit, offset)
    items, total = await log.page(actor, action, parse_since(since), limit, offset)
    return ok(items, meta=page_meta(total, limit, offset))

