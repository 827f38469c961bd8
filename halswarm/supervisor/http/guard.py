"""ASGI guard in front of the HTTP API: request bodies bounded in size and JSON depth, crashes answered.

- A body above ``max_body`` bytes gets 413 (announced by Content-Length, or counted while it streams).
- A body nested deeper than ``max_depth`` arrays/objects gets 400 before anything parses it (the
  parsers and validators behind it recurse per level: see ``halswarm.core.jsonlimits``).
- An exception no handler took becomes a 500 ``INTERNAL_ERROR`` answer here, inside the server error
  middleware, so it is not re-raised to uvicorn, which would close the keep-alive connection after it.

Error answers are SPEC 6 envelopes ``{"error", "code"}``; SPEC 6 has no code for 413, so an oversized
body is ``BAD_REQUEST`` with HTTP status 413.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from halswarm.core.jsonlimits import MAX_JSON_DEPTH, too_deep

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Methods whose body the API reads; a GET/HEAD/OPTIONS body is left to the client's conscience.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class PayloadTooLarge(Exception):
    """The body grew past the limit while it was read."""


def envelope(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": message, "code": code}).encode()


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_body: int, max_depth: int = MAX_JSON_DEPTH,
                 on_internal: Callable[[], None] | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.max_depth = max_depth
        self.on_internal = on_internal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_length(scope)
        if refusal is None and scope.get("method") in _BODY_METHODS:
            try:
                body = await self._read_body(receive)
            except PayloadTooLarge:
                refusal = self._too_large()
            else:
                if too_deep(body, self.max_depth):
                    refusal = envelope(400, "BAD_REQUEST",
                                       f"request body: JSON nested deeper than {self.max_depth} levels")
                receive = _replay(body, receive)
        if refusal is not None:
            await _respond(send, *refusal)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # part of an answer is out: nothing to do but let the server drop the connection
                raise
            log.exception("internal error: %s", exc)
            if self.on_internal is not None:
                self.on_internal()
            await _respond(send, *envelope(500, "INTERNAL_ERROR", "internal error; see the supervisor log"))

    def _too_large(self) -> tuple[int, bytes]:
        return envelope(413, "BAD_REQUEST",
                        f"request body too large: the limit is {self.max_body} bytes (server.max_body_bytes)")

    def _check_length(self, scope: Scope) -> tuple[int, bytes] | None:
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0:
                    return envelope(400, "BAD_REQUEST", "invalid Content-Length")
                if length > self.max_body:
                    return self._too_large()
        return None

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away: the app sees an empty body
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body to the app once, then waits on the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
