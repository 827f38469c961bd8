"""JSON Schemas of the success answers, for generated clients, and which route answers which.

``NODE``/``SESSION`` describe ``Node.to_api``/``Session.to_api``; the feature answers are in
``openapi_feature_models``. Every JSON route of ``openapi_routes.ROUTES`` is in ``DATA`` (the ``data`` of its
SPEC 6 envelope) or ``BARE`` (a body without the envelope); the other routes are in
``openapi_doc.MEDIA_TYPES``. tests/unit/supervisor/test_openapi_models.py validates real objects against
the schemas and fails on a route without one; tests/integration/test_openapi_doc.py validates real answers.
"""

from __future__ import annotations

from typing import Any

from halswarm.core.model import NODE_STATUSES, SESSION_STATUSES
from halswarm.supervisor.http.openapi_feature_models import FEATURE_SCHEMAS

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
# Discord's interaction response (docs/chatops.md): 1 PONG, 4 a message now, 5 deferred (completed later).
DISCORD_RESPONSE = {"type": "object", "required": ["type"],
                    "properties": {"type": {"type": "integer", "enum": [1, 4, 5]}, "data": {"type": "object"}}}
# Slack's answer to a slash command (docs/chatops.md): a message now (Block Kit), or an acknowledgement.
SLACK_MESSAGE = {"type": "object", "required": ["response_type", "text"],
                 "properties": {"response_type": {"type": "string", "enum": ["in_channel", "ephemeral"]},
                                "text": {"type": "string"}, "blocks": {"type": "array", "items": {"type": "object"}}}}
SCHEMAS: dict[str, dict[str, Any]] = {"Node": NODE, "Session": SESSION, "Health": HEALTH, "PageMeta": PAGE_META,
                                      "DiscordInteractionResponse": DISCORD_RESPONSE, "SlackMessage": SLACK_MESSAGE,
                                      **FEATURE_SCHEMAS}

_REF = "#/components/schemas/"
V1 = "/api/v1"
# (METHOD, path) -> (schema name, whether `data` is a list of it), for every JSON route in the envelope.
DATA: dict[tuple[str, str], tuple[str, bool]] = {
    ("GET", f"{V1}/nodes"): ("Node", True),
    ("GET", f"{V1}/nodes/{{node_id}}"): ("Node", False),
    ("GET", f"{V1}/nodes/{{node_id}}/auth"): ("NodeAuth", False),
    ("GET", f"{V1}/sessions"): ("Session", True),
    ("GET", f"{V1}/sessions/{{session_id}}"): ("Session", False),
    ("POST", f"{V1}/sessions"): ("Session", False),
    ("POST", f"{V1}/sessions/{{session_id}}/prompt"): ("CommandResult", False),
    ("POST", f"{V1}/sessions/{{session_id}}/resume"): ("CommandResult", False),
    ("POST", f"{V1}/sessions/{{session_id}}/restart"): ("CommandResult", False),
    ("POST", f"{V1}/sessions/{{session_id}}/handover"): ("CommandResult", False),
    ("DELETE", f"{V1}/sessions/{{session_id}}"): ("CommandResult", False),
    ("GET", f"{V1}/events"): ("Event", True),
    ("POST", f"{V1}/commands"): ("CommandResult", False),
    ("GET", f"{V1}/commands/{{command_id}}"): ("CommandRecord", False),
    ("GET", f"{V1}/audit"): ("AuditEntry", True),
    ("GET", f"{V1}/cost"): ("CostReport", False),
    ("GET", f"{V1}/cost/{{period}}"): ("CostReport", False),
    ("GET", f"{V1}/cost/status"): ("CostHealth", False),
    ("POST", f"{V1}/cost/refresh"): ("CostRefresh", False),
    ("GET", f"{V1}/policies"): ("Policies", False),
    ("GET", f"{V1}/dependencies"): ("Dependencies", False),
    ("GET", f"{V1}/auth/drift"): ("CredentialDrift", True),
    ("POST", f"{V1}/oauth/trigger"): ("OAuthResult", False),
    ("POST", f"{V1}/commands/credentials/push"): ("CredentialPush", False),
    ("GET", f"{V1}/env/manifest"): ("EnvManifest", False),
    ("PUT", f"{V1}/env/manifest"): ("EnvManifestStored", False),
    ("GET", f"{V1}/env/status"): ("EnvStatusRow", True),
    ("GET", f"{V1}/env/status/{{node_id}}"): ("EnvNodeStatus", False),
    ("GET", f"{V1}/env/drift"): ("EnvDriftRow", True),
    ("POST", f"{V1}/env/check/{{node_id}}"): ("EnvCheck", False),
    ("POST", f"{V1}/env/provision/{{node_id}}"): ("EnvProvision", False),
    ("POST", f"{V1}/env/approve/{{node_id}}"): ("EnvApproval", False),
    ("GET", f"{V1}/agent-md/{{project}}"): ("AgentMd", False),
    ("GET", f"{V1}/agent-md/{{project}}/diff"): ("AgentMd", False),
    ("GET", f"{V1}/agent-md/{{project}}/template"): ("AgentMdTemplate", False),
    ("POST", f"{V1}/agent-md/sync"): ("AgentMdSync", True),
    ("GET", f"{V1}/remediations"): ("Remediation", True),
    ("POST", f"{V1}/remediations"): ("Remediation", False),
    ("POST", f"{V1}/alerts"): ("AlertsReceived", False),
    ("GET", f"{V1}/approvals"): ("Approval", True),
    ("POST", f"{V1}/approvals/{{approval_id}}"): ("Approval", False),
}
# A status whose `data` differs from the route's other successes.
DATA_BY_STATUS: dict[tuple[str, str, str], tuple[str, bool]] = {
    ("POST", f"{V1}/commands", "202"): ("CommandAccepted", False),
}
# The `meta` of routes that fill it (the others answer `meta: {}`). Cursor-paged lists have a PageMeta.
META: dict[tuple[str, str], str] = {
    **{key: "PageMeta" for key in (("GET", f"{V1}/nodes"), ("GET", f"{V1}/sessions"), ("GET", f"{V1}/events"),
                                   ("GET", f"{V1}/audit"), ("GET", f"{V1}/approvals"))},
    ("GET", f"{V1}/remediations"): "OffsetMeta",
    ("GET", f"{V1}/cost"): "CostMeta", ("GET", f"{V1}/cost/{{period}}"): "CostMeta",
    ("GET", f"{V1}/auth/drift"): "CredentialDriftMeta",
    ("POST", f"{V1}/commands/credentials/push"): "CredentialPushMeta",
    ("GET", f"{V1}/env/manifest"): "EnvManifestMeta",
    ("GET", f"{V1}/env/status"): "EnvStatusMeta",
    ("GET", f"{V1}/env/drift"): "EnvDriftMeta",
    ("POST", f"{V1}/agent-md/sync"): "AgentMdSyncMeta",
}
# JSON routes that answer without the envelope: (METHOD, path) -> schema name.
BARE: dict[tuple[str, str], str] = {("GET", "/healthz"): "Health", ("GET", "/readyz"): "Readiness",
                                    ("POST", f"{V1}/chat/discord/interactions"): "DiscordInteractionResponse",
                                    ("POST", f"{V1}/chat/slack/commands"): "SlackMessage"}
# Routes whose success answer has no body (Slack's acknowledgement of a button press).
EMPTY: frozenset[tuple[str, str]] = frozenset({("POST", f"{V1}/chat/slack/interactions")})


def data_schema(name: str, many: bool) -> dict[str, Any]:
    ref = {"$ref": _REF + name}
    return {"type": "array", "items": ref} if many else ref


def envelope_schema(key: tuple[str, str], status: str, envelope_ref: str) -> dict[str, Any] | None:
    """The typed SPEC 6 envelope of one success answer, or None when the route has no ``DATA`` row."""
    data = DATA_BY_STATUS.get((*key, status)) or DATA.get(key)
    if data is None:
        return None
    props: dict[str, Any] = {"data": data_schema(*data)}
    if key in META:
        props["meta"] = {"$ref": _REF + META[key]}
    return {"allOf": [{"$ref": envelope_ref}, {"properties": props}]}
