"""A fake supervisor API speaking SPEC 6 for halctl tests (an `httpx.MockTransport` handler)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

TOKEN = "test-operator-token-0123456789abcdef"
URL = "http://sup.test:8421"

Handler = Callable[[httpx.Request], httpx.Response]


def ok(data: Any, status: int = 200, meta: dict[str, Any] | None = None) -> httpx.Response:
    """A SPEC 6 success body."""
    if meta is None:
        meta = {"total": len(data), "limit": 100, "offset": 0} if isinstance(data, list) else {}
    return httpx.Response(status, json={"data": data, "meta": meta})


def err(status: int, code: str, message: str) -> httpx.Response:
    """A SPEC 6 error body."""
    return httpx.Response(status, json={"error": message, "code": code})


class FakeSupervisor:
    """Routes (method, path) to handlers; enforces the Bearer token on /api/v1 like the real API."""

    def __init__(self) -> None:
        self.token = TOKEN
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[httpx.Request] = []

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def reply(self, method: str, path: str, data: Any, status: int = 200,
              meta: dict[str, Any] | None = None) -> None:
        self.routes[(method, path)] = lambda _req: ok(data, status, meta)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.startswith("/api/v1/") and request.headers.get("authorization") != f"Bearer {self.token}":
            return err(401, "AUTH_REQUIRED", "missing or invalid token")
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return err(404, "NOT_FOUND", f"no route {request.method} {request.url.path}")
        return handler(request)

    def last(self, path: str | None = None) -> httpx.Request:
        matching = [r for r in self.requests if path is None or r.url.path == path]
        assert matching, f"no request to {path}"
        return matching[-1]

    @staticmethod
    def body(request: httpx.Request) -> Any:
        return json.loads(request.content) if request.content else None


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)
