"""The OpenAPI document tells the answers the API really gives (SPEC 6), so clients and fuzzers can check them.

FastAPI documents a 422 the API never sends (validation errors are 400 envelopes) and nothing of the
error answers. ``describe_answers`` rewrites the generated document: every operation lists the SPEC 6
error statuses it can answer (``openapi_routes``) with the ``{"error", "code"}`` envelope schema,
``/api/v1`` successes the ``{"data", "meta"}`` envelope, and the non-JSON routes their real media type.
Every operation gets a summary, a description and a tag; every ``/api/v1`` one the bearer scheme, so
Swagger UI offers "Authorize" and generated clients send the token.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

from halswarm.supervisor.http.openapi_models import BARE, EMPTY, SCHEMAS, envelope_schema
from halswarm.supervisor.http.openapi_routes import ROUTES, error_statuses

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
BEARER = "bearerAuth"
MEDIA_TYPES = {"/metrics": "text/plain", "/api/v1/events/stream": "text/event-stream"}


class RouteShape(NamedTuple):
    """What the app's route itself tells of one operation."""

    tag: str
    authenticated: bool
    has_params: bool
    has_path_ids: bool


def api_routes(app: Any) -> list[Any]:
    """The app's operations, each with ``path``, ``methods``, ``tags`` and ``dependant`` (the router's own
    dependencies included). FastAPI >= 0.16x keeps included routers as branches (``iter_route_contexts``
    flattens them); older versions copy each route into ``app.routes``."""
    from fastapi import routing

    if hasattr(routing, "iter_route_contexts"):
        return [c for c in routing.iter_route_contexts(app.routes) if getattr(c, "dependant", None) is not None]
    return [r for r in app.routes if isinstance(r, routing.APIRoute)]


def route_shapes(app: Any) -> dict[tuple[str, str], RouteShape]:
    """(METHOD, path) -> shape of every API route, read from FastAPI's dependants (auth = a dependency
    made by ``auth_dependency``, which carries a ``role``)."""
    shapes = {}
    for route in api_routes(app):
        dep = route.dependant
        authenticated = any(hasattr(d.call, "role") for d in dep.dependencies)
        params = bool(dep.path_params or dep.query_params or dep.body_params or dep.header_params)
        tag = str(route.tags[0]) if route.tags else "other"
        for method in route.methods or ():
            shapes[(method, route.path)] = RouteShape(tag, authenticated, params, bool(dep.path_params))
    return shapes


def describe_answers(doc: dict[str, Any], codes: list[str],
                     shapes: dict[tuple[str, str], RouteShape] | None = None) -> dict[str, Any]:
    """A copy of the generated ``doc`` with the real answers of every operation (see the module doc).
    Without ``shapes`` every operation lists every error status."""
    doc = copy.deepcopy(doc)
    doc.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = {
        "type": "http", "scheme": "bearer",
        "description": "An operator's API token, sent as Authorization: Bearer <token>."}
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = {
        "type": "object", "required": ["error", "code"],
        "properties": {"error": {"type": "string"}, "code": {"type": "string", "enum": sorted(codes)}},
    }
    schemas[SUCCESS_SCHEMA] = {"type": "object", "required": ["data", "meta"],
                               "properties": {"data": {}, "meta": {"type": "object"}}}
    schemas.update(copy.deepcopy(SCHEMAS))
    error_ref = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}
    success_ref = {"application/json": {"schema": {"$ref": f"#/components/schemas/{SUCCESS_SCHEMA}"}}}
    for path, item in (doc.get("paths") or {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            key = (method.upper(), path)
            statuses = set(ERROR_STATUSES)
            if shapes is not None and key in shapes:
                shape = shapes[key]
                row = ROUTES.get(key)
                statuses = error_statuses(key[0], authenticated=shape.authenticated, has_params=shape.has_params,
                                          has_path_ids=shape.has_path_ids,
                                          extra=row.extra if row else frozenset(ERROR_STATUSES))
                op["tags"] = [shape.tag]
                if shape.authenticated:
                    op["security"] = [{BEARER: []}]
                if row is not None:
                    op["summary"], op["description"] = row.summary, row.description
            responses = op["responses"]
            responses.pop("422", None)
            for status in sorted(statuses):
                responses.setdefault(status, {"description": ERROR_STATUSES[status], "content": error_ref})
            for status, answer in responses.items():
                if not status.startswith("2"):
                    continue
                typed = envelope_schema(key, status, f"#/components/schemas/{SUCCESS_SCHEMA}")
                if path in MEDIA_TYPES:
                    answer["content"] = {MEDIA_TYPES[path]: {"schema": {"type": "string"}}}
                elif typed is not None:
                    answer["content"] = {"application/json": {"schema": typed}}
                elif key in EMPTY:
                    answer.pop("content", None)
                elif key in BARE:
                    answer["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{BARE[key]}"}}}
                elif path.startswith("/api/v1/"):
                    answer["content"] = success_ref
    return doc


def install_openapi(app: Any, codes: list[str]) -> None:
    """Serve ``describe_answers`` of the generated document at the app's OpenAPI URL (computed once, at
    the first request for it: reading every route's shape builds FastAPI's route contexts of all routers,
    a quarter of a second at start that readiness need not wait for)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    described: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal described
        if described is None:
            described = describe_answers(generate(), codes, route_shapes(app))
        return described

    app.openapi = openapi
