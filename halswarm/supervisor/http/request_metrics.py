"""Request duration per route template (`/api/v1/nodes/{node_id}`, never the raw path), method and status
class: label values come only from the app's own routes and fixed sets, so a client cannot add series."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # no route (404s of any path): one series, whatever the path


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def route_label(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class RequestMetrics:
    """Observes the time from the request to its response status line (a stream such as the SSE event
    feed counts until its headers are sent, not for its whole life)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method = scope.get("method", "")
        method = method if method in METHODS else "other"
        observed = False

        async def timed_send(message: Message) -> None:
            nonlocal observed
            if message["type"] == "http.response.start" and not observed:
                observed = True
                self.histogram.labels(route_label(scope), method, status_class(int(message["status"]))).observe(
                    time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not observed:  # no response at all (client gone, server error before headers)
                self.histogram.labels(route_label(scope), method, "other").observe(time.perf_counter() - start)
