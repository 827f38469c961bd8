"""Which error statuses an operation documents, from its shape (pure; no app, no I/O)."""

from __future__ import annotations

import pytest

from halswarm.supervisor.http.openapi_doc import RouteShape, describe_answers
from halswarm.supervisor.http.openapi_routes import DISPATCH, error_statuses


def test_statuses_follow_the_route_shape():
    assert error_statuses("GET", authenticated=False, has_params=False, has_path_ids=False,
                          extra=frozenset()) == {"500"}
    assert error_statuses("GET", authenticated=True, has_params=True, has_path_ids=True, extra=frozenset()) == {
        "400", "401", "403", "404", "429", "500"}
    assert error_statuses("POST", authenticated=True, has_params=False, has_path_ids=False, extra=DISPATCH) == {
        "400", "401", "403", "404", "413", "429", "500", "502", "503", "504"}


def test_describe_answers_adds_security_tags_and_only_the_listed_errors():
    doc = {"paths": {"/api/v1/nodes": {"get": {"responses": {"200": {}, "422": {}}}},
                     "/healthz": {"get": {"responses": {"200": {}}}}}}
    shapes = {("GET", "/api/v1/nodes"): RouteShape("nodes", True, True, False),
              ("GET", "/healthz"): RouteShape("health", False, False, False)}
    out = describe_answers(doc, ["AUTH_REQUIRED"], shapes)
    nodes, health = out["paths"]["/api/v1/nodes"]["get"], out["paths"]["/healthz"]["get"]
    assert out["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert nodes["security"] == [{"bearerAuth": []}] and "security" not in health
    assert set(nodes["responses"]) == {"200", "400", "401", "403", "429", "500"}
    assert set(health["responses"]) == {"200", "500"}
    assert nodes["summary"] == "List nodes" and nodes["tags"] == ["nodes"]


def test_typed_data_schemas_describe_the_real_shapes():
    import jsonschema

    from halswarm.core.model import Node, Session
    from halswarm.supervisor.http.openapi_models import SCHEMAS

    node = Node("n1", hostname="h", status="online", projects=[{"name": "p", "directory": "/srv/p"}],
                resources={"cpu": 1.5}, auth_states={"claude": {"status": "ok"}}, last_heartbeat=1.7e9)
    jsonschema.validate(node.to_api() | {"sessions": ["s1"]}, SCHEMAS["Node"])
    jsonschema.validate(Node("bare").to_api(), SCHEMAS["Node"])
    session = Session("s1", node_id="n1", project="p", model="m")
    jsonschema.validate(session.to_api() | {"command_id": "c1"}, SCHEMAS["Session"])
    with pytest.raises(jsonschema.ValidationError):  # an unknown status must not validate
        jsonschema.validate(session.to_api() | {"status": "exploded"}, SCHEMAS["Session"])


def test_paged_routes_describe_their_meta():
    import jsonschema

    from halswarm.core.paging import PageRequest, encode_cursor, page_meta, slice_sorted
    from halswarm.supervisor.http.openapi_models import SCHEMAS

    doc = {"paths": {"/api/v1/audit": {"get": {"responses": {"200": {}}}}}}
    out = describe_answers(doc, ["AUTH_REQUIRED"], {("GET", "/api/v1/audit"): RouteShape("audit", True, True, False)})
    schema = out["paths"]["/api/v1/audit"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["allOf"][1]["properties"]["meta"] == {"$ref": "#/components/schemas/PageMeta"}
    assert schema["allOf"][1]["properties"]["data"] == {"type": "array",
                                                        "items": {"$ref": "#/components/schemas/AuditEntry"}}
    req = PageRequest(1, after=("a",))
    meta = page_meta(slice_sorted([("a",), ("b",), ("c",)], req, lambda r: r, False), req, 3, False)
    assert meta["next"] == encode_cursor(("b",)) and meta["prev"] == encode_cursor(("b",))
    jsonschema.validate(meta, SCHEMAS["PageMeta"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"total": 3, "limit": 1, "offset": 0}, SCHEMAS["PageMeta"])
