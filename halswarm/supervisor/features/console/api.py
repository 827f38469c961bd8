"""`/ui`: the web console (issue 19). Pages are server-rendered from the same services as the API (via
``ConsolePorts``); actions are HTML forms posted with the login's CSRF token and audited under the
operator's name like their API routes. Not part of the OpenAPI document (HTML, cookie auth)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from halswarm.core.paging import CursorError, PageRequest, page_request
from halswarm.core.remediation.catalog import INCIDENTS
from halswarm.core.roles import Role
from halswarm.core.sse import LastEventIdError, parse_last_event_id
from halswarm.supervisor.apikit.deps import service
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.console import web
from halswarm.supervisor.features.console.conversation import build
from halswarm.supervisor.features.console.logins import COOKIE, Login
from halswarm.supervisor.features.console.service import CLIENT, ConsoleService
from halswarm.supervisor.security import CLIENT_ACTOR

router = APIRouter(prefix=web.PREFIX, include_in_schema=False)
Console = Annotated[ConsoleService, service(ConsoleService)]

PAGE_ROWS = 50
CONVERSATION_EVENTS = 3000  # newest events of a session read for its conversation
SESSION_STATUSES = ("running", "idle", "waiting_input", "error", "unreachable", "completed", "killed")
NODE_STATUSES = ("online", "offline", "degraded")
STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
ACTIONS = ("resume", "handover", "kill")
REPLIES = ("once", "always", "reject")

Page = Callable[[Login], Awaitable[Response]]


def _addr(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _login(console: ConsoleService, request: Request) -> Login | None:
    login = await console.logins.lookup(request.cookies.get(COOKIE))
    if login is not None:
        request.state.identity = login.identity
        CLIENT_ACTOR.set(CLIENT)
    return login


def _ctx(login: Login, page: str, **extra: Any) -> dict[str, Any]:
    return {"page": page, "user": login.identity.name, "role": login.identity.role.name,
            "can_act": login.identity.allows(Role.operator), "csrf": login.csrf, "flash": login.flash, **extra}


def _error(login: Login | None, status: int, message: str, back: str = "/ui/") -> HTMLResponse:
    ctx = _ctx(login, "error") if login is not None else {"page": "error"}
    return web.render("error.html", status, message=message, back=back, **ctx)


async def _view(console: ConsoleService, request: Request, page: Page, *, full: bool = True) -> Response:
    """A page for any logged-in role; without a login, 303 to the login page. A full page shows (and
    consumes) the login's flash message, the outcome of its last action; a live fragment leaves it."""
    login = await _login(console, request)
    if login is None:
        return web.redirect("/ui/login")
    if full:
        login.flash = console.take_flash(login)
    try:
        return await page(login)
    except CursorError as exc:
        return _error(login, 400, f"after/before: {exc}")
    except ApiError as exc:
        return _error(login, exc.status, exc.message)


async def _act(console: ConsoleService, request: Request, back: str,
               action: Callable[[Login, dict[str, str]], Awaitable[Response]]) -> Response:
    """A state change: same origin, a login, the CSRF token and the operator role, or a refusal; then the
    action, whose ApiError is shown as an error page with the API's status."""
    if not web.same_origin(request):
        return _error(None, 403, "cross-site request refused")
    login = await _login(console, request)
    if login is None:
        return web.redirect("/ui/login")
    try:
        fields = await web.form(request)
    except web.BadForm as exc:
        return _error(login, 400, str(exc), back)
    if not console.logins.csrf_ok(login, fields.get("csrf") or request.headers.get("x-csrf-token")):
        return _error(login, 403, "missing or wrong CSRF token: reload the page and try again", back)
    if not login.identity.allows(Role.operator):
        return _error(login, 403, f"{login.identity.name} has role {login.identity.role.name}; this needs operator",
                      back)
    try:
        return await action(login, fields)
    except ApiError as exc:
        return _error(login, exc.status, exc.message, back)


def _page_req(request: Request, shape: str, limit: int = PAGE_ROWS) -> PageRequest:
    q = request.query_params
    return page_request(limit, 0, q.get("after") or None, q.get("before") or None, shape)


def _same_query(request: Request) -> str:
    """This page's own query (filters and cursor), for its live fragment: a refresh keeps the page shown."""
    q = request.url.query
    return "?" + q if q and len(q) <= 2000 else ""


def _params(request: Request, *names: str) -> dict[str, str]:
    return {n: v[:200] for n in names if (v := request.query_params.get(n, "").strip())}


# ----- login -----

@router.get("/login")
async def login_page(console: Console, request: Request) -> Response:
    if await _login(console, request) is not None:
        return web.redirect("/ui/")
    return web.render("login.html", page="login", error=None)


@router.post("/login")
async def login(console: Console, request: Request) -> Response:
    if not web.same_origin(request):
        return _error(None, 403, "cross-site request refused")
    addr = _addr(request)
    try:
        token = (await web.form(request)).get("token", "")
    except web.BadForm as exc:
        return web.render("login.html", 400, page="login", error=str(exc))
    # As the API: a valid token is checked first, so a flood of bad ones never locks a valid credential out.
    blocked = console.logins.blocked(addr)
    ident = console.logins.authenticate(token, addr)
    if ident is None and blocked:
        return web.render("login.html", 429, page="login",
                          error="too many failed logins from this address; retry later")
    if ident is None:
        return web.render("login.html", 401, page="login",
                          error="unknown token: use an API token of a viewer, operator or admin")
    sid, _ = await console.logins.open(ident)
    await console.audit(ident.name, "console_login", "/ui", "success", ip=addr, args={"role": ident.role.name})
    resp = web.redirect("/ui/")
    web.set_login_cookie(resp, sid, request, int(console.settings.max_sec))
    return resp


@router.post("/logout")
async def logout(console: Console, request: Request) -> Response:
    login = await _login(console, request)
    if login is None:
        return web.redirect("/ui/login")
    try:
        fields = await web.form(request)
    except web.BadForm as exc:
        return _error(login, 400, str(exc))
    if not web.same_origin(request) or not console.logins.csrf_ok(login, fields.get("csrf")):
        return _error(login, 403, "missing or wrong CSRF token: reload the page and try again")
    await console.logins.close(login)
    await console.audit(login.identity.name, "console_logout", "/ui", "success", ip=_addr(request))
    resp = web.redirect("/ui/login")
    web.clear_login_cookie(resp, request)
    return resp


@router.get("/whoami")
async def whoami(console: Console, request: Request) -> Response:
    """204 with a login, 401 without: how a page whose stream dropped tells a restart from a logout."""
    login = await _login(console, request)
    return Response(status_code=401 if login is None else 204, headers={"Cache-Control": "no-store"})


@router.get("/static/{name}")
async def static(name: str) -> Response:
    ctype = STATIC.get(name)
    if ctype is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body = resources.files("halswarm.supervisor.features.console").joinpath("static", name).read_bytes()
    return Response(body, media_type=ctype, headers={"Cache-Control": "public, max-age=300",
                                                     "X-Content-Type-Options": "nosniff"})


# ----- pages -----

async def _fleet_context(console: ConsoleService, request: Request, login: Login) -> dict[str, Any]:
    params = _params(request, "status", "project")
    got, total = await console.ports.nodes.page(params.get("status"), params.get("project"), _page_req(request, "s"))
    drift, _meta = await console.ports.env.drift(None, None)
    drifted: dict[str, int] = {}
    for d in drift:
        drifted[str(d.get("node_id"))] = drifted.get(str(d.get("node_id")), 0) + 1
    rows = [n.to_api() | {"drift": drifted.get(n.id, 0)} for n in got.items]
    return _ctx(login, "fleet", nodes=rows, total=total, page_obj=got, params=params, statuses=NODE_STATUSES,
                live_query=_same_query(request))


@router.get("/")
async def fleet(console: Console, request: Request) -> Response:
    async def page(login: Login) -> Response:
        return web.render("fleet.html", **await _fleet_context(console, request, login))
    return await _view(console, request, page)


@router.get("/fleet/live")
async def fleet_live(console: Console, request: Request) -> Response:
    """The fleet table alone, fetched again when a node comes online or goes offline."""
    async def page(login: Login) -> Response:
        return web.render("fleet_table.html", **await _fleet_context(console, request, login))
    return await _view(console, request, page, full=False)


async def _sessions_context(console: ConsoleService, request: Request, login: Login) -> dict[str, Any]:
    params = _params(request, "node_id", "status", "project", "q")
    got, total = await console.ports.sessions.page(params.get("project"), params.get("status"),
                                                   params.get("node_id"), _page_req(request, "fs"),
                                                   q=params.get("q"))
    return _ctx(login, "sessions", sessions=[s.to_api() for s in got.items], total=total, page_obj=got,
                params=params, statuses=SESSION_STATUSES, live_query=_same_query(request))


@router.get("/sessions")
async def sessions(console: Console, request: Request) -> Response:
    async def page(login: Login) -> Response:
        return web.render("sessions.html", **await _sessions_context(console, request, login))
    return await _view(console, request, page)


@router.get("/sessions/live")
async def sessions_live(console: Console, request: Request) -> Response:
    """The current page of the sessions table alone (same filters and cursor, at most PAGE_ROWS rows),
    fetched again on `session.*` events: a status change or a new session shows without a reload."""
    async def page(login: Login) -> Response:
        return web.render("sessions_table.html", **await _sessions_context(console, request, login))
    return await _view(console, request, page, full=False)


async def _session_context(console: ConsoleService, login: Login, session_id: str) -> dict[str, Any]:
    s = await console.ports.sessions.get(session_id)
    events, _total, _est = await console.ports.events.page({"session_id": session_id},
                                                           PageRequest(CONVERSATION_EVENTS), "desc")
    pending, _n, _now = await console.ports.approvals.page(PageRequest(200), session_id=session_id)
    return _ctx(login, "session", session=s.to_api(), messages=build(reversed(events.items)),
                pending={a["id"] for a in pending.items}, truncated=events.next is not None)


@router.get("/sessions/{session_id}")
async def session(console: Console, request: Request, session_id: str) -> Response:
    async def page(login: Login) -> Response:
        return web.render("session.html", **await _session_context(console, login, session_id))
    return await _view(console, request, page)


@router.get("/sessions/{session_id}/live")
async def session_live(console: Console, request: Request, session_id: str) -> Response:
    """The live part of a session page (status, conversation, buttons), fetched again on each event."""
    async def page(login: Login) -> Response:
        return web.render("session_live.html", **await _session_context(console, login, session_id))
    return await _view(console, request, page, full=False)


async def _approvals_context(console: ConsoleService, request: Request, login: Login) -> dict[str, Any]:
    params = _params(request, "node_id", "project")
    got, total, _now = await console.ports.approvals.page(_page_req(request, "fs"), node_id=params.get("node_id"),
                                                          project=params.get("project"))
    return _ctx(login, "approvals", approvals=got.items, total=total, page_obj=got, params=params,
                live_query=_same_query(request))


@router.get("/approvals")
async def approvals(console: Console, request: Request) -> Response:
    async def page(login: Login) -> Response:
        return web.render("approvals.html", **await _approvals_context(console, request, login))
    return await _view(console, request, page)


@router.get("/approvals/live")
async def approvals_live(console: Console, request: Request) -> Response:
    async def page(login: Login) -> Response:
        return web.render("approvals_table.html", **await _approvals_context(console, request, login))
    return await _view(console, request, page, full=False)


@router.get("/cost")
async def cost(console: Console, request: Request) -> Response:
    async def page(login: Login) -> Response:
        period = request.query_params.get("period", "month")
        if period not in ("today", "week", "month"):
            period = "month"
        totals = {p: (await console.ports.cost.report(p))[0] for p in ("today", "week", "month")}
        report = totals[period]
        chart = web.bar_chart([(str(r["project"]), float(r["cost_usd"])) for r in report["by_project"]])
        return web.render("cost.html", **_ctx(login, "cost", totals=totals, report=report, period=period,
                                              chart=chart))
    return await _view(console, request, page)


@router.get("/remediations")
async def remediations(console: Console, request: Request) -> Response:
    async def page(login: Login) -> Response:
        params = _params(request, "incident", "status", "host")
        try:
            offset = max(0, min(int(request.query_params.get("offset", "0")), 1_000_000))
        except ValueError:
            offset = 0
        items, total = await console.ports.remediations.history(
            incident=params.get("incident"), status=params.get("status"), host=params.get("host"), since=None,
            limit=PAGE_ROWS, offset=offset)
        return web.render("remediations.html", **_ctx(login, "remediations", items=items, total=total, params=params,
                                                      offset=offset, limit=PAGE_ROWS, incidents=INCIDENTS))
    return await _view(console, request, page)


@router.get("/audit")
async def audit(console: Console, request: Request) -> Response:
    async def page(login: Login) -> Response:
        params = _params(request, "actor", "action")
        got, total, estimate = await console.ports.audit.page(params.get("actor"), params.get("action"), None,
                                                              _page_req(request, "fi"))
        return web.render("audit.html", **_ctx(login, "audit", rows=got.items, total=total, estimate=estimate,
                                               page_obj=got, params=params))
    return await _view(console, request, page)


@router.get("/events/stream")
async def stream(console: Console, request: Request) -> Response:
    """The supervisor's event stream (the API's `/api/v1/events/stream`, same service) for a logged-in page:
    EventSource sends the cookie but cannot send a bearer header. 401 without a login (the page then
    reloads, which leads to the login page)."""
    login = await _login(console, request)
    if login is None:
        return Response("login required", status_code=401, media_type="text/plain")
    params = _params(request, "session_id", "node_id", "project", "type")
    filters: dict[str, Any] = {k: params.get(k) for k in ("session_id", "project", "node_id", "type")}
    filters["since"] = None
    try:
        last_seen = parse_last_event_id(request.headers.get("last-event-id"))
    except LastEventIdError as exc:
        return Response(str(exc), status_code=400, media_type="text/plain")
    return StreamingResponse(console.ports.events.stream(filters, last_seen), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# ----- actions -----

@router.post("/sessions")
async def start(console: Console, request: Request) -> Response:
    async def action(login: Login, f: dict[str, str]) -> Response:
        project = f.get("project", "").strip()
        if not project:
            return _error(login, 400, "project: required", "/ui/sessions")
        out = await console.ports.sessions.create(project, f.get("prompt") or None, None,
                                                  f.get("node_id", "").strip() or None, None,
                                                  actor=login.identity.name, ip=_addr(request))
        console.flash(login, f"session {out['id']} started on {out.get('node_id') or 'a node'}")
        return web.redirect(f"/ui/sessions/{quote(str(out['id']), safe='')}")
    return await _act(console, request, "/ui/sessions", action)


@router.post("/sessions/{session_id}/prompt")
async def prompt(console: Console, request: Request, session_id: str) -> Response:
    back = f"/ui/sessions/{session_id}"

    async def action(login: Login, f: dict[str, str]) -> Response:
        message = f.get("prompt", "")
        if not message.strip():
            return _error(login, 400, "prompt: required", back)
        await console.ports.sessions.prompt(session_id, message, None, actor=login.identity.name, ip=_addr(request))
        console.flash(login, "prompt sent")
        return web.redirect(back)
    return await _act(console, request, back, action)


@router.post("/sessions/{session_id}/{verb}")
async def session_action(console: Console, request: Request, session_id: str, verb: str) -> Response:
    back = f"/ui/sessions/{session_id}"

    async def action(login: Login, _f: dict[str, str]) -> Response:
        if verb not in ACTIONS:
            return _error(login, 404, f"no action {verb[:40]!r} (one of {', '.join(ACTIONS)})", back)
        out = await console.ports.sessions.act(session_id, verb, actor=login.identity.name, ip=_addr(request))
        successor = _successor(out) if verb == "handover" else None
        console.flash(login, f"{verb}: done" + (f", new session {successor}" if successor else ""))
        return web.redirect(f"/ui/sessions/{quote(successor, safe='')}" if successor else back)
    return await _act(console, request, back, action)


def _successor(result: dict[str, Any]) -> str | None:
    """The new session a handover started (its command output's `session.id`), if it names one."""
    output = result.get("output")
    session = output.get("session") if isinstance(output, dict) else None
    sid = session.get("id") if isinstance(session, dict) else None
    return sid if isinstance(sid, str) and sid else None


@router.post("/approvals/{approval_id}")
async def reply(console: Console, request: Request, approval_id: str) -> Response:
    async def action(login: Login, f: dict[str, str]) -> Response:
        back = web.safe_back(f.get("back"), "/ui/approvals")
        answer = f.get("reply", "")
        if answer not in REPLIES:
            return _error(login, 400, f"reply must be one of {', '.join(REPLIES)}", back)
        await console.ports.approvals.reply(approval_id, answer, f.get("message") or None,
                                            actor=login.identity.name, ip=_addr(request))
        console.flash(login, f"{approval_id}: {answer} sent")
        return web.redirect(back)
    return await _act(console, request, "/ui/approvals", action)


@router.post("/remediate")
async def remediate(console: Console, request: Request) -> Response:
    async def action(login: Login, f: dict[str, str]) -> Response:
        mode = f.get("mode", "check")
        if mode not in ("check", "apply"):
            return _error(login, 400, "mode must be check or apply", "/ui/remediations")
        incident, host = f.get("incident", "").strip(), f.get("host", "").strip() or None
        out = await console.remediate(login, incident, host, apply=mode == "apply", ip=_addr(request))
        return web.render("remediate_result.html", **_ctx(login, "remediations", result=out, mode=mode,
                                                          incident=incident, host=host or ""))
    return await _act(console, request, "/ui/remediations", action)
