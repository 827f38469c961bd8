"""Discord's REST API for the answer of a deferred interaction (`PATCH /webhooks/{application}/{token}/
messages/@original`). The interaction token is a credential for 15 minutes: never logged."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx

log = logging.getLogger(__name__)
MAX_RETRY_AFTER = 5.0
_TOKEN_IN_PATH = re.compile(r"(/webhooks/[0-9]+/)[^/\s\"']+")


def hide_interaction_tokens(record: logging.LogRecord) -> bool:
    """Logging filter: httpx logs each request's URL at debug level; the interaction token in it is masked."""
    message = record.getMessage()
    if "/webhooks/" in message:
        record.msg, record.args = _TOKEN_IN_PATH.sub(r"\1***", message), ()
    return True


logging.getLogger("httpx").addFilter(hide_interaction_tokens)


class DiscordRest:
    def __init__(self, api_base: str, timeout: float) -> None:
        self.api_base = api_base
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.api_base, timeout=self.timeout, follow_redirects=False)
        return self._client

    async def edit_original(self, application_id: str, token: str, message: dict[str, Any]) -> bool:
        """Replace the deferred answer (of a component: the message the button is on); one retry after a 429
        or a 5xx. False (logged without the token) when Discord did not take it."""
        return await self._send("PATCH", f"/webhooks/{application_id}/{token}/messages/@original", message)

    async def follow_up(self, application_id: str, token: str, message: dict[str, Any]) -> bool:
        """A new message after the first answer (`flags: 64` makes it ephemeral); same retry as above."""
        return await self._send("POST", f"/webhooks/{application_id}/{token}", message)

    async def _send(self, method: str, path: str, message: dict[str, Any]) -> bool:
        for attempt in (1, 2):
            try:
                r = await self._http().request(method, path, json=message)
            except httpx.HTTPError as exc:
                log.warning("discord follow-up failed: %s", type(exc).__name__)
                return False
            if r.status_code < 300:
                return True
            if attempt == 1 and (r.status_code == 429 or r.status_code >= 500):
                await asyncio.sleep(min(_retry_after(r), MAX_RETRY_AFTER))
                continue
            log.warning("discord follow-up refused: HTTP %d", r.status_code)
            return False
        return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _retry_after(r: httpx.Response) -> float:
    try:
        return max(0.0, float(r.json().get("retry_after", 1)))
    except (ValueError, AttributeError):
        return 1.0
