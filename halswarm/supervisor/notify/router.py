"""Event routing: `routes[]` of {match, target} applied to every stored event, off the ingest path.

- A route with event patterns is checked when a matching event arrives. Its instant conditions
  (`cost.daily`, `cost.session`, `errors ... in ...`) are judged then; a `stuck > D` condition is
  judged D after the event (the session must have been quiet that long; a newer matching event
  restarts the wait).
- A route made of conditions only is checked every `routing.sweep_seconds` for the fleet
  (`cost.daily`) or for every live session (`stuck`, `cost.session`, `errors`), and sends a
  `condition` notification.
- Routes with conditions notify on the transition to true (per route and subject) and re-arm when a
  later check finds the condition false: one message per incident, not one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from halswarm.core.timeutil import iso, parse_ts
from halswarm.supervisor.notify.channels import Channel, ChannelError, resolve
from halswarm.supervisor.notify.conditions import Facts, evaluate
from halswarm.supervisor.notify.delivery import DeliveryService
from halswarm.supervisor.notify.formats import Notification
from halswarm.supervisor.notify.matcher import MatchError, MatchExpr, parse_match
from halswarm.supervisor.notify.settings import NotifySettings

log = logging.getLogger(__name__)

ERROR_SUFFIXES = (".error", ".failed", "_failed")
LIVE = frozenset({"running", "idle", "waiting_input", "error"})


def is_error_event(event_type: str) -> bool:
    return event_type == "error" or event_type.endswith(ERROR_SUFFIXES)


def subject_of(ev: Mapping[str, Any]) -> tuple[str, str] | None:
    for kind, key in (("session", "session_id"), ("project", "project"), ("node", "node_id")):
        if ev.get(key):
            return kind, str(ev[key])
    return None


class ErrorWindow:
    """Timestamps of recent error events per session, project and node."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon = horizon_s
        self.by: dict[tuple[str, str], deque[float]] = {}

    def add(self, ev: Mapping[str, Any], ts: float) -> None:
        for kind, key in (("session", "session_id"), ("project", "project"), ("node", "node_id")):
            if ev.get(key):
                self.by.setdefault((kind, str(ev[key])), deque()).append(ts)

    def count(self, subject: tuple[str, str] | None, window: float, now: float) -> int:
        if subject is None:
            return 0
        q = self.by.get(subject)
        if not q:
            return 0
        while q and q[0] < now - self.horizon:
            q.popleft()
        return sum(1 for t in q if t >= now - window)


@dataclass
class Route:
    index: int
    match: str
    target: str
    expr: MatchExpr | None = None
    channel: Channel | None = None
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.expr is not None and self.channel is not None

    def to_api(self) -> dict[str, Any]:
        return {"match": self.match, "target": self.channel.label if self.channel else self.target,
                "active": self.usable, "error": self.error}


@dataclass
class _Pending:
    event: dict[str, Any]
    session_id: str
    due: float


def parse_routes(settings: NotifySettings) -> list[Route]:
    """The configured routes; one whose match or target is unusable is kept, disabled, with its reason."""
    out = []
    for i, r in enumerate(settings.routes):
        route = Route(i, r.match, r.target)
        try:
            route.expr = parse_match(route.match)
            route.channel = resolve(route.target.strip(), settings.channels)
        except (MatchError, ChannelError) as exc:
            route.error = str(exc)
        out.append(route)
    return out


class Router:
    def __init__(self, settings: NotifySettings, tracker: Any, registry: CollectorRegistry | None = None, *,
                 daily_cost: Callable[[], float] = lambda: 0.0,
                 session_cost: Callable[[Any], float] = lambda s: float(s.cost_usd or 0.0),
                 clock: Callable[[], float] = time.time, client: httpx.AsyncClient | None = None) -> None:
        self.tracker = tracker
        self.daily_cost = daily_cost
        self.session_cost = session_cost
        self.clock = clock
        self.sweep_s = settings.sweep_s
        self.routes = parse_routes(settings)
        self._by_index = {r.index: r for r in self.routes}
        for r in self.routes:
            if r.error:
                log.warning("route %d (%r -> %s) is disabled: %s", r.index, r.match, r.target, r.error)
        self.delivery = DeliveryService(settings.delivery, registry, client)
        for r in self.routes:
            if r.usable and r.channel is not None:
                self.delivery.add_channel(r.channel)
        windows = [c.window or 0 for r in self.routes if r.expr for c in r.expr.conditions if c.metric == "errors"]
        self.errors = ErrorWindow(max(windows, default=600.0))
        self._event_routes = [r for r in self.routes if r.usable and r.expr and r.expr.patterns]
        self._fast = [(r, r.expr.regex.match, r.channel.target, not r.expr.conditions)  # type: ignore[union-attr]
                      for r in self._event_routes]
        self._sweep_routes = [r for r in self.routes if r.usable and r.expr and not r.expr.patterns]
        self._fired: dict[tuple[int, str], bool] = {}
        self._pending: dict[tuple[int, str], _Pending] = {}
        self._task: asyncio.Task[None] | None = None
        self.matched = 0

    @property
    def active(self) -> bool:
        return bool(self._event_routes or self._sweep_routes)

    def start(self) -> None:
        if not self.active:
            return
        self.delivery.start()
        self._task = asyncio.create_task(self._loop(), name="router-sweep")
        log.info("routing: %d routes to %s", len(self._event_routes) + len(self._sweep_routes),
                 ", ".join(sorted({r.channel.label for r in self.routes if r.channel and r.usable})))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self.delivery.stop()

    # ----- events (called by the feed, synchronously: must stay cheap) -----

    def on_event(self, ev: dict[str, Any]) -> None:
        etype = ev.get("type") or ""
        if etype == "approval.replied":  # the posted request's Discord message says who answered
            self.delivery.on_replied(ev)
        now: float | None = None
        if etype.endswith(ERROR_SUFFIXES) or etype == "error":
            now = self.clock()
            self.errors.add(ev, now)
        for route, match, target, plain in self._fast:
            if match(etype) is None:
                continue
            self.matched += 1
            if plain:  # no conditions: the common case, kept cheap
                self.delivery.submit(target, Notification(ev, route.match))
                continue
            expr = route.expr
            assert expr is not None
            if now is None:
                now = self.clock()
            stuck = expr.stuck
            if stuck is not None:
                sid = ev.get("session_id")
                if sid:
                    base = parse_ts(ev.get("timestamp")) or now
                    self._pending[(route.index, sid)] = _Pending(ev, sid, base + stuck.value)
                continue
            ok, values = evaluate(expr.conditions, self._facts(ev, now))
            self._edge(route, self._subject_key(expr, ev), ok, ev, values)

    def _facts(self, ev: Mapping[str, Any], now: float, stuck: float | None = None) -> Facts:
        session = self.tracker.get(ev["session_id"]) if ev.get("session_id") else None
        subject = subject_of(ev)
        return Facts(
            daily_cost=self.daily_cost(),
            session_cost=self.session_cost(session) if session is not None else None,
            stuck_seconds=stuck,
            errors_in=lambda w: self.errors.count(subject, w, now),
        )

    @staticmethod
    def _subject_key(expr: MatchExpr, ev: Mapping[str, Any]) -> str:
        if expr.scope == "global":
            return "*"
        if expr.scope == "session":
            return str(ev.get("session_id") or "-")
        s = subject_of(ev)
        return f"{s[0]}:{s[1]}" if s else "-"

    def _edge(self, route: Route, key: str, ok: bool, ev: dict[str, Any], values: dict[str, float | None]) -> None:
        k = (route.index, key)
        if not ok:
            self._fired.pop(k, None)
            return
        if self._fired.get(k):
            return
        self._fired[k] = True
        self._send(route, ev, values)

    def _send(self, route: Route, ev: dict[str, Any], values: Mapping[str, float | None]) -> None:
        assert route.channel is not None
        self.delivery.submit(route.channel.target, Notification(ev, route.match, values))

    # ----- time-based checks -----

    async def _loop(self) -> None:
        next_sweep = 0.0
        while True:
            await asyncio.sleep(min(1.0, self.sweep_s))
            try:
                now = self.clock()
                self.check_pending(now)
                if self._sweep_routes and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_s
                    self.sweep(now)
            except Exception:
                log.exception("routing: condition check failed")

    def check_pending(self, now: float) -> None:
        for key, p in list(self._pending.items()):
            if p.due > now:
                continue
            route = self._by_index[key[0]]
            expr = route.expr
            assert expr is not None and expr.stuck is not None
            s = self.tracker.get(p.session_id)
            if s is None or s.status not in LIVE:
                del self._pending[key]
                continue
            quiet_since = s.last_activity or p.due - expr.stuck.value
            stuck = now - quiet_since
            if stuck < expr.stuck.value:  # it did something since: wait until it has been quiet long enough
                p.due = quiet_since + expr.stuck.value
                continue
            del self._pending[key]
            ok, values = evaluate(expr.conditions, self._facts(p.event, now, stuck))
            if ok:
                self._send(route, p.event, values)

    def sweep(self, now: float) -> None:
        for route in self._sweep_routes:
            expr = route.expr
            assert expr is not None
            if expr.scope == "global":
                ok, values = evaluate(expr.conditions, self._facts({}, now))
                ev = self._synthetic(route, now, values)
                self._edge(route, "*", ok, ev, values)
                continue
            seen = set()
            for s in self.tracker.live():
                if s.status not in LIVE:
                    continue
                seen.add(s.id)
                base = {"session_id": s.id, "project": s.project, "node_id": s.node_id}
                stuck = now - (s.last_activity or s.started_at or now)
                ok, values = evaluate(expr.conditions, self._facts(base, now, stuck))
                self._edge(route, s.id, ok, self._synthetic(route, now, values, base), values)
            for k in [k for k in self._fired if k[0] == route.index and k[1] not in seen]:
                del self._fired[k]

    @staticmethod
    def _synthetic(route: Route, now: float, values: dict[str, float | None],
                   base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        base = base or {}
        return {"id": None, "type": "condition", "node_id": base.get("node_id"), "session_id": base.get("session_id"),
                "project": base.get("project"), "timestamp": iso(now),
                "data": {"condition": route.match, "values": values}}

    def status(self) -> dict[str, Any]:
        return {"routes": [r.to_api() for r in self.routes], "queue_depth": self.delivery.depth(),
                "sent": self.delivery.sent, "failed": self.delivery.failed}
