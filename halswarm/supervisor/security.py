"""How the supervisor checks who connects, for agents (WebSocket) and operators (HTTP) alike: the bearer
header, constant-time token comparison, the throttle of repeated failures, the browser origin allowlist,
and the client's self-declared actor for the audit log.

Not the tool auth of agents (``features/tool_auth``) nor the operator identities and roles
(``core/roles``)."""

from __future__ import annotations

import hmac
import time
from collections import deque
from contextvars import ContextVar

# What the HTTP client said it is (`X-HAL-Actor`), set per request by the API's auth dependency and read
# when an audit row is built: recorded beside the authenticated actor, never instead of it.
CLIENT_ACTOR: ContextVar[str | None] = ContextVar("client_actor", default=None)


def token_matches(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class FailureThrottle:
    """Refuse a client address after `limit` failed authentications within `window` seconds."""

    def __init__(self, limit: int = 20, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._fails: dict[str, deque[float]] = {}

    def blocked(self, addr: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        q = self._fails.get(addr)
        if not q:
            return False
        while q and now - q[0] > self.window:
            q.popleft()
        if not q:
            del self._fails[addr]
            return False
        return len(q) >= self.limit

    def failed(self, addr: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        q = self._fails.setdefault(addr, deque())
        q.append(now)
        if len(self._fails) > 10_000:  # bound memory under a spray of addresses
            self._fails.pop(next(iter(self._fails)))

    def succeeded(self, addr: str) -> None:
        self._fails.pop(addr, None)


def origin_allowed(origin: str | None, patterns: list[str]) -> bool:
    """Browser origins must match the allowlist; clients that send no Origin (agents) are allowed."""
    if not patterns or origin is None:
        return True
    origin = origin.rstrip("/").lower()
    scheme, _, rest = origin.partition("://")
    host = rest.split(":")[0]
    for pat in patterns:
        p = pat.rstrip("/").lower()
        if p == "*" or p == origin:
            return True
        pscheme, _, prest = p.partition("://")
        if pscheme != scheme:
            continue
        phost, _, pport = prest.partition(":")
        if pport == "*" and phost == host:
            return True
        if phost.startswith("*.") and host.endswith(phost[1:]) and not host.startswith("*"):
            return True
    return False
