"""Tool auth routes (SPEC 6).

- ``GET /api/v1/auth/drift[?all=true]``: nodes whose reported ``credential_version`` differs from the
  supervisor's ``credentials.version`` (Go shape: ``[{node_id, credential_sync, credential_version}]``).
- ``POST /api/v1/oauth/trigger`` {node_id, tool, provider?, method?}: the OAuthResult
  ``{status: challenge|success|failure|manual_required, challenge_url?, user_code?, reason?,
  manual_guidance?}``.
- ``POST /api/v1/commands/credentials/push`` {target_node?, env_vars?, version?, idempotency_key?}
  (Go body): with ``env_vars`` it pushes them to ``target_node``; without, it pushes the supervisor's
  configured ``credentials`` (``defaults.env`` + ``agents.<node>.env``, ``credentials.version``), to
  ``target_node`` or, when none is given, to every online node that drifts.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from halswarm.supervisor.apikit.deps import ADMIN, VIEWER, CallerDep, service
from halswarm.supervisor.apikit.envelope import ok
from halswarm.supervisor.features.tool_auth.service import ToolAuthService

router = APIRouter(prefix="/api/v1", tags=["auth"])
ToolAuth = Annotated[ToolAuthService, service(ToolAuthService)]


class OAuthBody(BaseModel):
    node_id: str = Field(min_length=1)
    tool: str = Field(min_length=1)
    provider: str | None = None
    method: str | None = None


class PushBody(BaseModel):
    target_node: str | None = None
    node_id: str | None = None  # alias
    env_vars: dict[str, str] | None = Field(default=None, repr=False)
    version: int | None = Field(default=None, ge=0, le=2**63 - 1)  # SQLite INTEGER
    idempotency_key: str | None = None


@router.get("/auth/drift", dependencies=[VIEWER])
async def auth_drift(tool_auth: ToolAuth, include_all: bool = Query(False, alias="all")) -> JSONResponse:
    rows, meta = tool_auth.drift(include_all)
    return ok(rows, meta=meta)


@router.post("/oauth/trigger", dependencies=[ADMIN])
async def oauth_trigger(tool_auth: ToolAuth, body: OAuthBody, caller: CallerDep) -> JSONResponse:
    return ok(await tool_auth.trigger_oauth(body.node_id, body.tool, body.provider, body.method,
                                            actor=caller.actor, ip=caller.ip))


@router.post("/commands/credentials/push", dependencies=[ADMIN])
async def credentials_push(tool_auth: ToolAuth, body: PushBody, caller: CallerDep) -> JSONResponse:
    data, meta = await tool_auth.push(body.target_node or body.node_id, body.env_vars, body.version,
                                      idempotency_key=body.idempotency_key, actor=caller.actor, ip=caller.ip)
    return ok(data, meta=meta)
