"""The SPEC 6 answer shapes: ``{"data", "meta"}`` on success, ``{"error", "code"}`` on failure."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

# Exactly the codes of SPEC 6; nothing else goes on the wire.
STATUS_BY_CODE = {
    "AUTH_REQUIRED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404, "BAD_REQUEST": 400, "VALIDATION_ERROR": 400,
    "CONFLICT": 409, "RATE_LIMITED": 429, "INTERNAL_ERROR": 500, "SERVICE_UNAVAILABLE": 503,
    "DISPATCH_ERROR": 502, "TIMEOUT": 504,
}
# Codes some services raise, folded into the SPEC list.
CODE_ALIASES = {"PAYLOAD_TOO_LARGE": "BAD_REQUEST"}
# SPEC 6 has no code for 413: an oversized body is BAD_REQUEST with the HTTP status that says why.
STATUS_OVERRIDES = {"PAYLOAD_TOO_LARGE": 413}


class ApiError(Exception):
    """An answer other than success; the handlers installed by ``supervisor/http`` render it."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        override = STATUS_OVERRIDES.get(code)
        code = CODE_ALIASES.get(code, code)
        self.code = code if code in STATUS_BY_CODE else "INTERNAL_ERROR"
        self.message = message
        # `status` is kept for callers; the code decides (SPEC 6), but for a body too large (413)
        self.status = override or STATUS_BY_CODE[self.code]


def ok(data: Any, status: int = 200, meta: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"data": data, "meta": meta or {}}
    return JSONResponse(body, status_code=status)


def page_meta(total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"total": total, "limit": limit, "offset": offset}


def err(code: str, message: str, status: int | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status or STATUS_BY_CODE[code])
