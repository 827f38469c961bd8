"""`/api/v1/env` and `/api/v1/agent-md`."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from halswarm.supervisor.apikit.deps import ADMIN, OPERATOR, VIEWER, CallerDep, service
from halswarm.supervisor.apikit.envelope import ApiError, ok
from halswarm.supervisor.features.env.agentmd import AgentMdService
from halswarm.supervisor.features.env.service import EnvService, InvalidManifest

MAX_MANIFEST_BYTES = 512 * 1024

router = APIRouter(prefix="/api/v1")
Env = Annotated[EnvService, service(EnvService)]
AgentMd = Annotated[AgentMdService, service(AgentMdService)]


class ProvisionBody(BaseModel):
    project: str | None = None
    dry_run: bool = False
    force: bool = False


class CheckBody(BaseModel):
    project: str | None = None


class ApproveBody(BaseModel):
    item: str = Field(min_length=1)
    dry_run: bool = False


class SyncBody(BaseModel):
    project: str | None = None
    node_id: str | None = None
    force: bool = False


# ----- manifest -----

@router.get("/env/manifest", dependencies=[VIEWER], tags=["env"])
async def get_manifest(env: Env) -> JSONResponse:
    doc, meta = await env.manifest()
    return ok(doc, meta=meta)


@router.put("/env/manifest", dependencies=[ADMIN], tags=["env"],
            responses={201: {"description": "Created (the first manifest)"}})
async def put_manifest(env: Env, request: Request, caller: CallerDep) -> JSONResponse:
    raw = await request.body()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ApiError("PAYLOAD_TOO_LARGE", f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError("BAD_REQUEST", f"body is not JSON: {exc}") from None
    try:
        data, created = await env.put_manifest(doc, caller.actor)
    except InvalidManifest as exc:
        return JSONResponse({"error": str(exc), "code": "VALIDATION_ERROR", "problems": exc.problems},
                            status_code=400)
    return ok(data, status=201 if created else 200)


# ----- status, drift -----

@router.get("/env/status", dependencies=[VIEWER], tags=["env"])
async def env_status(env: Env) -> JSONResponse:
    rows, meta = await env.status()
    return ok(rows, meta=meta)


@router.get("/env/status/{node_id}", dependencies=[VIEWER], tags=["env"])
async def env_status_node(env: Env, node_id: str) -> JSONResponse:
    return ok(await env.status_of(node_id))


@router.get("/env/drift", dependencies=[VIEWER], tags=["env"])
async def env_drift(env: Env, node_id: str | None = None, project: str | None = None) -> JSONResponse:
    rows, meta = await env.drift(node_id, project)
    return ok(rows, meta=meta)


# ----- commands -----

@router.post("/env/check/{node_id}", dependencies=[OPERATOR], tags=["env"])
async def env_check(env: Env, node_id: str, request: Request, caller: CallerDep,
                    body: CheckBody | None = None) -> JSONResponse:
    project = body.project if body else request.query_params.get("project")
    return ok(await env.check(node_id, project or None, actor=caller.actor, ip=caller.ip))


@router.post("/env/provision/{node_id}", dependencies=[OPERATOR], tags=["env"])
async def env_provision(env: Env, node_id: str, caller: CallerDep, body: ProvisionBody | None = None) -> JSONResponse:
    body = body or ProvisionBody()
    return ok(await env.provision(node_id, body.project, dry_run=body.dry_run, force=body.force, actor=caller.actor,
                                  ip=caller.ip))


@router.post("/env/approve/{node_id}", dependencies=[ADMIN], tags=["env"])
async def env_approve(env: Env, node_id: str, body: ApproveBody, caller: CallerDep) -> JSONResponse:
    return ok(await env.approve(node_id, body.item, caller.actor, dry_run=body.dry_run))


# ----- AGENT.md -----

@router.get("/agent-md/{project}", dependencies=[VIEWER], tags=["agent-md"])
async def agentmd_show(agentmd: AgentMd, project: str, caller: CallerDep, node_id: str | None = None) -> JSONResponse:
    return ok(await agentmd.read("agentmd_show", project, node_id, actor=caller.actor, ip=caller.ip))


@router.get("/agent-md/{project}/diff", dependencies=[VIEWER], tags=["agent-md"])
async def agentmd_diff(agentmd: AgentMd, project: str, caller: CallerDep, node_id: str | None = None) -> JSONResponse:
    return ok(await agentmd.read("agentmd_diff", project, node_id, actor=caller.actor, ip=caller.ip))


@router.get("/agent-md/{project}/template", dependencies=[VIEWER], tags=["agent-md"])
async def agentmd_template(agentmd: AgentMd, project: str) -> JSONResponse:
    return ok(await agentmd.template(project))


@router.post("/agent-md/sync", dependencies=[OPERATOR], tags=["agent-md"])
async def agentmd_sync(agentmd: AgentMd, caller: CallerDep, body: SyncBody | None = None) -> JSONResponse:
    body = body or SyncBody()
    rows, counts = await agentmd.sync(body.project, body.node_id, force=body.force, actor=caller.actor, ip=caller.ip)
    return ok(rows, meta={"total": len(rows), **counts})
