"""JSON Schemas of the ``data`` (and ``meta``) the feature routes answer besides nodes and sessions: events,
commands, audit, cost, policies, dependencies, tool auth, env, AGENT.md, remediations, alerts and ``/readyz``.

Each mirrors the dict its service builds (named in its description); ``required`` lists the keys that
service always sets, so a renamed or dropped key fails tests/unit/supervisor/test_openapi_models.py (real
objects) and tests/integration/test_openapi_doc.py (real answers). Keys a service adds are allowed (a
client must ignore what it does not know), values are typed.
"""

from __future__ import annotations

from typing import Any

from halswarm.core.manifest.requirements import GO, SPEC
from halswarm.core.remediation.report import STATUSES as REMEDIATION_STATUSES

_STR, _INT, _NUM, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
_OPT_STR, _OPT_INT, _OPT_NUM = {"type": ["string", "null"]}, {"type": ["integer", "null"]}, {"type": ["number", "null"]}
_TIME = {"type": ["string", "null"], "description": "ISO-8601 UTC"}
_OBJ, _OPT_OBJ = {"type": "object"}, {"type": ["object", "null"]}
_STRS = {"type": "array", "items": _STR}
_ANY: dict[str, Any] = {"description": "any JSON value"}


def obj(description: str, props: dict[str, Any], required: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An object schema; every property is required unless ``required`` names a subset."""
    return {"type": "object", "description": description, "properties": props,
            "required": list(props if required is None else required)}


def arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


EVENT = obj("A stored event (store/repos/events row, SPEC 7).", {
    "id": _INT, "node_id": _OPT_STR, "seq": _OPT_INT, "event_id": _OPT_STR, "session_id": _OPT_STR,
    "project": _OPT_STR, "type": _STR, "data": _ANY, "timestamp": _TIME})
AUDIT_ENTRY = obj("One audit record: who did what to what, and how it ended.", {
    "id": _INT, "timestamp": _TIME, "actor": _STR, "client_actor": _OPT_STR, "action": _STR,
    "target": _OPT_STR, "args": _ANY, "result": _OPT_STR, "error": _OPT_STR, "duration_ms": _OPT_INT,
    "ip_address": _OPT_STR, "command_id": _OPT_STR})
COMMAND_RESULT = obj("A command's outcome (dispatcher Result.to_api); `{command_id, status: pending}` when "
                     "`wait` is false.", {
                         "command_id": _STR, "type": _STR, "status": _STR, "output": _ANY, "error": _OPT_STR,
                         "node_id": _OPT_STR, "duration_ms": _INT,
                         "idempotent_replay": _BOOL | {"description": "only when an idempotency key replayed"}},
                     required=("command_id", "type", "status", "output", "error", "node_id", "duration_ms"))
COMMAND_ACCEPTED = obj("A command started in the background (`wait: false`).",
                       {"command_id": _STR, "status": {"type": "string", "enum": ["pending"]}})
COMMAND_RECORD = obj("A stored command (commands table).", {
    "command_id": _STR, "type": _STR, "target": _ANY, "args": _ANY, "node_id": _OPT_STR, "status": _STR,
    "output": _ANY, "error": _OPT_STR, "actor": _OPT_STR, "created_at": _TIME, "finished_at": _TIME})

_COST_ROW = {"type": "object", "required": ["tokens", "cost_usd"],
             "properties": {"provider": _STR, "model": _STR, "project": _STR, "tokens": _INT, "cost_usd": _NUM}}
COST_REPORT = obj("Spend of a period (cost/report.py build_report).", {
    "period": _STR, "total_tokens": _INT, "total_cost_usd": _NUM, "daily_average_usd": _NUM,
    "by_provider": arr(_COST_ROW), "by_model": arr(_COST_ROW), "by_project": arr(_COST_ROW),
    "degraded_providers": _STRS})
_PROVIDER_STATE = obj("A cost provider's poll state.", {
    "degraded": _BOOL, "reason": _OPT_STR, "degraded_since": _TIME, "last_success": _TIME, "last_attempt": _TIME})
COST_META = obj("Each enabled provider's poll state.", {"providers": {
    "type": "object", "additionalProperties": {"$ref": "#/components/schemas/CostProviderState"}}})
COST_HEALTH = obj("The cost aggregator's health (aggregator.health).", {
    "running": _BOOL, "poll_interval_s": _NUM, "providers_configured": _STRS, "window": _STRS,
    "last_update_age_s": _OPT_NUM, "missing_dates": _STRS, "degraded_providers": _STRS,
    "providers": {"type": "object", "additionalProperties": {"allOf": [
        {"$ref": "#/components/schemas/CostProviderState"},
        {"properties": {"last_update": _TIME, "last_update_age_s": _OPT_NUM, "missing_dates": _STRS}}]}}})
COST_REFRESH = obj("Each polled provider's success, then the health after the poll.", {
    "results": {"type": "object", "additionalProperties": _BOOL},
    "health": {"$ref": "#/components/schemas/CostHealth"}})

POLICIES = obj("The auto-remediation policies and their state (PolicyEngine.snapshot).", {
    "enabled": _BOOL, "running": _BOOL, "check_interval_seconds": _NUM, "policies": _OBJ, "last_check": _TIME,
    "checks": _INT, "actions": {"type": "object", "additionalProperties": _INT}, "daily_cost_usd": _OPT_NUM,
    "inflight": arr(_ANY), "state": arr(obj("A session's retries under one policy.", {
        "session_id": _STR, "policy": _STR, "retry_count": _INT, "max_retries": _OPT_INT, "last_attempt": _TIME,
        "last_success": _TIME, "last_result": _OPT_STR, "last_error": _OPT_STR, "capped": _BOOL,
        "blocked_until": _TIME}))})
DEPENDENCIES = obj("The project dependency graph's state (DependencyManager.snapshot).", {
    "autostart": _BOOL, "recent_starts": arr(_ANY), "projects": arr(obj("A project of the graph.", {
        "project": _STR, "depends_on": _STRS, "dependents": _STRS,
        "state": {"type": "string", "enum": ["completed", "running", "blocked", "ready"]}, "completed": _BOOL,
        "ready": _BOOL, "blocked_by": _STRS, "active_sessions": _INT}))})

NODE_AUTH = obj("A node's tool auth states and credential sync.", {
    "node_id": _STR, "auth_states": {"type": "object", "additionalProperties": _OBJ}, "credential_sync": _STR,
    "credential_version": _OPT_INT})
CREDENTIAL_DRIFT = obj("A node's credential version against the supervisor's (tool_auth drift_row).", {
    "node_id": _STR, "credential_sync": _STR, "credential_version": _OPT_INT, "expected_version": _OPT_INT,
    "status": _STR})
CREDENTIAL_DRIFT_META = obj("Count and the expected version.", {"total": _INT, "expected_version": _OPT_INT})
OAUTH_RESULT = obj("The OAuthResult of a tool login (tool_auth oauth_result / manual_required).", {
    "status": {"type": "string", "enum": ["challenge", "success", "failure", "manual_required"]},
    "tool": _STR, "node_id": _OPT_STR, "command_id": _STR, "challenge_url": _OPT_STR, "user_code": _OPT_STR,
    "reason": _OPT_STR, "manual_guidance": _OBJ}, required=("status",))
_PUSH_ONE = {"allOf": [{"$ref": "#/components/schemas/CommandResult"}, {"properties": {
    "credential_sync": _STR, "credential_version": _OPT_INT}}]}
_PUSH_ROW = {"anyOf": [_PUSH_ONE, obj("A node the push could not be sent to.", {
    "node_id": _STR, "status": _STR, "error": _OPT_STR})]}
CREDENTIAL_PUSH = {"description": "With a target node: its push result; without: one row per node pushed to.",
                   "anyOf": [_PUSH_ONE, arr(_PUSH_ROW)]}
CREDENTIAL_PUSH_META = {"description": "Counts, only when pushed to every drifting node (else {}).",
                        "type": "object", "properties": {"total": _INT, "pushed": _INT, "failed": _INT}}

MANIFEST_META = obj("The stored manifest's version.", {
    "version": _INT, "format": {"type": "string", "enum": [SPEC, GO]}, "digest": _STR, "actor": _OPT_STR,
    "updated_at": _TIME})
ENV_MANIFEST_DOC = {"type": "object", "description": "The manifest document as stored (SPEC 8.1 or Go format; "
                    "templates named by file inlined).", "properties": {"version": _ANY, "projects": _OBJ}}
ENV_MANIFEST_STORED = {"allOf": [{"$ref": "#/components/schemas/EnvManifestMeta"}, obj(
    "What storing the manifest did.", {"changed": _BOOL, "pushed_to": _STRS, "warnings": _STRS})]}
_ENV_STATUS_PROPS: dict[str, Any] = {
    "node_id": _STR, "project": _STR, "status": _STR, "checked_at": _TIME, "manifest_version": _OPT_INT,
    "stale": _BOOL, "summary": _OBJ, "node_status": _OPT_STR, "error": _OPT_STR}
ENV_STATUS_ROW = obj("A node's project against the manifest (env status_row).", _ENV_STATUS_PROPS)
ENV_STATUS_META = obj("Count, manifest version and pending approvals.", {
    "total": _INT, "manifest_version": _OPT_INT, "pending": _INT})
_ENV_STATUS_ITEMS = {"allOf": [{"$ref": "#/components/schemas/EnvStatusRow"},
                               {"properties": {"items": arr(_ANY)}, "required": ["items"]}]}
ENV_PENDING = obj("An env item awaiting an admin's approval (env_pending row).", {
    "node_id": _STR, "id": _STR, "token": _OPT_STR, "project": _STR, "category": _STR, "item": _STR,
    "command": _OPT_STR, "status": _STR, "reason": _OPT_STR, "become": _BOOL, "check": arr(_ANY), "chdir": _STR,
    "result": _ANY, "approvable": _BOOL, "reported_command": _ANY, "created_at": _TIME, "updated_at": _TIME})
ENV_NODE_STATUS = {"description": "A node's checks, pending items and recent runs; or, when the id names a "
                                  "project, that project on every node.", "anyOf": [
    obj("One node.", {"node_id": _STR, "node_status": _OPT_STR, "manifest_version": _OPT_INT,
                      "projects": arr(_ENV_STATUS_ITEMS), "pending": arr({"$ref": "#/components/schemas/EnvPending"}),
                      "recent_runs": arr(obj("A check, provision or approval run.", {
                          "id": _INT, "project": _OPT_STR, "kind": _STR, "status": _STR, "actor": _OPT_STR,
                          "command_id": _OPT_STR, "created_at": _TIME, "result": _ANY}))}),
    obj("One project.", {"project": _STR, "nodes": arr(_ENV_STATUS_ITEMS)})]}
ENV_DRIFT_ROW = obj("An item of a stored check that did not pass.", {
    "node_id": _STR, "project": _STR, "category": _ANY, "item": _ANY, "expected": _ANY, "actual": _ANY,
    "status": _ANY, "fix": _ANY, "drift": _ANY, "detail": _ANY, "checked_at": _TIME})
ENV_DRIFT_META = obj("Count, nodes that drift and pending approvals.", {
    "total": _INT, "nodes": _STRS, "pending": arr({"$ref": "#/components/schemas/EnvPending"})})
ENV_CHECK = obj("The node's env_check outcome.", {
    "node_id": _STR, "command_id": _STR, "manifest_version": _OPT_INT, "status": _STR, "results": arr(_OBJ)})
ENV_PROVISION = obj("The node's env_provision outcome.", {
    "node_id": _STR, "command_id": _STR, "dry_run": _BOOL, "manifest_version": _OPT_INT, "results": arr(_OBJ)})
ENV_APPROVAL = obj("An approved item's run (or, with dry_run, what would run).", {
    "node_id": _STR, "item": {"$ref": "#/components/schemas/EnvPending"}, "status": _STR, "run": _OPT_OBJ,
    "result": _ANY, "check": _OPT_OBJ, "replayed": _BOOL}, required=("node_id", "item", "status"))

AGENT_MD = obj("The node's answer to agentmd_show/agentmd_diff, with where it ran.", {
    "node_id": _OPT_STR, "command_id": _STR}, required=("node_id", "command_id"))
AGENT_MD_TEMPLATE = obj("The supervisor's rendered AGENT.md for a project.", {
    "project": _STR, "template": _OPT_STR, "content": _OPT_STR, "sha256": _STR, "manifest_version": _OPT_INT})
AGENT_MD_SYNC = obj("One node's (and project's) sync outcome.", {
    "node_id": _STR, "project": _OPT_STR, "status": _STR, "message": _OPT_STR, "command_id": _STR},
    required=("node_id", "status", "command_id"))
AGENT_MD_SYNC_META = obj("Count by outcome.", {
    "total": _INT, "synced": _INT, "already_synced": _INT, "modified": _INT, "failed": _INT})

REMEDIATION = obj("A remediation run's report (core/remediation/report) as stored.", {
    "id": _STR, "incident": _STR, "section": _OPT_STR, "severity": _OPT_STR, "hosts": _STRS, "check": _BOOL,
    "facts": _OBJ, "decision": _OPT_STR, "reasons": _STRS, "guidance": arr(_ANY), "actions": arr(_OBJ),
    "verification": _OPT_OBJ, "started_at": _TIME, "finished_at": _TIME, "duration_s": _OPT_NUM,
    "status": {"type": "string", "enum": list(REMEDIATION_STATUSES)}, "received_at": _NUM, "actor": _STR},
    required=("id", "incident", "hosts", "status", "received_at", "actor"))
_ALERT_RESULT = obj("What was done with one alert (features/alerts/service.py).", {
    "fingerprint": _STR, "status": {"type": "string", "enum": ["firing", "resolved"]}, "alertname": _STR,
    "incident": _OPT_STR, "host": _OPT_STR, "command": _STR,
    "action": {"type": "string", "enum": ["started", "throttled", "routed", "resolved", "ignored"]},
    "reason": _STR}, required=("fingerprint", "status", "alertname", "incident", "action"))
ALERTS_RECEIVED = obj("An Alertmanager payload handled alert by alert (AlertsService.receive).", {
    "received": _INT, "truncated": _INT, "results": arr(_ALERT_RESULT)})
APPROVAL = obj("An agent's permission request (features/approvals/service.py to_api); the answer to a reply "
               "also has the `command_id` of the agent command that carried it.", {
                   "id": _STR, "node_id": _STR, "session_id": _STR, "project": _OPT_STR, "permission": _STR,
                   "patterns": _STRS, "always": _STRS, "command": _OPT_STR, "tool": _OBJ,
                   "status": {"type": "string", "enum": ["pending", "answered", "gone"]}, "asked_at": _TIME,
                   "age_sec": _NUM, "reply": _OPT_STR, "message": _OPT_STR, "replied_by": _OPT_STR,
                   "replied_at": _TIME, "escalated_at": _TIME, "approve_command": _STR, "deny_command": _STR,
                   "command_id": _STR | {"description": "only on the answer to a reply"}},
               required=("id", "node_id", "session_id", "project", "permission", "patterns", "always", "command",
                         "tool", "status", "asked_at", "age_sec", "reply", "message", "replied_by", "replied_at",
                         "escalated_at", "approve_command", "deny_command"))
OFFSET_META = obj("Paging by offset.", {"total": _INT, "limit": _INT, "offset": _INT})

READINESS = obj("Each component's readiness; on 503 also the error envelope's `error` and `code`.", {
    "status": {"type": "string", "enum": ["ok", "unavailable"]},
    "components": {"type": "object", "additionalProperties": {
        "type": "object", "required": ["status"], "properties": {"status": _STR}}}})

FEATURE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Event": EVENT, "AuditEntry": AUDIT_ENTRY, "CommandResult": COMMAND_RESULT, "CommandAccepted": COMMAND_ACCEPTED,
    "CommandRecord": COMMAND_RECORD, "CostReport": COST_REPORT, "CostProviderState": _PROVIDER_STATE,
    "CostMeta": COST_META, "CostHealth": COST_HEALTH, "CostRefresh": COST_REFRESH, "Policies": POLICIES,
    "Dependencies": DEPENDENCIES, "NodeAuth": NODE_AUTH, "CredentialDrift": CREDENTIAL_DRIFT,
    "CredentialDriftMeta": CREDENTIAL_DRIFT_META, "OAuthResult": OAUTH_RESULT, "CredentialPush": CREDENTIAL_PUSH,
    "CredentialPushMeta": CREDENTIAL_PUSH_META, "EnvManifestMeta": MANIFEST_META, "EnvManifest": ENV_MANIFEST_DOC,
    "EnvManifestStored": ENV_MANIFEST_STORED, "EnvStatusRow": ENV_STATUS_ROW, "EnvStatusMeta": ENV_STATUS_META,
    "EnvPending": ENV_PENDING, "EnvNodeStatus": ENV_NODE_STATUS, "EnvDriftRow": ENV_DRIFT_ROW,
    "EnvDriftMeta": ENV_DRIFT_META, "EnvCheck": ENV_CHECK, "EnvProvision": ENV_PROVISION,
    "EnvApproval": ENV_APPROVAL, "AgentMd": AGENT_MD, "AgentMdTemplate": AGENT_MD_TEMPLATE,
    "AgentMdSync": AGENT_MD_SYNC, "AgentMdSyncMeta": AGENT_MD_SYNC_META, "Remediation": REMEDIATION,
    "OffsetMeta": OFFSET_META, "Readiness": READINESS, "AlertResult": _ALERT_RESULT,
    "AlertsReceived": ALERTS_RECEIVED, "Approval": APPROVAL,
}
