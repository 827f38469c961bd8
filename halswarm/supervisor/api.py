"""HTTP API (SPEC section 6) on FastAPI: envelopes, error codes, auth, and the routes of the core."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from halswarm import __version__
from halswarm.core.roles import Identity, Role, command_role, identify
from halswarm.protocol import CommandTarget
from halswarm.store import queries
from halswarm.supervisor.auth import CLIENT_ACTOR, bearer
from halswarm.supervisor.dispatcher import CommandError, Result, normalize_type
from halswarm.supervisor.http_guard import RequestGuard
from halswarm.supervisor.timeutil import parse_ts

if TYPE_CHECKING:
    from halswarm.supervisor.app import Supervisor

log = logging.getLogger(__name__)

# Exactly the codes of SPEC 6; nothing else goes on the wire.
STATUS_BY_CODE = {
    "AUTH_REQUIRED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404, "BAD_REQUEST": 400, "VALIDATION_ERROR": 400,
    "CONFLICT": 409, "RATE_LIMITED": 429, "INTERNAL_ERROR": 500, "SERVICE_UNAVAILABLE": 503,
    "DISPATCH_ERROR": 502, "TIMEOUT": 504,
}
# Codes some route modules still raise, folded into the SPEC list.
CODE_ALIASES = {"PAYLOAD_TOO_LARGE": "BAD_REQUEST"}
# SPEC 6 has no code for 413: an oversized body is BAD_REQUEST with the HTTP status that says why.
STATUS_OVERRIDES = {"PAYLOAD_TOO_LARGE": 413}
MAX_LIMIT = 10_000
# Far past any table, far below SQLite's 64-bit OFFSET (2^63 and up would overflow into a 500).
MAX_OFFSET = 1_000_000_000
# The bounds, declared for the OpenAPI document too (a violation is a 400 VALIDATION_ERROR either way).
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
MAX_COMMAND_TIMEOUT_S = 86_400  # a day: longer is a mistake, and inf/1e308 s would overflow the deadline


class ApiError(Exception):
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


def err(code: str, message: str, status: int | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status or STATUS_BY_CODE[code])


# ----- request bodies -----

class CreateSessionBody(BaseModel):
    project: str = Field(min_length=1)
    prompt: str | None = None
    model: str | None = None
    node_id: str | None = None
    idempotency_key: str | None = None


class PromptBody(BaseModel):
    message: str = Field(min_length=1)
    idempotency_key: str | None = None


class CommandBody(BaseModel):
    type: str = Field(min_length=1)
    target: str | dict[str, str] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    timeout: float | None = Field(default=None, gt=0, le=MAX_COMMAND_TIMEOUT_S, description="seconds (Go-compatible)")
    timeout_ms: int | None = Field(default=None, gt=0, le=MAX_COMMAND_TIMEOUT_S * 1000)
    wait: bool = True


def _target(t: str | dict[str, str] | None) -> CommandTarget:
    if t is None:
        return CommandTarget()
    if isinstance(t, str):
        return CommandTarget(project=t)
    unknown = set(t) - {"node_id", "project", "session_id"}
    if unknown:
        raise ApiError("VALIDATION_ERROR", f"target: unknown keys {sorted(unknown)}")
    return CommandTarget(node_id=t.get("node_id"), project=t.get("project"), session_id=t.get("session_id"))


def _page(limit: int, offset: int) -> tuple[int, int]:
    if limit < 1 or limit > MAX_LIMIT:
        raise ApiError("VALIDATION_ERROR", f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0 or offset > MAX_OFFSET:
        raise ApiError("VALIDATION_ERROR", f"offset must be between 0 and {MAX_OFFSET}")
    return limit, offset


def _since(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        ts = parse_ts(value)
    except (OverflowError, ValueError):
        ts = None
    if ts is None:
        raise ApiError("VALIDATION_ERROR", f"since: not a timestamp: {value!r} (use ISO-8601 or unix seconds)")
    return ts


# ----- helpers shared by every route module (auth, env, remediations...) -----

def auth_dependency(sup: Supervisor, role: Role = Role.admin) -> list[Any]:
    """FastAPI dependency list of a route that needs at least `role` (issue 14).

    The bearer token must be a named operator credential (agent tokens never are): none or unknown -> 401
    AUTH_REQUIRED, a known one below `role` -> 403 FORBIDDEN. Only failures are throttled per address, and a
    valid token is checked first, so a flood of bad tokens never locks a valid credential out. New routes
    get `admin` unless they declare less."""

    async def require_role(request: Request) -> Identity:
        addr = request.client.host if request.client else "?"
        ident = identify(bearer(request.headers.get("authorization")), sup.operators)
        if ident is None:
            if sup.api_throttle.blocked(addr):
                raise ApiError("RATE_LIMITED", "too many failed authentications; retry later")
            sup.api_throttle.failed(addr)
            raise ApiError("AUTH_REQUIRED", "missing or invalid bearer token")
        request.state.identity = ident
        CLIENT_ACTOR.set(client_actor_of(request))
        if not ident.allows(role):
            raise ApiError("FORBIDDEN", f"{ident.name} has role {ident.role.name}; this needs {role.name}")
        return ident

    require_role.role = role  # type: ignore[attr-defined]  # read by tests and docs tooling
    return [Depends(require_role)]


def require(sup: Supervisor) -> dict[Role, list[Any]]:
    """The three route dependency lists of one app, by minimum role."""
    return {role: auth_dependency(sup, role) for role in Role}


def actor_of(request: Request) -> tuple[str, str | None]:
    """(audit actor = the authenticated token's name, client address). `X-HAL-Actor` never replaces it;
    it is recorded beside it (`client_actor`)."""
    ident = getattr(request.state, "identity", None)
    return (ident.name if ident is not None else "api"), request.client.host if request.client else None


def client_actor_of(request: Request) -> str | None:
    """What the client says it is (`X-HAL-Actor`, e.g. halctl's user@host), for the audit log only."""
    value = (request.headers.get("x-hal-actor") or "").strip()
    return value[:100] or None


def require_command_role(request: Request, ctype: str) -> None:
    """`POST /api/v1/commands` carries any type: credential types need an admin like their own routes."""
    try:
        needed = command_role(normalize_type(ctype))
    except CommandError:
        return  # unknown type: the dispatcher refuses it with its own message
    ident: Identity | None = getattr(request.state, "identity", None)
    if ident is not None and not ident.allows(needed):
        raise ApiError("FORBIDDEN", f"{ident.name} has role {ident.role.name}; command {ctype} needs {needed.name}")


def find_node(sup: Supervisor, node_id: str) -> Any:
    node = sup.nodes.get(node_id)
    if node is None:
        raise ApiError("NOT_FOUND", f"node {node_id} not found")
    return node


def raise_for(res: Result) -> None:
    """Map a command that did not succeed to TIMEOUT (504) or DISPATCH_ERROR (502)."""
    if res.status == "timeout":
        raise ApiError("TIMEOUT", f"{res.type}: {res.error or 'timed out'} (command {res.command_id})")
    if res.status != "success":
        raise ApiError("DISPATCH_ERROR",
                       f"{res.type} failed on {res.node_id}: {res.error or 'no detail'} (command {res.command_id})")


def install_error_handling(app: FastAPI, max_body: int, on_internal: Callable[[], None] | None = None) -> None:
    """Every error as `{"error", "code"}` with a SPEC 6 code, including framework errors and crashes."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return err(exc.code, exc.message, exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return err("BAD_REQUEST", f"method {request.method} is not allowed on {request.url.path}")
        if exc.status_code == 404:
            return err("NOT_FOUND", "not found")
        code = {401: "AUTH_REQUIRED", 403: "FORBIDDEN", 409: "CONFLICT", 429: "RATE_LIMITED", 502: "DISPATCH_ERROR",
                503: "SERVICE_UNAVAILABLE", 504: "TIMEOUT"}.get(
            exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR")
        return err(code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
        return err("VALIDATION_ERROR", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error: %s", exc)
        if on_internal is not None:
            on_internal()
        return err("INTERNAL_ERROR", "internal error; see the supervisor log")

    app.add_middleware(RequestGuard, max_body=max_body, on_internal=on_internal)


def build_app(sup: Supervisor) -> FastAPI:
    app = FastAPI(title="hal-supervisor", version=__version__, openapi_url="/openapi.json", docs_url=None,
                  redoc_url=None)
    install_error_handling(app, sup.config.max_body_bytes,
                           on_internal=lambda: sup.metrics.errors_total.labels("api", "internal").inc())

    # ----- auth -----

    need = require(sup)
    viewer, operator = need[Role.viewer], need[Role.operator]

    # ----- health -----

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        return {"status": "alive", "version": __version__}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        components = await sup.readiness()
        failing = [k for k, v in components.items() if v["status"] != "ok"]
        body: dict[str, Any] = {"status": "ok" if not failing else "unavailable", "components": components}
        if failing:
            body |= {"error": f"not ready: {', '.join(failing)}", "code": "SERVICE_UNAVAILABLE"}
        return JSONResponse(body, status_code=200 if not failing else 503)

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        sup.refresh_gauges()
        return PlainTextResponse(generate_latest(sup.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ----- nodes -----

    @app.get("/api/v1/nodes", dependencies=viewer, tags=["nodes"])
    async def list_nodes(status: str | None = None, project: str | None = None, limit: Limit = 100,
                         offset: Offset = 0) -> JSONResponse:
        limit, offset = _page(limit, offset)
        nodes = sorted(sup.nodes.values(), key=lambda n: n.id)
        if status:
            nodes = [n for n in nodes if n.status == status]
        if project:
            nodes = [n for n in nodes if project in n.project_names]
        page = nodes[offset:offset + limit]
        return ok([n.to_api() for n in page], meta={"total": len(nodes), "limit": limit, "offset": offset})

    def node_or_404(node_id: str) -> Any:
        return find_node(sup, node_id)

    @app.get("/api/v1/nodes/{node_id}", dependencies=viewer, tags=["nodes"])
    async def get_node(node_id: str) -> JSONResponse:
        node = node_or_404(node_id)
        data = node.to_api()
        data["sessions"] = [s.id for s in sup.tracker.list(node_id=node_id)]
        return ok(data)

    @app.get("/api/v1/nodes/{node_id}/auth", dependencies=viewer, tags=["nodes"])
    async def node_auth(node_id: str) -> JSONResponse:
        node = node_or_404(node_id)
        expected = sup.config.raw.get("credentials", {}).get("version") if isinstance(
            sup.config.raw.get("credentials"), dict) else None
        if node.credential_version is None or expected is None:
            sync = "unknown"
        else:
            sync = "in_sync" if node.credential_version == expected else "drift_detected"
        return ok({"node_id": node.id, "auth_states": node.auth_states, "credential_sync": sync,
                   "credential_version": node.credential_version})

    # ----- sessions -----

    @app.get("/api/v1/sessions", dependencies=viewer, tags=["sessions"])
    async def list_sessions(project: str | None = None, status: str | None = None, node_id: str | None = None,
                            limit: Limit = 100, offset: Offset = 0) -> JSONResponse:
        limit, offset = _page(limit, offset)
        items = sup.tracker.list(project=project or None, status=status or None, node_id=node_id or None)
        return ok([s.to_api() for s in items[offset:offset + limit]],
                  meta={"total": len(items), "limit": limit, "offset": offset})

    def session_or_404(session_id: str) -> Any:
        s = sup.tracker.get(session_id)
        if s is None:
            raise ApiError("NOT_FOUND", f"session {session_id} not found")
        return s

    @app.get("/api/v1/sessions/{session_id}", dependencies=viewer, tags=["sessions"])
    async def get_session(session_id: str) -> JSONResponse:
        return ok(session_or_404(session_id).to_api())

    async def run_command(request: Request, ctype: str, target: CommandTarget, args: dict[str, Any],
                          idem: str | None = None, timeout: float | None = None) -> Result:
        actor, ip = actor_of(request)
        try:
            res = await sup.dispatcher.dispatch(ctype, target, args, actor=actor, ip=ip, idempotency_key=idem,
                                                timeout=timeout)
        except CommandError as exc:
            raise ApiError(exc.code, exc.message) from None
        return res

    @app.post("/api/v1/sessions", dependencies=operator, tags=["sessions"], status_code=201)
    async def create_session(body: CreateSessionBody, request: Request) -> JSONResponse:
        args = {"project": body.project}
        if body.prompt:
            args["prompt"] = body.prompt
        if body.model:
            args["model"] = body.model
        res = await run_command(request, "create_session", CommandTarget(project=body.project, node_id=body.node_id),
                                args, body.idempotency_key)
        raise_for(res)
        session = await sup.apply_command_output(res)
        if session is None:
            raise ApiError("DISPATCH_ERROR", f"agent {res.node_id} created no session it could describe")
        return ok(session.to_api() | {"command_id": res.command_id}, status=201)

    @app.post("/api/v1/sessions/{session_id}/prompt", dependencies=operator, tags=["sessions"])
    async def prompt_session(session_id: str, body: PromptBody, request: Request) -> JSONResponse:
        session_or_404(session_id)
        res = await run_command(request, "prompt_session", CommandTarget(session_id=session_id),
                                {"session_id": session_id, "message": body.message}, body.idempotency_key)
        raise_for(res)
        await sup.apply_command_output(res)
        return ok(res.to_api())

    async def session_action(session_id: str, ctype: str, request: Request) -> JSONResponse:
        session_or_404(session_id)
        res = await run_command(request, ctype, CommandTarget(session_id=session_id), {"session_id": session_id})
        raise_for(res)
        await sup.apply_command_output(res)
        return ok(res.to_api())

    @app.post("/api/v1/sessions/{session_id}/resume", dependencies=operator, tags=["sessions"])
    async def resume(session_id: str, request: Request) -> JSONResponse:
        return await session_action(session_id, "resume", request)

    @app.post("/api/v1/sessions/{session_id}/restart", dependencies=operator, tags=["sessions"])
    async def restart(session_id: str, request: Request) -> JSONResponse:
        return await session_action(session_id, "restart_session", request)

    @app.post("/api/v1/sessions/{session_id}/handover", dependencies=operator, tags=["sessions"])
    async def handover(session_id: str, request: Request) -> JSONResponse:
        return await session_action(session_id, "handover", request)

    @app.delete("/api/v1/sessions/{session_id}", dependencies=operator, tags=["sessions"])
    async def kill(session_id: str, request: Request) -> JSONResponse:
        return await session_action(session_id, "kill_session", request)

    # ----- events -----

    def event_filters(session_id: str | None, project: str | None, node_id: str | None, type: str | None,
                      since: str | None) -> dict[str, Any]:
        return {"session_id": session_id, "project": project, "node_id": node_id, "type": type,
                "since": _since(since)}

    @app.get("/api/v1/events", dependencies=viewer, tags=["events"])
    async def list_events(session_id: str | None = None, project: str | None = None, node_id: str | None = None,
                          type: str | None = None, since: str | None = None, limit: Limit = 100, offset: Offset = 0,
                          order: str = Query("asc", pattern="^(asc|desc)$")) -> JSONResponse:
        limit, offset = _page(limit, offset)
        f = event_filters(session_id, project, node_id, type, since)
        items, total = await sup.reader.run(lambda c: queries.query_events(c, f, limit, offset, order))
        return ok(items, meta={"total": total, "limit": limit, "offset": offset})

    @app.get("/api/v1/events/stream", dependencies=viewer, tags=["events"])
    async def stream_events(request: Request, session_id: str | None = None, project: str | None = None,
                            node_id: str | None = None, type: str | None = None,
                            since: str | None = None) -> StreamingResponse:
        f = event_filters(session_id, project, node_id, type, since)
        return StreamingResponse(_sse(sup, request, f), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ----- commands -----

    @app.post("/api/v1/commands", dependencies=operator, tags=["commands"],
              responses={202: {"description": "Accepted (wait: false)"}})
    async def post_command(body: CommandBody, request: Request) -> JSONResponse:
        require_command_role(request, body.type)
        target = _target(body.target)
        if not (target.node_id or target.project or target.session_id):
            sid = body.args.get("session_id")
            if isinstance(sid, str) and sid:
                target = CommandTarget(session_id=sid)
        timeout = body.timeout_ms / 1000 if body.timeout_ms else body.timeout
        if not body.wait:
            actor, ip = actor_of(request)
            try:
                command_id = await sup.dispatch_background(body.type, target, body.args, actor=actor, ip=ip,
                                                           idempotency_key=body.idempotency_key, timeout=timeout)
            except CommandError as exc:
                raise ApiError(exc.code, exc.message) from None
            return ok({"command_id": command_id, "status": "pending"}, status=202)
        res = await run_command(request, body.type, target, body.args, body.idempotency_key, timeout)
        if res.status == "success":
            await sup.apply_command_output(res)
        return ok(res.to_api())

    @app.get("/api/v1/commands/{command_id}", dependencies=viewer, tags=["commands"])
    async def get_command(command_id: str) -> JSONResponse:
        row = await sup.reader.run(lambda c: c.execute("SELECT * FROM commands WHERE command_id=?",
                                                       (command_id,)).fetchone())
        if row is None:
            raise ApiError("NOT_FOUND", f"command {command_id} not found")
        return ok(_command_row(row))

    # ----- audit -----

    @app.get("/api/v1/audit", dependencies=viewer, tags=["audit"])
    async def audit(actor: str | None = None, action: str | None = None, since: str | None = None,
                    limit: Limit = 100, offset: Offset = 0) -> JSONResponse:
        limit, offset = _page(limit, offset)
        f = {"actor": actor, "action": action, "since": _since(since)}
        items, total = await sup.reader.run(lambda c: queries.query_audit(c, f, limit, offset))
        return ok(items, meta={"total": total, "limit": limit, "offset": offset})

    # ----- cost, policies, dependencies (issue 8) -----

    @app.get("/api/v1/cost", dependencies=viewer, tags=["cost"])
    async def cost(period: str = "today") -> JSONResponse:
        return await _cost_report(sup, period)

    # status/refresh (remediation cost-data-discrepancy) must precede /cost/{period}
    from halswarm.supervisor.cost_api import include_cost_routes

    include_cost_routes(app, sup)

    @app.get("/api/v1/cost/{period}", dependencies=viewer, tags=["cost"])
    async def cost_period(period: str) -> JSONResponse:
        return await _cost_report(sup, period)

    @app.get("/api/v1/policies", dependencies=viewer, tags=["policies"])
    async def policies() -> JSONResponse:
        return ok(sup.policies.snapshot())

    @app.get("/api/v1/dependencies", dependencies=viewer, tags=["dependencies"])
    async def dependencies() -> JSONResponse:
        return ok(await sup.dependencies.snapshot())

    # Auth routes live in their own module, which imports ApiError/ok from here.
    from halswarm.supervisor.auth_api import include_auth_routes

    include_auth_routes(app, sup)

    from halswarm.supervisor.env_api import include_env_routes

    include_env_routes(app, sup)

    from halswarm.supervisor.remediations_api import include_remediation_routes

    include_remediation_routes(app, sup)

    from halswarm.supervisor.openapi_doc import install_openapi

    install_openapi(app, list(STATUS_BY_CODE))

    from halswarm.supervisor.docs_ui import install_docs

    install_docs(app)
    return app


async def _cost_report(sup: Supervisor, period: str) -> JSONResponse:
    """`data` is exactly the report (SPEC 6); `meta.providers` tells each provider's poll state."""
    from halswarm.supervisor.costs import BadPeriod

    try:
        report = await sup.costs.report(period.strip().lower())
    except BadPeriod as exc:
        raise ApiError("VALIDATION_ERROR", str(exc)) from None
    return ok(report, meta={"providers": sup.costs.status()})


def _command_row(row: Any) -> dict[str, Any]:
    from halswarm.supervisor.timeutil import iso

    def j(v: Any) -> Any:
        try:
            return json.loads(v) if v is not None else None
        except ValueError:
            return v

    return {"command_id": row["command_id"], "type": row["type"], "target": j(row["target"]),
            "args": j(row["args"]), "node_id": row["node_id"], "status": row["status"], "output": j(row["output"]),
            "error": row["error"], "actor": row["actor"], "created_at": iso(row["created_at"]),
            "finished_at": iso(row["finished_at"])}


def _matches(ev: dict[str, Any], f: dict[str, Any]) -> bool:
    for key in ("session_id", "project", "node_id"):
        if f.get(key) and ev.get(key) != f[key]:
            return False
    t = f.get("type")
    if t:
        if t.endswith("*"):
            if not str(ev.get("type", "")).startswith(t[:-1]):
                return False
        elif ev.get("type") != t:
            return False
    return True


async def _sse(sup: Supervisor, request: Request, f: dict[str, Any]) -> AsyncIterator[bytes]:
    q = sup.ingestor.subscribe()
    try:
        last_id = 0
        if f.get("since") is not None:
            items, _ = await sup.reader.run(lambda c: queries.query_events(c, f, 1000, 0, "asc"))
            for ev in items:
                last_id = max(last_id, ev["id"])
                yield f"data: {json.dumps(ev, default=str)}\n\n".encode()
        yield b": connected\n\n"
        while True:
            if await request.is_disconnected() or not sup.ingestor.is_subscribed(q):
                return
            try:
                ev = await asyncio.wait_for(q.get(), 15.0)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if ev["id"] <= last_id or not _matches(ev, f):
                continue
            yield f"data: {json.dumps(ev, default=str)}\n\n".encode()
    finally:
        sup.ingestor.unsubscribe(q)
