"""`/api/v1/sessions`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from halswarm.core.paging import page_meta
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
from halswarm.supervisor.features.sessions.service import SESSION_CURSOR, SessionsService

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])
Sessions = Annotated[SessionsService, service(SessionsService)]


class CreateSessionBody(BaseModel):
    project: str = Field(min_length=1)
    prompt: str | None = None
    model: str | None = None
    node_id: str | None = None
    idempotency_key: str | None = None


class PromptBody(BaseModel):
    message: str = Field(min_length=1)
    idempotency_key: str | None = None


@router.get("", dependencies=[VIEWER])
async def list_sessions(sessions: Sessions, project: str | None = None, status: str | None = None,
                        node_id: str | None = None, limit: Limit = 100, offset: Offset = 0, after: After = None,
                        before: Before = None) -> JSONResponse:
    req = cursor_page(limit, offset, after, before, SESSION_CURSOR)
    page, total = await sessions.page(project, status, node_id, req)
    return ok([s.to_api() for s in page.items], meta=page_meta(page, req, total, False))


@router.get("/{session_id}", dependencies=[VIEWER])
async def get_session(sessions: Sessions, session_id: str) -> JSONResponse:
    return ok((await sessions.get(session_id)).to_api())


@router.post("", dependencies=[OPERATOR], status_code=201)
async def create_session(sessions: Sessions, body: CreateSessionBody, caller: CallerDep) -> JSONResponse:
    data = await sessions.create(body.project, body.prompt, body.model, body.node_id, body.idempotency_key,
                                 actor=caller.actor, ip=caller.ip)
    return ok(data, status=201)


@router.post("/{session_id}/prompt", dependencies=[OPERATOR])
async def prompt_session(sessions: Sessions, session_id: str, body: PromptBody, caller: CallerDep) -> JSONResponse:
    return ok(await sessions.prompt(session_id, body.message, body.idempotency_key, actor=caller.actor, ip=caller.ip))


@router.post("/{session_id}/resume", dependencies=[OPERATOR])
async def resume(sessions: Sessions, session_id: str, caller: CallerDep) -> JSONResponse:
    return ok(await sessions.act(session_id, "resume", actor=caller.actor, ip=caller.ip))


@router.post("/{session_id}/restart", dependencies=[OPERATOR])
async def restart(sessions: Sessions, session_id: str, caller: CallerDep) -> JSONResponse:
    return ok(await sessions.act(session_id, "restart", actor=caller.actor, ip=caller.ip))


@router.post("/{session_id}/handover", dependencies=[OPERATOR])
async def handover(sessions: Sessions, session_id: str, caller: CallerDep) -> JSONResponse:
    return ok(await sessions.act(session_id, "handover", actor=caller.actor, ip=caller.ip))


@router.delete("/{session_id}", dependencies=[OPERATOR])
async def kill(sessions: Sessions, session_id: str, caller: CallerDep) -> JSONResponse:
    return ok(await sessions.act(session_id, "kill", actor=caller.actor, ip=caller.ip))
