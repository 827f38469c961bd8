"""`POST /api/v1/chat/discord/interactions`: Discord's Interactions Endpoint URL (docs/chatops.md).

No bearer token: Discord cannot send one. The request is admitted only with a valid Ed25519 signature of
the configured application (`chatops.discord.public_key`), a fresh timestamp and a signature not seen
before; anything else is 401. The answer is Discord's interaction response, not the API envelope."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from halswarm.supervisor.apikit.deps import service
from halswarm.supervisor.features.chat.service import MAX_BODY_BYTES, DiscordInteractions

router = APIRouter(prefix="/api/v1/chat", tags=["chatops"])
Discord = Annotated[DiscordInteractions, service(DiscordInteractions)]
# Declared (optional) so the OpenAPI document shows them; a request without them is 401, not 400.
Signature = Annotated[str | None, Header(alias="X-Signature-Ed25519", max_length=256,
                                         description="Ed25519 signature (hex) of timestamp + raw body")]
Timestamp = Annotated[str | None, Header(alias="X-Signature-Timestamp", max_length=32,
                                         description="Unix time the signature covers")]


# The body is read raw (the signature covers its exact bytes); documented here for clients.
INTERACTION_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["type"],
    "description": "A Discord interaction (1 PING, 2 APPLICATION_COMMAND, 3 MESSAGE_COMPONENT: a button press)",
    "properties": {"type": {"type": "integer"}, "application_id": {"type": "string"}, "token": {"type": "string"},
                   "data": {"type": "object"}, "member": {"type": "object"}, "user": {"type": "object"},
                   "guild_id": {"type": "string"}, "message": {"type": "object"}}}}}}}


@router.post("/discord/interactions", openapi_extra=INTERACTION_BODY)
async def discord_interactions(discord: Discord, request: Request, signature: Signature = None,
                               timestamp: Timestamp = None) -> JSONResponse:
    body = b""
    async for chunk in request.stream():  # bounded before it is all in memory
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            break
    doc = discord.admit(body, signature, timestamp, time.time())
    return JSONResponse(await discord.answer(doc))
