"""`POST /api/v1/chat/slack/commands` (slash commands) and `POST /api/v1/chat/slack/interactions` (Block Kit
buttons): Slack's Request URLs (docs/chatops.md).

No bearer token: Slack cannot send one. A request is admitted only with a valid `X-Slack-Signature` under
the signing secret, a fresh `X-Slack-Request-Timestamp` and a signature not seen before; anything else is
401. The answers are Slack's (a message, or an empty 200 for a button press), not the API envelope."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from halswarm.supervisor.apikit.deps import service
from halswarm.supervisor.features.chat.slack_service import MAX_BODY_BYTES, SlackChat

router = APIRouter(prefix="/api/v1/chat/slack", tags=["chatops"])
Slack = Annotated[SlackChat, service(SlackChat)]
# Declared (optional) so the OpenAPI document shows them; a request without them is 401, not 400.
Signature = Annotated[str | None, Header(alias="X-Slack-Signature", max_length=128,
                                         description="v0=<hex HMAC-SHA256 of v0:timestamp:raw body>")]
Timestamp = Annotated[str | None, Header(alias="X-Slack-Request-Timestamp", max_length=32,
                                         description="Unix time the signature covers")]


def _form_body(fields: dict[str, dict[str, str]], required: list[str], what: str) -> dict[str, object]:
    schema = {"type": "object", "required": required, "description": what, "properties": fields}
    return {"requestBody": {"required": True,
                            "content": {"application/x-www-form-urlencoded": {"schema": schema}}}}


_S = {"type": "string"}
COMMAND_BODY = _form_body({k: _S for k in ("command", "text", "user_id", "user_name", "team_id", "channel_id",
                                           "response_url", "trigger_id", "api_app_id")},
                          ["command", "user_id"], "A Slack slash command (`/hal status alpha`)")
INTERACTION_BODY = _form_body({"payload": _S | {"description": "JSON of a block_actions interaction"}},
                              ["payload"], "A Slack interaction (a button press)")


async def _raw(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():  # bounded before it is all in memory
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            break
    return body


@router.post("/commands", openapi_extra=COMMAND_BODY)
async def slack_commands(slack: Slack, request: Request, signature: Signature = None,
                         timestamp: Timestamp = None) -> JSONResponse:
    form = slack.admit(await _raw(request), signature, timestamp, time.time())
    return JSONResponse(await slack.command(form))


@router.post("/interactions", openapi_extra=INTERACTION_BODY)
async def slack_interactions(slack: Slack, request: Request, signature: Signature = None,
                             timestamp: Timestamp = None) -> Response:
    form = slack.admit(await _raw(request), signature, timestamp, time.time())
    await slack.interaction(form)
    return Response(status_code=200)
