"""Every error as `{"error", "code"}` with a SPEC 6 code, including framework errors and crashes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from halswarm.supervisor.apikit.envelope import ApiError, err
from halswarm.supervisor.http.guard import RequestGuard
from halswarm.supervisor.runtime.dispatcher import CommandError

log = logging.getLogger("halswarm.supervisor.api")

# Framework statuses -> SPEC 6 codes (405 and 404 have their own wording below).
CODE_BY_STATUS = {401: "AUTH_REQUIRED", 403: "FORBIDDEN", 409: "CONFLICT", 429: "RATE_LIMITED", 502: "DISPATCH_ERROR",
                  503: "SERVICE_UNAVAILABLE", 504: "TIMEOUT"}


def install_error_handling(app: FastAPI, max_body: int, on_internal: Callable[[], None] | None = None) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return err(exc.code, exc.message, exc.status)

    @app.exception_handler(CommandError)
    async def _command_error(_: Request, exc: CommandError) -> JSONResponse:
        mapped = ApiError(exc.code, exc.message)  # the command was not sent: bad type or target, no agent
        return err(mapped.code, mapped.message, mapped.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return err("BAD_REQUEST", f"method {request.method} is not allowed on {request.url.path}")
        if exc.status_code == 404:
            return err("NOT_FOUND", "not found")
        code = CODE_BY_STATUS.get(exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR")
        return err(code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
        return err("VALIDATION_ERROR", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error: %s", exc)
        if on_internal is not None:
            on_internal()
        return err("INTERNAL_ERROR", "internal error; see the supervisor log")

    app.add_middleware(RequestGuard, max_body=max_body, on_internal=on_internal)
