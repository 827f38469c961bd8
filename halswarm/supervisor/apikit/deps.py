"""Typed request dependencies for feature routers: who is calling (and with which role), paging bounds,
and the feature's service taken from the app's registry (never a closure over the supervisor)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request

from halswarm.core.paging import MAX_CURSOR_CHARS, CursorError, PageRequest, page_request
from halswarm.core.roles import Identity, Role, identify
from halswarm.core.timeutil import parse_ts
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.apikit.registry import Services
from halswarm.supervisor.security import CLIENT_ACTOR, FailureThrottle, bearer

T = TypeVar("T")
ALERT_ACTOR = "alertmanager"  # the audit actor of the `alerts.token` credential

MAX_LIMIT = 10_000
# Far past any table, far below SQLite's 64-bit OFFSET (2^63 and up would overflow into a 500).
MAX_OFFSET = 1_000_000_000
# The bounds, declared for the OpenAPI document too (a violation is a 400 VALIDATION_ERROR either way).
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
# Keyset paging (docs/paging.md): opaque cursors from a previous answer's `meta.next` / `meta.prev`.
After = Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS,
                                    description="Rows after this cursor (a previous answer's meta.next).")]
Before = Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS,
                                     description="Rows before this cursor (a previous answer's meta.prev).")]


class OperatorGate:
    """The named operator credentials of the API (issue 14) and the throttle of failed attempts."""

    def __init__(self, operators: tuple[Identity, ...], throttle: FailureThrottle | None = None, *,
                 alert_poster: Identity | None = None) -> None:
        self.operators = operators
        self.throttle = throttle or FailureThrottle()
        # The `alerts.token` identity: known (so 403, not 401, elsewhere) but allowed only `admit_alerts`.
        self.alert_poster = alert_poster

    def admit(self, header: str | None, addr: str, role: Role) -> Identity:
        """The caller's identity if it may use a route needing `role`.

        None or unknown -> AUTH_REQUIRED, known but below `role` -> FORBIDDEN. Only failures are throttled
        per address, and a valid token is checked first, so a flood of bad tokens never locks a valid
        credential out."""
        ident = identify(bearer(header), self.operators)
        if ident is None and self._is_alert_poster(header):
            raise ApiError("FORBIDDEN", f"{ALERT_ACTOR} may only post alerts (POST /api/v1/alerts)")
        if ident is None:
            if self.throttle.blocked(addr):
                raise ApiError("RATE_LIMITED", "too many failed authentications; retry later")
            self.throttle.failed(addr)
            raise ApiError("AUTH_REQUIRED", "missing or invalid bearer token")
        if not ident.allows(role):
            raise ApiError("FORBIDDEN", f"{ident.name} has role {ident.role.name}; this needs {role.name}")
        return ident


    def admit_alerts(self, header: str | None, addr: str) -> Identity:
        """The caller of POST /api/v1/alerts: the alert token's identity, or an admin."""
        if self._is_alert_poster(header):
            assert self.alert_poster is not None
            return self.alert_poster
        return self.admit(header, addr, Role.admin)

    def _is_alert_poster(self, header: str | None) -> bool:
        return self.alert_poster is not None and identify(bearer(header), (self.alert_poster,)) is not None


def alert_poster(token: str | None) -> Identity | None:
    """The identity of `alerts.token` (never one of the operators: it has no role on other routes)."""
    return Identity(ALERT_ACTOR, Role.viewer, token) if token else None


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def service(cls: type[T]) -> Any:
    """``Annotated[Cls, service(Cls)]``: the app's instance of ``Cls``."""

    def provide(request: Request) -> T:
        return services_of(request).get(cls)

    provide.__name__ = f"provide_{cls.__name__}"
    return Depends(provide)


def require_role(role: Role) -> Callable[[Request], Awaitable[Identity]]:
    """The dependency of a route that needs at least `role`; it carries `.role` for the OpenAPI document
    and the role matrix test."""

    async def authorize(request: Request) -> Identity:
        addr = request.client.host if request.client else "?"
        ident = services_of(request).get(OperatorGate).admit(request.headers.get("authorization"), addr, role)
        request.state.identity = ident
        CLIENT_ACTOR.set(client_actor_of(request))
        return ident

    authorize.role = role  # type: ignore[attr-defined]
    authorize.__name__ = f"require_{role.name}"
    return authorize


async def _alert_poster_or_admin(request: Request) -> Identity:
    addr = request.client.host if request.client else "?"
    ident = services_of(request).get(OperatorGate).admit_alerts(request.headers.get("authorization"), addr)
    request.state.identity = ident
    CLIENT_ACTOR.set(client_actor_of(request))
    return ident


_alert_poster_or_admin.role = Role.admin  # type: ignore[attr-defined]  # for the OpenAPI document: authenticated
# POST /api/v1/alerts: the dedicated alert token or an admin.
ALERT_POSTER = Depends(_alert_poster_or_admin)

_VIEWER, _OPERATOR, _ADMIN = (require_role(r) for r in (Role.viewer, Role.operator, Role.admin))
# For `dependencies=[...]` of routes that do not need the identity itself.
VIEWER, OPERATOR, ADMIN = Depends(_VIEWER), Depends(_OPERATOR), Depends(_ADMIN)
# For handlers that do.
Viewer = Annotated[Identity, VIEWER]
Operator = Annotated[Identity, OPERATOR]
Admin = Annotated[Identity, ADMIN]


def client_actor_of(request: Request) -> str | None:
    """What the client says it is (`X-HAL-Actor`, e.g. halctl's user@host), for the audit log only."""
    value = (request.headers.get("x-hal-actor") or "").strip()
    return value[:100] or None


class Caller:
    """Who asks, for the audit log: the authenticated token's name, its address and what it says it is.
    `X-HAL-Actor` never replaces the name; it is recorded beside it (`client_actor`)."""

    def __init__(self, request: Request) -> None:
        ident = getattr(request.state, "identity", None)
        self.identity: Identity | None = ident
        self.actor = ident.name if ident is not None else "api"
        self.ip = request.client.host if request.client else None
        self.client_actor = client_actor_of(request)


CallerDep = Annotated[Caller, Depends(Caller)]


def actor_of(request: Request) -> tuple[str, str | None]:
    caller = Caller(request)
    return caller.actor, caller.ip


def page(limit: int, offset: int) -> tuple[int, int]:
    if limit < 1 or limit > MAX_LIMIT:
        raise ApiError("VALIDATION_ERROR", f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0 or offset > MAX_OFFSET:
        raise ApiError("VALIDATION_ERROR", f"offset must be between 0 and {MAX_OFFSET}")
    return limit, offset


def cursor_page(limit: int, offset: int, after: str | None, before: str | None, shape: str) -> PageRequest:
    """The page asked for: `after`/`before` cursors (of key `shape`, see core.paging) or `offset`;
    a cursor this listing did not hand out is a VALIDATION_ERROR."""
    limit, offset = page(limit, offset)
    try:
        return page_request(limit, offset, after, before, shape)
    except CursorError as exc:
        raise ApiError("VALIDATION_ERROR", f"after/before: {exc}") from None


def parse_since(value: str | None) -> float | None:
    """`since=` as an epoch: ISO-8601 or unix seconds; anything else is a VALIDATION_ERROR."""
    if value is None or value == "":
        return None
    try:
        ts = parse_ts(value)
    except (OverflowError, ValueError):
        ts = None
    if ts is None:
        raise ApiError("VALIDATION_ERROR", f"since: not a timestamp: {value!r} (use ISO-8601 or unix seconds)")
    return ts


def role_dependencies() -> dict[Role, list[Any]]:
    """`dependencies=` lists by minimum role, for route modules not yet split into features."""
    return {Role.viewer: [VIEWER], Role.operator: [OPERATOR], Role.admin: [ADMIN]}
