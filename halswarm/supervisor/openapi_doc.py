"""The OpenAPI document tells the answers the API really gives (SPEC 6), so clients and fuzzers can check them.

FastAPI documents a 422 the API never sends (validation errors are 400 envelopes) and nothing of the
error answers. ``describe_answers`` rewrites the generated document: every operation lists the SPEC 6
error statuses with the ``{"error", "code"}`` envelope schema, ``/api/v1`` successes the
``{"data", "meta"}`` envelope, and the non-JSON routes their real media type.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

ERROR_SCHEMA = "ErrorEnvelope"
SUCCESS_SCHEMA = "SuccessEnvelope"

# 413 is BAD_REQUEST with HTTP status 413 (SPEC 6 has no code of its own for it).
ERROR_STATUSES = {
    "400": "Bad request or validation error (BAD_REQUEST, VALIDATION_ERROR)",
    "401": "Missing or invalid bearer token (AUTH_REQUIRED)",
    "403": "Not allowed (FORBIDDEN)",
    "404": "Not found (NOT_FOUND)",
    "409": "Conflict (CONFLICT)",
    "413": "Request body too large (BAD_REQUEST)",
    "429": "Too many failed authentications (RATE_LIMITED)",
    "500": "Internal error (INTERNAL_ERROR)",
    "502": "The agent failed the command (DISPATCH_ERROR)",
    "503": "Not ready (SERVICE_UNAVAILABLE)",
    "504": "The command timed out (TIMEOUT)",
}
MEDIA_TYPES = {"/metrics": "text/plain", "/api/v1/events/stream": "text/event-stream"}


def describe_answers(doc: dict[str, Any], codes: list[str]) -> dict[str, Any]:
    """A copy of the generated ``doc`` with the real answers of every operation (see the module doc)."""
    doc = copy.deepcopy(doc)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = {
        "type": "object", "required": ["error", "code"],
        "properties": {"error": {"type": "string"}, "code": {"type": "string", "enum": sorted(codes)}},
    }
    schemas[SUCCESS_SCHEMA] = {"type": "object", "required": ["data", "meta"],
                               "properties": {"data": {}, "meta": {"type": "object"}}}
    error_ref = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}
    success_ref = {"application/json": {"schema": {"$ref": f"#/components/schemas/{SUCCESS_SCHEMA}"}}}
    for path, item in (doc.get("paths") or {}).items():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            responses.pop("422", None)
            for status, text in ERROR_STATUSES.items():
                responses.setdefault(status, {"description": text, "content": error_ref})
            for status, answer in responses.items():
                if not status.startswith("2"):
                    continue
                if path in MEDIA_TYPES:
                    answer["content"] = {MEDIA_TYPES[path]: {"schema": {"type": "string"}}}
                elif path.startswith("/api/v1/"):
                    answer["content"] = success_ref
    return doc


def install_openapi(app: Any, codes: list[str]) -> None:
    """Serve ``describe_answers`` of the generated document at the app's OpenAPI URL (computed once)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    described: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal described
        if described is None:
            described = describe_answers(generate(), codes)
        return described

    app.openapi = openapi
