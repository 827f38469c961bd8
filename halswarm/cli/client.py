"""HTTP client for the supervisor API (SPEC 6): envelopes, typed errors, Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from halswarm.cli.errors import (
    AUTH_FAILED_MESSAGE,
    ApiAuthError,
    ApiNotFound,
    ApiUnreachable,
    SupervisorRefused,
)

__all__ = [
    "ApiAuthError",
    "ApiClient",
    "ApiNotFound",
    "ApiUnreachable",
    "Envelope",
    "SseEvent",
    "SupervisorRefused",
    "iter_sse",
    "path_id",
    "transport_factory",
]

API_PREFIX = "/api/v1"
STREAM_READ_TIMEOUT = 90.0  # seconds of silence (no event, no keepalive) before a stream counts as dropped


def _default_transport() -> httpx.BaseTransport | None:
    return None


# Test seam: replace with a callable returning e.g. an `httpx.MockTransport`.
transport_factory: Callable[[], httpx.BaseTransport | None] = _default_transport


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"halctl/{version('hal-o-swarm')}"
    except Exception:
        return "halctl"


ACTOR_HEADER = "X-HAL-Actor"  # the supervisor writes it into the audit log (SPEC 5: actor and outcome)
ACTOR_MAX = 100  # the supervisor keeps this many characters


def actor_header_value(actor: str) -> str:
    """The actor as a safe header value: printable ASCII (others escaped), at most ACTOR_MAX characters."""
    text = "".join(ch if ch.isprintable() else " " for ch in actor.strip())
    return text.encode("ascii", "backslashreplace").decode("ascii")[:ACTOR_MAX]


def path_id(value: str) -> str:
    """Quote an id for use as one path segment."""
    return quote(str(value), safe="")


@dataclass
class Envelope:
    """A decoded success body `{"data": ..., "meta": {...}}`."""

    data: Any
    meta: dict[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass
class SseEvent:
    """One Server-Sent Event."""

    data: str
    event: str = "message"
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def iter_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Parse SSE lines (without their line endings) into events, per the WHATWG algorithm.

    `:` comment lines (keepalives) are ignored; an event is dispatched on a blank line. A last event
    that the server did not terminate with a blank line before closing is still delivered.
    """
    data: list[str] = []
    event = ""
    last_id: str | None = None
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(data="\n".join(data), event=event or "message", id=last_id)
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        # `retry` and unknown fields are ignored
    if data:
        yield SseEvent(data="\n".join(data), event=event or "message", id=last_id)


def _error_fields(resp: httpx.Response) -> tuple[str, str]:
    """(message, code) from an error response, tolerating non-SPEC bodies."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip().splitlines()
        return (text[0][:200] if text else resp.reason_phrase or "error"), ""
    if isinstance(body, Mapping):
        message = body.get("error")
        if isinstance(message, Mapping):  # {"error": {"message":..., "code":...}}
            return str(message.get("message") or message), str(message.get("code") or body.get("code") or "")
        if message is None and "detail" in body:  # framework default error shape
            detail = body["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail)
        if message is not None:
            return str(message), str(body.get("code") or "")
    return (resp.reason_phrase or "error"), ""


class ApiClient:
    """Synchronous client for `/api/v1` with the Bearer token and SPEC 6 error mapping."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        actor: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.actor = actor_header_value(actor) if actor else None
        headers = {"Accept": "application/json", "User-Agent": _user_agent()}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.actor:
            headers[ACTOR_HEADER] = self.actor
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport if transport is not None else transport_factory(),
            follow_redirects=True,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public calls ----------------------------------------------------------------------------
    def get(self, path: str, params: Mapping[str, Any] | None = None, *, what: str | None = None) -> Envelope:
        return self._call("GET", API_PREFIX + path, params=params, what=what)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        what: str | None = None,
        timeout: float | None = None,
    ) -> Envelope:
        return self._call("POST", API_PREFIX + path, json_body=body if body is not None else {}, what=what,
                          timeout=timeout)

    def delete(self, path: str, *, what: str | None = None, timeout: float | None = None) -> Envelope:
        return self._call("DELETE", API_PREFIX + path, what=what, timeout=timeout)

    def get_plain(self, path: str, ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        """GET a path outside `/api/v1` (e.g. `/readyz`); statuses in `ok` return (status, json body)."""
        resp = self._send("GET", path)
        if resp.status_code in ok:
            try:
                return resp.status_code, resp.json()
            except ValueError:
                return resp.status_code, resp.text
        self._raise_for(resp, "GET", path, None)
        raise AssertionError("unreachable")  # pragma: no cover

    def stream(self, path: str, params: Mapping[str, Any] | None = None,
               last_event_id: str | None = None) -> Iterator[SseEvent]:
        """Open an SSE stream under `/api/v1` and yield its events until the server closes it
        (`last_event_id`: resume right after that event).

        A connection that cannot be made or that breaks mid-stream raises `ApiUnreachable`.
        """
        full = API_PREFIX + path
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT))
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            with self._http.stream("GET", full, params=_clean(params), headers=headers, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for(resp, "GET", full, None)
                yield from iter_sse(resp.iter_lines())
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    # -- internals -----------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        what: str | None = None,
        timeout: float | None = None,
    ) -> Envelope:
        resp = self._send(method, path, params=params, json_body=json_body, timeout=timeout)
        if resp.status_code >= 400:
            self._raise_for(resp, method, path, what)
        if not resp.content:
            return Envelope(data=None, status=resp.status_code)
        try:
            body = resp.json()
        except ValueError:
            raise SupervisorRefused(resp.status_code, "BAD_RESPONSE",
                                    f"{method} {path}: response is not JSON") from None
        if isinstance(body, dict) and "data" in body:
            meta = body.get("meta")
            return Envelope(data=body["data"], meta=meta if isinstance(meta, dict) else {}, status=resp.status_code)
        return Envelope(data=body, status=resp.status_code)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {"params": _clean(params)}
        if json_body is not None:
            kwargs["json"] = json_body
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout)
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: httpx.TransportError) -> ApiUnreachable:
        if isinstance(exc, httpx.TimeoutException):
            return ApiUnreachable(f"cannot reach supervisor at {self.base_url}: timed out ({type(exc).__name__})")
        reason = str(exc) or type(exc).__name__
        return ApiUnreachable(f"cannot reach supervisor at {self.base_url}: {reason}")

    def _raise_for(self, resp: httpx.Response, method: str, path: str, what: str | None) -> None:
        status = resp.status_code
        if status in (401, 403):
            raise ApiAuthError(AUTH_FAILED_MESSAGE, status=status)
        message, code = _error_fields(resp)
        if status == 426 or "websocket" in message.lower():
            raise SupervisorRefused(status, code or "WRONG_PORT",
                           f"{self.base_url} is the agents' WebSocket port, not the HTTP API; use the API port "
                           "(server.http_port, default 8421)")
        if status == 404:
            err = ApiNotFound(status, code or "NOT_FOUND", message)
            if what:
                err.message = f"not found: {what}"
            elif message.strip().lower() in ("", "not found"):
                err.message = f"not found: {method} {path}"
            else:
                err.message = f"not found: {message}"
            raise err
        raise SupervisorRefused(status, code, message)


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Drop unset query parameters; booleans become `true`/`false`."""
    if not params:
        return None
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or value == "":
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out or None
