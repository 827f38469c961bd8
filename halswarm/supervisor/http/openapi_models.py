"""JSON Schemas of the ``data`` of the main success answers (nodes, sessions, health), for generated
clients. They describe ``Node.to_api``/``Session.to_api``; tests/unit/supervisor/test_openapi_routes.py
validates real objects against them so they cannot drift silently. Routes not listed keep ``data: {}``.
"""

from __future__ import annotations

from typing import Any

from halswarm.core.model import NODE_STATUSES, SESSION_STATUSES

_STR, _INT, _NUM = {"type": "string"}, {"type": "integer"}, {"type": "number"}
_OPT_STR = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "description": "ISO-8601 UTC"}

NODE = {
    "type": "object",
    "required": ["id", "hostname", "status", "version", "projects", "capabilities", "resources", "auth"],
    "properties": {
        "id": _STR, "hostname": _STR, "status": {"type": "string", "enum": list(NODE_STATUSES)}, "version": _STR,
        "projects": {"type": "array", "items": _STR},
        "project_directories": {"type": "object", "additionalProperties": _STR},
        "capabilities": {"type": "object"}, "resources": {"type": "object", "additionalProperties": _NUM},
        "last_heartbeat": _TIME, "connected_at": _TIME, "last_seq": _INT,
        "auth": {"type": "object", "additionalProperties": _STR},
        "credential_version": {"type": ["integer", "null"]},
        "sessions": {"type": "array", "items": _STR, "description": "only on GET /api/v1/nodes/{node_id}"},
    },
}
SESSION = {
    "type": "object",
    "required": ["id", "node_id", "project", "status", "tokens"],
    "properties": {
        "id": _STR, "node_id": _STR, "project": _STR, "status": {"type": "string", "enum": list(SESSION_STATUSES)},
        "model": _OPT_STR,
        "tokens": {"type": "object", "properties": {"input": _INT, "output": _INT, "total": _INT}},
        "compaction_count": _INT, "current_task": _OPT_STR, "cost_usd": _NUM, "error": _OPT_STR,
        "title": _OPT_STR, "started_at": _TIME, "last_activity": _TIME,
        "command_id": {"type": "string", "description": "on the answers of session commands"},
    },
}
_CURSOR = {"type": ["string", "null"], "description": "opaque; send it back as `after`/`before`"}
PAGE_META = {
    "type": "object",
    "description": "Paging of a list answer (docs/paging.md). `total` is exact while `total_is_estimate` is"
                   " false; beyond 10,000 matching rows it is 10,000 and `total_is_estimate` is true.",
    "required": ["total", "total_is_estimate", "limit", "offset", "next", "prev"],
    "properties": {
        "total": _INT, "total_is_estimate": {"type": "boolean"}, "limit": _INT, "offset": _INT,
        "next": _CURSOR | {"description": "rows follow this page: pass as `after` (null at the end)"},
        "prev": _CURSOR | {"description": "rows precede this page: pass as `before` (null at the start)"},
    },
}
HEALTH = {"type": "object", "required": ["status", "version"], "properties": {"status": _STR, "version": _STR}}
SCHEMAS: dict[str, dict[str, Any]] = {"Node": NODE, "Session": SESSION, "Health": HEALTH, "PageMeta": PAGE_META}

_REF = "#/components/schemas/"
# (METHOD, path) -> (schema name, whether `data` is a list of it)
DATA: dict[tuple[str, str], tuple[str, bool]] = {
    ("GET", "/api/v1/nodes"): ("Node", True),
    ("GET", "/api/v1/nodes/{node_id}"): ("Node", False),
    ("GET", "/api/v1/sessions"): ("Session", True),
    ("GET", "/api/v1/sessions/{session_id}"): ("Session", False),
    ("POST", "/api/v1/sessions"): ("Session", False),
}

# List routes paged by cursor, whose `meta` is a PageMeta.
PAGED: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/api/v1/nodes"), ("GET", "/api/v1/sessions"), ("GET", "/api/v1/events"), ("GET", "/api/v1/audit"),
})


def data_schema(name: str, many: bool) -> dict[str, Any]:
    ref = {"$ref": _REF + name}
    return {"type": "array", "items": ref} if many else ref
