"""`/api/v1/commands`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from halswarm.supervisor.apikit.deps import VIEWER, CallerDep, Operator, service
from halswarm.supervisor.apikit.envelope import ok
from halswarm.supervisor.features.commands.service import CommandsService, target_of

router = APIRouter(prefix="/api/v1/commands", tags=["commands"])
Commands = Annotated[CommandsService, service(CommandsService)]
MAX_COMMAND_TIMEOUT_S = 86_400  # a day: longer is a mistake, and inf/1e308 s would overflow the deadline


class CommandBody(BaseModel):
    type: str = Field(min_length=1)
    target: str | dict[str, str] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    timeout: float | None = Field(default=None, gt=0, le=MAX_COMMAND_TIMEOUT_S, description="seconds (Go-compatible)")
    timeout_ms: int | None = Field(default=None, gt=0, le=MAX_COMMAND_TIMEOUT_S * 1000)
    wait: bool = True


@router.post("", responses={202: {"description": "Accepted (wait: false)"}})
async def post_command(commands: Commands, body: CommandBody, identity: Operator, caller: CallerDep) -> JSONResponse:
    timeout = body.timeout_ms / 1000 if body.timeout_ms else body.timeout
    data = await commands.run(identity, body.type, target_of(body.target, body.args), body.args, wait=body.wait,
                              timeout=timeout, idempotency_key=body.idempotency_key, actor=caller.actor, ip=caller.ip)
    return ok(data, status=200 if body.wait else 202)


@router.get("/{command_id}", dependencies=[VIEWER])
async def get_command(commands: Commands, command_id: str) -> JSONResponse:
    return ok(await commands.get(command_id))
