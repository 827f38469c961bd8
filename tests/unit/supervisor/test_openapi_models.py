"""Every JSON route documents a typed success answer, and the schemas describe what the services really build
(pure: real result objects and shaping functions, no app, no I/O). The answers of a running supervisor are
checked against the served document in tests/integration/test_openapi_doc.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jsonschema
import pytest

from halswarm.supervisor.http.openapi_doc import MEDIA_TYPES, SUCCESS_SCHEMA, describe_answers
from halswarm.supervisor.http.openapi_models import BARE, DATA, DATA_BY_STATUS, EMPTY, META, SCHEMAS
from halswarm.supervisor.http.openapi_routes import ROUTES

REF = "#/components/schemas/"


def _valid(instance: Any, name: str) -> None:
    jsonschema.validate(instance, {"$ref": REF + name, "components": {"schemas": SCHEMAS}})


def _invalid(instance: Any, name: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _valid(instance, name)


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _typed(schema: dict[str, Any]) -> bool:
    """A named schema other than the bare envelope, or the envelope with ``data`` naming a schema."""
    if "$ref" in schema:
        return bool(schema["$ref"] != REF + SUCCESS_SCHEMA)
    data = next((p["properties"]["data"] for p in schema.get("allOf", []) if "data" in p.get("properties", {})), {})
    return bool(_refs(data))


def test_every_json_route_has_exactly_one_answer_schema_and_no_row_is_stale():
    for key in ROUTES:
        kinds = [key in DATA, key in BARE, key[1] in MEDIA_TYPES, key in EMPTY]
        assert sum(kinds) == 1, f"{key}: in DATA {kinds[0]}, BARE {kinds[1]}, MEDIA_TYPES {kinds[2]}, EMPTY {kinds[3]}"
    stale = (set(DATA) | set(BARE) | set(META) | set(EMPTY) | {k[:2] for k in DATA_BY_STATUS}) - set(ROUTES)
    assert not stale, f"schema rows of no route: {stale}"
    named = {n for n, _ in DATA.values()} | {n for n, _ in DATA_BY_STATUS.values()} | set(BARE.values()) | set(
        META.values())
    assert named <= set(SCHEMAS), f"no such schema: {named - set(SCHEMAS)}"
    dangling = {r for r in _refs(SCHEMAS) if r.removeprefix(REF) not in SCHEMAS}
    assert not dangling, dangling


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_schema_is_valid_and_typed(name: str) -> None:
    schema = SCHEMAS[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema.get("properties") or schema.get("anyOf") or schema.get("allOf"), f"{name} is a bare object"


def test_the_document_types_every_success_answer():
    doc: dict[str, Any] = {"paths": {}}
    for method, path in ROUTES:
        status = "201" if (method, path) in {("POST", "/api/v1/sessions"), ("POST", "/api/v1/remediations")} else "200"
        doc["paths"].setdefault(path, {})[method.lower()] = {"responses": {status: {"description": "ok"}}}
    doc["paths"]["/api/v1/commands"]["post"]["responses"]["202"] = {"description": "accepted"}
    out = describe_answers(doc, ["NOT_FOUND"])
    untyped = []
    for path, item in out["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if not status.startswith("2"):
                    continue
                if (method.upper(), path) in EMPTY:  # an acknowledgement with no body (Slack's button presses)
                    assert "content" not in answer
                    continue
                (media, body), = answer["content"].items()
                if path in MEDIA_TYPES:
                    assert media == MEDIA_TYPES[path] and media != "application/json"
                    continue
                if not _typed(body["schema"]):
                    untyped.append(f"{method.upper()} {path} {status}")
    assert not untyped, f"success answers without a typed schema: {untyped}"
    accepted = out["paths"]["/api/v1/commands"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert accepted["allOf"][1]["properties"]["data"] == {"$ref": REF + "CommandAccepted"}


def test_command_and_session_action_answers():
    from halswarm.supervisor.runtime.dispatcher import Result

    res = Result("c1", "success", output={"ok": True}, node_id="n1", type="prompt_session", duration_ms=12)
    _valid(res.to_api(), "CommandResult")
    _valid(Result("c2", "failure", error="boom", replayed=True).to_api(), "CommandResult")
    _valid({"command_id": "c3", "status": "pending"}, "CommandAccepted")
    _invalid({"command_id": "c3", "status": "pending"}, "CommandResult")  # the 202 answer is not a result
    _invalid({k: v for k, v in res.to_api().items() if k != "duration_ms"}, "CommandResult")


def test_tool_auth_answers():
    from halswarm.core.auth_capability import manual_required
    from halswarm.core.model import Node
    from halswarm.supervisor.features.tool_auth.service import drift_row, oauth_result
    from halswarm.supervisor.runtime.dispatcher import Result

    node = Node("n1", status="online", credential_version=3)
    _valid(drift_row(node, 4), "CredentialDrift")
    _valid(drift_row(Node("n2"), None), "CredentialDrift")
    _valid(manual_required("claude_code", "n1"), "OAuthResult")
    _valid(oauth_result(Result("c1", "success", output={"status": "challenge", "challenge_url": "https://x"},
                               node_id="n1"), "codex"), "OAuthResult")
    _valid(oauth_result(Result("c1", "timeout", error="late", node_id="n1"), "codex"), "OAuthResult")
    _invalid({"status": "exploded"}, "OAuthResult")
    pushed = Result("c1", "success", node_id="n1").to_api() | {"credential_sync": "in_sync", "credential_version": 3}
    _valid(pushed, "CredentialPush")
    _valid([pushed, {"node_id": "n2", "status": "failure", "error": "offline"}], "CredentialPush")
    _invalid("pushed", "CredentialPush")


def test_cost_answers():
    from halswarm.core.cost import Bucket, SessionUsage
    from halswarm.supervisor.features.cost.report import build_report, empty_report

    today = dt.date(2026, 12, 7)
    bucket = Bucket("anthropic", today.isoformat(), "claude", "proj", 10, 5, 0.25)
    usage = SessionUsage(today.isoformat(), "s1", "demo", "anthropic", "claude", 15, 0.25)
    report = build_report("week", today, [bucket], {"anthropic": {today.isoformat()}}, [usage], ["openai"])
    assert report["by_model"] and report["by_project"]
    _valid(report, "CostReport")
    _valid(empty_report("month"), "CostReport")
    _invalid({k: v for k, v in report.items() if k != "by_model"}, "CostReport")


def test_env_answers():
    from halswarm.supervisor.features.env.service import drift_rows, status_row

    result = {"summary": {"pass": 1, "fail": 1}, "details": {"drift": [
        {"category": "tools", "item": "git", "expected": ">=2", "actual": "1.9", "status": "fail", "fix": "apt"},
        {"category": "tools", "item": "jq", "status": "pass"}]}}
    row = {"node_id": "n1", "project": "p", "status": "degraded", "checked_at": 1.7e9, "manifest_version": 2,
           "result": result}
    _valid(status_row(row, 3, "online"), "EnvStatusRow")
    _valid(status_row(row | {"result": {}}, None, None), "EnvStatusRow")
    drift = drift_rows([row])
    assert len(drift) == 1
    _valid(drift[0], "EnvDriftRow")
    _valid({"node_id": "n1", "node_status": "online", "manifest_version": 3, "pending": [], "recent_runs": [],
            "projects": [status_row(row, 3, "online") | {"items": result["details"]["drift"]}]}, "EnvNodeStatus")
    _invalid({"node_id": "n1", "projects": "none"}, "EnvNodeStatus")


def test_dependency_and_remediation_answers():
    from halswarm.core.remediation.planners import plan
    from halswarm.core.remediation.report import build_report
    from halswarm.supervisor.features.dependencies.service import Graph, project_states

    graph = Graph({"app": ["lib"], "lib": []})
    states = project_states(graph, {"lib": True}, {"app": 1})
    _valid({"autostart": True, "projects": states, "recent_starts": []}, "Dependencies")
    facts = {"supervisor": {"active_state": "failed", "load_state": "loaded"}}
    report = build_report("supervisor-crashed", hosts=["h"], facts=facts, plan=plan("supervisor-crashed", facts)
                          .to_dict(), status="verified", started=100.0, finished=101.0)
    stored = report | {"received_at": 1.7e9, "actor": "ops"}
    _valid(stored, "Remediation")
    _invalid(stored | {"status": "exploded"}, "Remediation")
