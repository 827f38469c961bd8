"""Async client for the classic opencode HTTP API (``opencode serve``), as recorded in peers.md section 2.

Every call has a timeout.  Errors become :class:`OpencodeError` subclasses carrying the HTTP status,
opencode's error ``name`` and its ``data.message``.  Auth is HTTP Basic ``opencode:<password>`` when the
server runs with ``OPENCODE_SERVER_PASSWORD``.

Beware of opencode's SPA fallback: an unknown GET route answers ``200 text/html``.  Responses that
should be JSON are therefore checked for a JSON content type (:class:`OpencodeProtocolError`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx

DEFAULT_TIMEOUT = 10.0
DEFAULT_USERNAME = "opencode"


class OpencodeError(Exception):
    """An opencode API call failed.

    ``status`` is the HTTP status (None when no response arrived), ``name`` opencode's error name
    (``NotFoundError``, ``BadRequest``, ``UnknownError``...), ``message`` its ``data.message``.
    """

    def __init__(self, message: str, *, status: int | None = None, name: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.name = name
        self.body = body

    def __str__(self) -> str:
        parts = [f"HTTP {self.status}" if self.status is not None else None, self.name, self.message]
        return ": ".join(p for p in parts if p)


class OpencodeUnavailable(OpencodeError):
    """No answer: connection refused/reset or the server is not running."""


class OpencodeTimeout(OpencodeUnavailable):
    """The call did not finish within its timeout."""


class OpencodeAuthError(OpencodeError):
    """401: missing or wrong server password."""


class OpencodeNotFound(OpencodeError):
    """404, e.g. ``Session not found: ses_...``."""


class OpencodeBadRequest(OpencodeError):
    """400, e.g. a payload that fails opencode's schema."""


class OpencodeServerError(OpencodeError):
    """5xx."""


class OpencodeProtocolError(OpencodeError):
    """A 2xx answer that is not what the API documents (e.g. the HTML fallback page)."""


def split_model(model: str) -> tuple[str, str]:
    """``"provider/model"`` -> ``(providerID, modelID)``; the model part may itself contain ``/``."""
    provider, sep, model_id = model.partition("/")
    if not sep or not provider or not model_id:
        raise ValueError(f"model must look like 'provider/model', got {model!r}")
    return provider, model_id


def _error_for(resp: httpx.Response, what: str) -> OpencodeError:
    body: Any = None
    name: str | None = None
    message: str | None = None
    try:
        body = resp.json()
    except ValueError:
        body = resp.text[:500]
    if isinstance(body, dict):
        name = body.get("name") if isinstance(body.get("name"), str) else None
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            message = data["message"]
        elif isinstance(body.get("message"), str):
            message = body["message"]
    status = resp.status_code
    message = message or (f"{what}: HTTP {status} {resp.reason_phrase}".strip())
    cls: type[OpencodeError]
    if status == 401:
        cls = OpencodeAuthError
    elif status == 404:
        cls = OpencodeNotFound
    elif status == 400:
        cls = OpencodeBadRequest
    elif status >= 500:
        cls = OpencodeServerError
    else:
        cls = OpencodeError
    return cls(message, status=status, name=name, body=body)


class OpencodeClient:
    """Thin async wrapper over the routes the agent needs.  Use as ``async with OpencodeClient(...)``."""

    def __init__(
        self,
        base_url: str,
        *,
        password: str | None = None,
        username: str = DEFAULT_USERNAME,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=httpx.BasicAuth(username, password) if password else None,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self._experimental_list: bool | None = None  # does /experimental/session exist?

    async def __aenter__(self) -> OpencodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------------
    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        request_timeout: float | None = None,
        expect_json: bool = True,
        decode: Callable[[bytes], Any] | None = None,
    ) -> Any:
        """One API call; the JSON body parsed, or ``decode(raw body)`` when given (big bodies)."""
        what = f"{method} {path}"
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = await self._http.request(
                method,
                path,
                params=clean or None,
                json=json_body,
                timeout=httpx.Timeout(request_timeout if request_timeout is not None else self.timeout),
            )
        except httpx.TimeoutException as exc:
            raise OpencodeTimeout(f"{what}: timed out ({type(exc).__name__})") from exc
        except (httpx.TransportError, OSError) as exc:
            raise OpencodeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise _error_for(resp, what)
        if not expect_json or resp.status_code == 204 or not resp.content:
            return None
        ctype = resp.headers.get("content-type", "")
        if "json" not in ctype:
            raise OpencodeProtocolError(
                f"{what}: expected JSON, got {ctype or 'no content-type'}", status=resp.status_code
            )
        try:
            return decode(resp.content) if decode is not None else resp.json()
        except (ValueError, json.JSONDecodeError) as exc:
            raise OpencodeProtocolError(f"{what}: invalid JSON", status=resp.status_code) from exc

    # -- server ----------------------------------------------------------------------------------
    async def health(self, *, request_timeout: float | None = None) -> dict[str, Any]:
        """``GET /global/health`` -> ``{"healthy": true, "version": "1.18.33"}``."""
        return await self._request("GET", "/global/health", request_timeout=request_timeout)

    async def openapi(self) -> dict[str, Any]:
        """``GET /doc``: the server's OpenAPI document (for route drift checks)."""
        return await self._request("GET", "/doc", request_timeout=max(self.timeout, 30.0))

    # -- sessions --------------------------------------------------------------------------------
    async def create_session(
        self, directory: str, title: str | None = None, model: str | None = None
    ) -> dict[str, Any]:
        """``POST /session?directory=``.  opencode accepts any directory (even a missing one): the
        caller validates it.  ``model`` ("provider/model") becomes the session's default model."""
        body: dict[str, Any] = {}
        if title:
            body["title"] = title
        if model:
            provider, model_id = split_model(model)
            body["model"] = {"providerID": provider, "id": model_id}  # Session.model uses "id"
        return await self._request("POST", "/session", params={"directory": directory}, json_body=body)

    async def get_session(self, session_id: str, *, directory: str | None = None) -> dict[str, Any]:
        return await self._request("GET", f"/session/{session_id}", params={"directory": directory})

    async def list_sessions(self, directories: list[str] | None = None) -> list[dict[str, Any]]:
        """All sessions across projects.

        Uses ``GET /experimental/session`` (all projects) when the server has it; otherwise
        ``GET /session?directory=`` for each of ``directories`` (plus the server's default project).
        """
        if self._experimental_list is not False:
            try:
                result = await self._request("GET", "/experimental/session")
                if isinstance(result, list):
                    self._experimental_list = True
                    return result
                self._experimental_list = False
            except (OpencodeProtocolError, OpencodeNotFound):
                self._experimental_list = False
        seen: dict[str, dict[str, Any]] = {}
        for directory in [None, *(directories or [])]:
            for sess in await self._request("GET", "/session", params={"directory": directory}) or []:
                if isinstance(sess, dict) and isinstance(sess.get("id"), str):
                    seen.setdefault(sess["id"], sess)
        return list(seen.values())

    async def session_status_map(self, *, directory: str | None = None) -> dict[str, dict[str, Any]]:
        """``GET /session/status`` -> ``{session_id: {"type": "busy"|"idle"|"retry", ...}}`` (idle ones
        are usually absent)."""
        result = await self._request("GET", "/session/status", params={"directory": directory})
        return result if isinstance(result, dict) else {}

    async def prompt_async(
        self,
        session_id: str,
        text: str,
        *,
        model: str | None = None,
        directory: str | None = None,
        agent: str | None = None,
    ) -> None:
        """``POST /session/{id}/prompt_async`` (204): starts a turn and returns at once; progress and
        errors (e.g. unknown model) arrive as events."""
        body: dict[str, Any] = {"parts": [{"type": "text", "text": text}]}
        if model:
            provider, model_id = split_model(model)
            body["model"] = {"providerID": provider, "modelID": model_id}
        if agent:
            body["agent"] = agent
        await self._request(
            "POST",
            f"/session/{session_id}/prompt_async",
            params={"directory": directory},
            json_body=body,
            expect_json=False,
        )

    async def abort(self, session_id: str, *, directory: str | None = None) -> bool:
        """``POST /session/{id}/abort``; true even for idle or unknown sessions (idempotent)."""
        return bool(await self._request("POST", f"/session/{session_id}/abort", params={"directory": directory}))

    async def delete_session(self, session_id: str, *, directory: str | None = None) -> bool:
        """``DELETE /session/{id}``; a second delete raises :class:`OpencodeNotFound`."""
        return bool(await self._request("DELETE", f"/session/{session_id}", params={"directory": directory}))

    delete = delete_session

    async def messages(
        self, session_id: str, *, directory: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """``GET /session/{id}/message`` -> ``[{"info": {...}, "parts": [...]}, ...]``."""
        result = await self._request(
            "GET", f"/session/{session_id}/message", params={"directory": directory, "limit": limit}
        )
        return result if isinstance(result, list) else []

    # -- permissions -----------------------------------------------------------------------------
    async def list_permissions(self, *, directory: str | None = None) -> list[dict[str, Any]]:
        """``GET /permission``: pending permission requests of one instance (directory)."""
        result = await self._request("GET", "/permission", params={"directory": directory})
        return result if isinstance(result, list) else []

    async def reply_permission(
        self, request_id: str, reply: str, *, message: str | None = None, directory: str | None = None
    ) -> bool:
        """``POST /permission/{id}/reply`` with ``once`` | ``always`` | ``reject``."""
        if reply not in ("once", "always", "reject"):
            raise ValueError(f"reply must be once|always|reject, got {reply!r}")
        body: dict[str, Any] = {"reply": reply}
        if message:
            body["message"] = message
        return bool(
            await self._request(
                "POST", f"/permission/{request_id}/reply", params={"directory": directory}, json_body=body
            )
        )
