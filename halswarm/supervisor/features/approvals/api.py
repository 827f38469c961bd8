"""`/api/v1/approvals`: pending permission requests and the answer to one."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from halswarm.core.paging import page_meta
from halswarm.protocol.permission import MESSAGE_MAX
from halswarm.supervisor.apikit.deps import (
    OPERATOR,
    VIEWER,
    After,
    Before,
    CallerDep,
    Limit,
    Offset,
    cursor_page,
    service,
)
from halswarm.supervisor.apikit.envelope import ok
from halswarm.supervisor.features.approvals.service import APPROVAL_CURSOR, ApprovalsService, to_api

router = APIRouter(prefix="/api/v1/approvals", tags=["approvals"])
Approvals = Annotated[ApprovalsService, service(ApprovalsService)]


class ReplyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reply: Literal["once", "always", "reject"]
    message: str | None = Field(default=None, max_length=MESSAGE_MAX)


@router.get("", dependencies=[VIEWER])
async def list_approvals(approvals: Approvals, node_id: str | None = None, session_id: str | None = None,
                         project: str | None = None, limit: Limit = 100, offset: Offset = 0, after: After = None,
                         before: Before = None) -> JSONResponse:
    req = cursor_page(limit, offset, after, before, APPROVAL_CURSOR)
    page, total, now = await approvals.page(req, node_id=node_id, session_id=session_id, project=project)
    return ok([to_api(r, now) for r in page.items], meta=page_meta(page, req, total, False))


@router.post("/{approval_id}", dependencies=[OPERATOR])
async def reply(approvals: Approvals, approval_id: str, body: ReplyBody, caller: CallerDep) -> JSONResponse:
    return ok(await approvals.reply(approval_id, body.reply, body.message, actor=caller.actor, ip=caller.ip))
