"""The OpenAPI document is worth generating clients from (issue 17, point 4), against the real supervisor:
every operation has a summary, a description, a feature tag, a success and the error answers it can give;
the /api/v1 ones the bearer scheme; real answers validate against it; /docs loads nothing from a CDN."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from websockets.asyncio.client import connect

from halswarm.core.remediation.planners import plan
from halswarm.core.remediation.report import build_report
from halswarm.protocol import Command, CommandResult, Register, decode, encode
from halswarm.supervisor.features.chat.slack_signature import sign as slack_sign
from halswarm.supervisor.http.openapi_doc import MEDIA_TYPES
from halswarm.supervisor.http.openapi_models import EMPTY
from halswarm.supervisor.http.openapi_routes import DISPATCH, ROUTES
from tests.support.agentsim import SimAgent, session_state

TAGS = {"sessions", "nodes", "events", "commands", "audit", "cost", "policies", "dependencies", "auth", "env",
        "agent-md", "remediations", "alerts", "health", "approvals", "chatops"}
UNAUTHENTICATED = {"/healthz", "/readyz", "/metrics"}
# No bearer token: the chat platform's signature admits the request (its 401 is in openapi_routes.ROUTES).
SIGNED = {"/api/v1/chat/discord/interactions", "/api/v1/chat/slack/commands", "/api/v1/chat/slack/interactions"}
ALERTS_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager" / "grouped_mixed.json"


async def _get(url: str, **kw: object) -> httpx.Response:
    return await asyncio.to_thread(httpx.get, url, timeout=10, **kw)


def _operations(doc: dict) -> dict[tuple[str, str], dict]:
    return {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}


async def test_console_pages_are_left_out_of_the_document_on_purpose(supervisor):
    """/ui (the web console: HTML, cookie login) is not an API: no operation of the document, while every
    one of its routes is in the console role matrix (tests/integration/test_roles.py CONSOLE)."""
    from tests.integration.test_roles import CONSOLE, _console_routes

    doc = (await _get(supervisor.api + "/openapi.json")).json()
    assert not [p for p in doc["paths"] if p.startswith("/ui")]
    assert _console_routes() == sorted(CONSOLE)
    assert (await _get(supervisor.api + "/ui/login")).status_code == 200  # served all the same


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
        if path in UNAUTHENTICATED | SIGNED:
            if op.get("security"):
                problems.append(f"{where}: health and signed routes take no bearer token")
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
        for status in {s for s in statuses if s.startswith("2")}:
            content = op["responses"][status].get("content") or {}
            if (method, path) in EMPTY:
                if content:
                    problems.append(f"{where} {status}: declared a body it does not send")
            elif path in MEDIA_TYPES:
                if set(content) != {MEDIA_TYPES[path]}:
                    problems.append(f"{where} {status}: media type {sorted(content)}")
            elif not _typed(content.get("application/json", {}).get("schema", {})):
                problems.append(f"{where} {status}: no typed JSON schema")
        for status in statuses - {"200", "201", "202"}:
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            if ref != "#/components/schemas/ErrorEnvelope":
                problems.append(f"{where} {status}: not the error envelope")
    assert not problems, "\n".join(problems)
    # a route that reads nothing answers no 404, and a dispatching one the agent failures
    assert "404" not in ops[("GET", "/api/v1/nodes")]["responses"]
    assert set(ops[("POST", "/api/v1/commands")]["responses"]) >= DISPATCH


def _typed(schema: dict) -> bool:
    """A named schema other than the bare envelope, or the envelope with a typed ``data``."""
    if "$ref" in schema:
        return schema["$ref"] != "#/components/schemas/SuccessEnvelope"
    parts = schema.get("allOf") or []
    return any("$ref" in str(p.get("properties", {}).get("data", {})) for p in parts)


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


NODE, PROJECT = "api-node", "alpha"
GIT_PENDING = {"id": "tools:git", "category": "tools", "item": "git", "command": "apt-get install -y git",
               "become": True, "reason": "git is missing", "check": ["git", "--version"]}
GIT_DRIFT = {"category": "tools", "item": "git", "expected": ">=2.0", "actual": None, "status": "fail",
             "fix": "install git"}


def _agent_answer(cmd: Command) -> CommandResult:
    """A scripted agent: each command type answers the output the real agent's contract gives."""
    sid = cmd.target.session_id or "ses_old"
    outputs = {
        "create_session": session_state("ses_new", PROJECT, "running"),
        "prompt_session": {"accepted": True},
        "handover": {"old_session": session_state(sid, PROJECT, "killed"),
                     "session": session_state(sid + "-next", PROJECT, "running")},
        "kill_session": session_state(sid, PROJECT, "killed"),
        "env_check": {"manifest_version": 1, "results": [{
            "project": PROJECT, "status": "missing", "manifest_version": 1, "summary": {"pass": 0, "fail": 1},
            "details": {"drift": [GIT_DRIFT]}}]},
        "env_provision": {"manifest_version": 1, "dry_run": False, "results": [{
            "project": PROJECT, "status": "pending", "details": {"pending": [GIT_PENDING]}}]},
        "agentmd_show": {"project": PROJECT, "exists": True, "content": "# alpha\n"},
        "agentmd_diff": {"project": PROJECT, "diff": "", "in_sync": True},
        "agentmd_sync": {"results": [{"project": PROJECT, "status": "synced", "message": "written"}]},
        "oauth_trigger": {"status": "challenge", "challenge_url": "https://login.example.invalid/device",
                          "user_code": "ABCD-1234"},
        "credential_push": {"applied": ["HAL_KEY"], "version": cmd.args.get("version")},
    }
    return CommandResult(cmd.command_id, "success", outputs.get(cmd.type, session_state(sid, PROJECT, "running")))


@pytest.mark.timeout(120)
async def test_every_route_answers_what_the_document_declares(make_supervisor, tmp_path):
    """Each operation of the document is called until it succeeds (a scripted agent answers the commands),
    and the answer must validate against the typed schema the document declares for that status."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"{NODE} ansible_connection=local\n")
    discord_key = Ed25519PrivateKey.generate()
    slack_secret_file = tmp_path / "slack-signing-secret"
    slack_secret_file.write_text("slack-signing-secret-for-the-doc\n")
    slack_secret_file.chmod(0o600)
    public_hex = discord_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    sup = make_supervisor(remediation={"inventory": str(inventory)},
                          credentials={"version": 2, "auto_push": False, "defaults": {"env": {"HAL_KEY": "k"}}},
                          chatops={"discord": {"public_key": public_hex},
                                   "slack": {"signing_secret_file": str(slack_secret_file)}})
    sup.start()
    doc = (await _get(sup.api + "/openapi.json")).json()
    ops = _operations(doc)
    agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [(PROJECT, "/srv/alpha")])
    agent.handler = _agent_answer
    await agent.connect(sessions=[session_state("ses_old", PROJECT, "idle")])
    await agent.send_event(1, "permission.asked", session_id="ses_old", project=PROJECT, data={
        "id": "per_doc1", "sessionID": "ses_old", "permission": "bash", "patterns": ["echo hi"], "always": ["echo *"],
        "metadata": {"command": "echo hi"}, "tool": {"messageID": "msg_1", "callID": "call_1"}})
    await agent.wait_acked(1)
    validated: dict[tuple[str, str], set[str]] = {}
    facts = {"supervisor": {"active_state": "failed", "load_state": "loaded"}}
    remediation = build_report("supervisor-crashed", hosts=[NODE], facts=facts, status="verified", started=100.0,
                               finished=101.0, plan=plan("supervisor-crashed", facts).to_dict())
    alerts = json.loads(ALERTS_FIXTURE.read_text())
    manifest = {"version": "1.0", "defaults": {"tools": {"git": ">=2.0"}}, "projects": {PROJECT: {}}}
    v1 = "/api/v1"
    # (method, documented path, real url, body, expected status), in an order where each call finds what it needs
    calls: list[tuple[str, str, str, object, int]] = [
        ("GET", "/healthz", "/healthz", None, 200), ("GET", "/readyz", "/readyz", None, 200),
        ("PUT", f"{v1}/env/manifest", f"{v1}/env/manifest", manifest, 201),
        ("PUT", f"{v1}/env/manifest", f"{v1}/env/manifest", manifest, 200),
        ("GET", f"{v1}/env/manifest", f"{v1}/env/manifest", None, 200),
        ("GET", f"{v1}/nodes", f"{v1}/nodes", None, 200),
        ("GET", f"{v1}/nodes/{{node_id}}", f"{v1}/nodes/{NODE}", None, 200),
        ("GET", f"{v1}/nodes/{{node_id}}/auth", f"{v1}/nodes/{NODE}/auth", None, 200),
        ("GET", f"{v1}/sessions", f"{v1}/sessions", None, 200),
        ("GET", f"{v1}/sessions/{{session_id}}", f"{v1}/sessions/ses_old", None, 200),
        ("GET", f"{v1}/approvals", f"{v1}/approvals", None, 200),
        ("POST", f"{v1}/approvals/{{approval_id}}", f"{v1}/approvals/per_doc1", {"reply": "once"}, 200),
        ("POST", f"{v1}/sessions", f"{v1}/sessions", {"project": PROJECT}, 201),
        ("POST", f"{v1}/sessions/{{session_id}}/prompt", f"{v1}/sessions/ses_old/prompt", {"message": "hi"}, 200),
        ("POST", f"{v1}/sessions/{{session_id}}/resume", f"{v1}/sessions/ses_old/resume", None, 200),
        ("POST", f"{v1}/sessions/{{session_id}}/restart", f"{v1}/sessions/ses_old/restart", None, 200),
        ("POST", f"{v1}/sessions/{{session_id}}/handover", f"{v1}/sessions/ses_old/handover", None, 200),
        ("DELETE", f"{v1}/sessions/{{session_id}}", f"{v1}/sessions/ses_new", None, 200),
        ("POST", f"{v1}/commands", f"{v1}/commands",
         {"type": "session_status", "target": {"session_id": "ses_old"}}, 200),
        ("POST", f"{v1}/commands", f"{v1}/commands",
         {"type": "session_status", "target": {"session_id": "ses_old"}, "wait": False}, 202),
        ("POST", f"{v1}/env/check/{{node_id}}", f"{v1}/env/check/{NODE}", {"project": PROJECT}, 200),
        ("POST", f"{v1}/env/provision/{{node_id}}", f"{v1}/env/provision/{NODE}", {"project": PROJECT}, 200),
        ("POST", f"{v1}/env/approve/{{node_id}}", f"{v1}/env/approve/{NODE}",
         {"item": "tools:git", "dry_run": True}, 200),
        ("GET", f"{v1}/env/status", f"{v1}/env/status", None, 200),
        ("GET", f"{v1}/env/status/{{node_id}}", f"{v1}/env/status/{NODE}", None, 200),
        ("GET", f"{v1}/env/status/{{node_id}}", f"{v1}/env/status/{PROJECT}", None, 200),
        ("GET", f"{v1}/env/drift", f"{v1}/env/drift", None, 200),
        ("GET", f"{v1}/agent-md/{{project}}", f"{v1}/agent-md/{PROJECT}", None, 200),
        ("GET", f"{v1}/agent-md/{{project}}/diff", f"{v1}/agent-md/{PROJECT}/diff", None, 200),
        ("GET", f"{v1}/agent-md/{{project}}/template", f"{v1}/agent-md/{PROJECT}/template", None, 200),
        ("POST", f"{v1}/agent-md/sync", f"{v1}/agent-md/sync", {"project": PROJECT}, 200),
        ("GET", f"{v1}/auth/drift", f"{v1}/auth/drift?all=true", None, 200),
        ("POST", f"{v1}/commands/credentials/push", f"{v1}/commands/credentials/push", {}, 200),
        ("POST", f"{v1}/commands/credentials/push", f"{v1}/commands/credentials/push",
         {"target_node": NODE, "env_vars": {"HAL_KEY": "other"}}, 200),
        ("POST", f"{v1}/oauth/trigger", f"{v1}/oauth/trigger", {"node_id": NODE, "tool": "codex"}, 200),
        ("POST", f"{v1}/oauth/trigger", f"{v1}/oauth/trigger", {"node_id": NODE, "tool": "unknown-tool"}, 200),
        ("POST", f"{v1}/remediations", f"{v1}/remediations", remediation, 201),
        ("GET", f"{v1}/remediations", f"{v1}/remediations", None, 200),
        ("POST", f"{v1}/alerts", f"{v1}/alerts", alerts, 200),
        ("GET", f"{v1}/cost", f"{v1}/cost", None, 200), ("GET", f"{v1}/cost/{{period}}", f"{v1}/cost/week", None, 200),
        ("GET", f"{v1}/cost/status", f"{v1}/cost/status", None, 200),
        ("POST", f"{v1}/cost/refresh", f"{v1}/cost/refresh", {}, 200),
        ("GET", f"{v1}/policies", f"{v1}/policies", None, 200),
        ("GET", f"{v1}/dependencies", f"{v1}/dependencies", None, 200),
        ("GET", f"{v1}/events", f"{v1}/events?order=desc", None, 200),
        ("GET", f"{v1}/audit", f"{v1}/audit", None, 200),
    ]
    problems: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=sup.api, timeout=30,
                                     headers={"Authorization": f"Bearer {sup.token}"}) as c:
            command_id = None
            for method, path, url, body, status in calls:
                r = await c.request(method, url, json=body) if body is not None else await c.request(method, url)
                if r.status_code != status:
                    problems.append(f"{method} {url}: {r.status_code} (expected {status}) {r.text[:300]}")
                    continue
                schema = ops[(method, path)]["responses"][str(status)]["content"]["application/json"]["schema"]
                try:
                    _validate(doc, r.json(), schema)
                except jsonschema.ValidationError as exc:
                    problems.append(f"{method} {url} {status}: {exc.message} at {list(exc.absolute_path)}")
                    continue
                validated.setdefault((method, path), set()).add(str(status))
                if (method, path, status) == ("POST", f"{v1}/commands", 200):
                    command_id = r.json()["data"]["command_id"]
            r = await c.get(f"{v1}/commands/{command_id}")
            schema = ops[("GET", f"{v1}/commands/{{command_id}}")]["responses"]["200"]["content"]
            _validate(doc, r.json(), schema["application/json"]["schema"])
            validated[("GET", f"{v1}/commands/{{command_id}}")] = {"200"}
            # the signed route: a Discord PING, signed with the configured application's key
            ping = json.dumps({"id": "1", "application_id": "1", "type": 1, "token": "t", "version": 1}).encode()
            stamp = str(int(time.time()))
            signed = {"X-Signature-Ed25519": discord_key.sign(stamp.encode() + ping).hex(),
                      "X-Signature-Timestamp": stamp, "Content-Type": "application/json"}
            key = ("POST", f"{v1}/chat/discord/interactions")
            r = await c.post(key[1], content=ping, headers=signed)
            assert r.status_code == 200, r.text
            _validate(doc, r.json(), ops[key]["responses"]["200"]["content"]["application/json"]["schema"])
            validated[key] = {"200"}
            # the Slack routes: a slash command and a button press, signed with the configured secret
            for path, form in ((f"{v1}/chat/slack/commands", {"command": "/hal", "text": "help", "user_id": "U0X"}),
                               (f"{v1}/chat/slack/interactions", {"payload": json.dumps({"type": "shortcut"})})):
                body = urlencode(form).encode()
                headers = {"X-Slack-Signature": slack_sign("slack-signing-secret-for-the-doc", stamp, body),
                           "X-Slack-Request-Timestamp": stamp, "Content-Type": "application/x-www-form-urlencoded"}
                r = await c.post(path, content=body, headers=headers)
                assert r.status_code == 200, r.text
                content = ops[("POST", path)]["responses"]["200"].get("content")
                if content is None:
                    assert r.content == b"", path
                else:
                    _validate(doc, r.json(), content["application/json"]["schema"])
                validated[("POST", path)] = {"200"}
            for path, media in MEDIA_TYPES.items():
                async with c.stream("GET", path) as r:
                    assert r.status_code == 200 and r.headers["content-type"].startswith(media), path
                    assert media in ops[("GET", path)]["responses"]["200"]["content"]
                validated[("GET", path)] = {"200"}
    finally:
        await agent.close()
    assert not problems, "\n".join(problems)
    assert set(validated) == set(ROUTES), f"not called: {sorted(set(ROUTES) - set(validated))}"
    print(f"\n{len(ops)} operations, every one answered and validated: "
          f"{sum(len(v) for v in validated.values())} success statuses")
