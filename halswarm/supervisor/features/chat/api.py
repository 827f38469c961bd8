"""`POST /api/v1/chat/discord/interactions`: Discord's Interactions Endpoint URL (docs/chatops.md).

No bearer token: Discord cannot send one. The request is admitted only with a valid Ed25519 signature of
the configured application (`chatops.discord.public_key`), a fresh timestamp and a signature not seen
before; anything else is 401. The answer is Discord's interaction response, not the API envelope."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from halswarm.supervisor.apikit.deps import service
from halswarm.supervisor.features.chat.service import MAX_BODY_BYTES, DiscordInteractions
from halswarm.supervisor.features.chat.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER

router = APIRouter(prefix="/api/v1/chat", tags=["chatops"])
Discord = Annotated[DiscordInteractions, service(DiscordInteractions)]


@router.post("/discord/interactions")
async def discord_interactions(discord: Discord, request: Request) -> JSONResponse:
    body = b""
    async for chunk in request.stream():  # bounded before it is all in memory
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            break
    doc = discord.admit(body, request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER),
                        time.time())
    return JSONResponse(await discord.answer(doc))
