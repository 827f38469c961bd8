"""`/api/v1/audit`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from halswarm.core.paging import page_meta
from halswarm.supervisor.apikit.deps import VIEWER, After, Before, Limit, Offset, cursor_page, parse_since, service
from halswarm.supervisor.apikit.envelope import ok
from halswarm.supervisor.features.audit.service import AUDIT_CURSOR, AuditService

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], dependencies=[VIEWER])
Audit = Annotated[AuditService, service(AuditService)]


@router.get("")
async def audit(log: Audit, actor: str | None = None, action: str | None = None, since: str | None = None,
                limit: Limit = 100, offset: Offset = 0, after: After = None, before: Before = None) -> JSONResponse:
    req = cursor_page(limit, offset, after, before, AUDIT_CURSOR)
    page, total, estimate = await log.page(actor, action, parse_since(since), req)
    return ok(page.items, meta=page_meta(page, req, total, estimate))

