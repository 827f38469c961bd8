"""The OpenAPI document is worth generating clients from (issue 17, point 4), against the real supervisor:
every operation has a summary, a description, a feature tag, a success and the error answers it can give;
the /api/v1 ones the bearer scheme; real answers validate against it; /docs loads nothing from a CDN."""

from __future__ import annotations

import asyncio
import re

import httpx
import jsonschema
import pytest
from websockets.asyncio.client import connect

from halswarm.protocol import Register, decode, encode
from halswarm.supervisor.http.openapi_routes import DISPATCH, ROUTES

TAGS = {"sessions", "nodes", "events", "commands", "audit", "cost", "policies", "dependencies", "auth", "env",
        "agent-md", "remediations", "health"}
UNAUTHENTICATED = {"/healthz", "/readyz", "/metrics"}


async def _get(url: str, **kw: object) -> httpx.Response:
    return await asyncio.to_thread(httpx.get, url, timeout=10, **kw)


def _operations(doc: dict) -> dict[tuple[str, str], dict]:
    return {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}


async def test_every_operation_documents_itself(supervisor):
    doc = (await _get(supervisor.api + "/openapi.json")).json()
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    ops = _operations(doc)
    assert sorted(ops) == sorted(ROUTES), "every route needs a row in openapi_routes.ROUTES, and no stale rows"
    problems = []
    for (method, path), op in ops.items():
        where = f"{method} {path}"
        statuses = set(op["responses"])
        if not (op.get("summary") and op.get("description")):
            problems.append(f"{where}: no summary/description")
        if not op.get("tags") or not set(op["tags"]) <= TAGS:
            problems.append(f"{where}: tags {op.get('tags')}")
        if not any(s.startswith("2") for s in statuses):
            problems.append(f"{where}: no 2xx answer")
        if "422" in statuses or "500" not in statuses:
            problems.append(f"{where}: 422 listed or 500 missing")
        needed = set()
        if path in UNAUTHENTICATED:
            if op.get("security"):
                problems.append(f"{where}: health routes need no token")
        else:
            if op.get("security") != [{"bearerAuth": []}]:
                problems.append(f"{where}: no bearer security")
            needed |= {"401", "403", "429"}
        if op.get("parameters") or op.get("requestBody") or method != "GET":
            needed.add("400")
        if "{" in path:
            needed.add("404")
        if method != "GET":
            needed.add("413")
        needed |= ROUTES[(method, path)].extra
        if not needed <= statuses:
            problems.append(f"{where}: missing {sorted(needed - statuses)}")
        for status in statuses - {"200", "201", "202"}:
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            if ref != "#/components/schemas/ErrorEnvelope":
                problems.append(f"{where} {status}: not the error envelope")
    assert not problems, "\n".join(problems)
    # a route that reads nothing answers no 404, and a dispatching one the agent failures
    assert "404" not in ops[("GET", "/api/v1/nodes")]["responses"]
    assert set(ops[("POST", "/api/v1/commands")]["responses"]) >= DISPATCH


def _validate(doc: dict, instance: object, schema: dict) -> None:
    jsonschema.validate(instance, {**schema, "components": doc["components"]})


async def test_real_answers_validate_against_the_document(supervisor):
    doc = (await _get(supervisor.api + "/openapi.json")).json()
    ops = _operations(doc)
    auth = {"Authorization": f"Bearer {supervisor.token}"}
    hdr = {"Authorization": f"Bearer {supervisor.agent_token}"}
    async with connect(supervisor.ws_url, additional_headers=hdr) as ws:  # a node, so data is not empty
        await ws.send(encode(Register(node_id="n1", hostname="h1")))
        assert decode(await asyncio.wait_for(ws.recv(), 10)).type == "registered"
        await _check_answers(doc, ops, supervisor, auth)
        nodes = (await _get(supervisor.api + "/api/v1/nodes", headers=auth)).json()["data"]
        assert [n["id"] for n in nodes] == ["n1"]
        with pytest.raises(jsonschema.ValidationError):  # the typed schema is really checked
            schema = ops[("GET", "/api/v1/nodes")]["responses"]["200"]["content"]["application/json"]["schema"]
            _validate(doc, {"data": [nodes[0] | {"status": "lost"}], "meta": {}}, schema)


async def _check_answers(doc: dict, ops: dict, supervisor, auth: dict) -> None:  # type: ignore[no-untyped-def]
    cases = [("/api/v1/nodes", auth, 200), ("/api/v1/nodes/n1", auth, 200),
             ("/api/v1/nodes", {}, 401), ("/api/v1/nodes/nope", auth, 404),
             ("/api/v1/sessions/nope", auth, 404), ("/api/v1/events?limit=0", auth, 400), ("/healthz", {}, 200)]
    for url, headers, expected in cases:
        r = await _get(supervisor.api + url, headers=headers)
        assert r.status_code == expected, (url, r.status_code, r.text)
        template = next(p for (m, p) in ops if m == "GET" and re.fullmatch(
            re.sub(r"\{[^}]+\}", "[^/]+", p), url.split("?")[0]))
        answer = ops[("GET", template)]["responses"][str(expected)]
        _validate(doc, r.json(), answer["content"]["application/json"]["schema"])


async def test_docs_page_loads_only_local_assets(supervisor):
    r = await _get(supervisor.api + "/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    external = [u for u in re.findall(r"https?://[^\s\"'<>]+", r.text) if not u.startswith(supervisor.api)]
    assert not external, f"/docs loads from other hosts: {external}"
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", r.text)
    kinds = {"js": "text/javascript", "css": "text/css", "png": "image/png"}
    assert {a.rsplit(".", 1)[-1] for a in assets} == set(kinds)
    for asset in assets:
        got = await _get(supervisor.api + asset)  # static files need no token
        assert got.status_code == 200, asset
        assert got.headers["content-type"].startswith(kinds[asset.rsplit(".", 1)[-1]]), asset
        assert len(got.content) > 100
    assert "validatorUrl" in r.text  # no badge from validator.swagger.io
