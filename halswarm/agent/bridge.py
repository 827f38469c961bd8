"""opencode events -> the agent's outbox (docs/protocol.md "Events the agent sends").

For every event of opencode's ``/global/event`` stream the bridge

1. drops noise (see below) and coalesces ``message.part.delta`` runs (:class:`DeltaCoalescer`),
2. folds the event into the :class:`SessionReducer`,
3. appends the raw event (``data`` = opencode's ``properties``) to the outbox, and then
4. one ``session.state`` event (``data`` = the session object) when the session's reported
   fields changed.

What is forwarded, and why:

* Only events of sessions that live in one of the node's projects (the session's directory
  equals or is below a project directory). opencode is per node and may host unrelated work (an
  operator's own TUI sessions); those sessions are neither tracked for the supervisor nor
  forwarded. Their project would be ``""`` and they would pollute every list; skipping is the
  honest choice.
* Events without a session (``plugin.added``, ``catalog.updated``, ``file.watcher.updated``,
  ``server.*`` ...) are instance chatter: on the first prompt of an instance opencode sends about
  45 ``plugin.added`` events. They carry nothing an operator acts on, so they are dropped.
  :data:`NOISE_TYPES` also lists them explicitly, in case a later opencode adds a session id.
* Terminal sessions (``killed``/``completed``) are forgotten by the tracker once reported; later
  events for them (opencode emits idle events for deleted ids) are dropped.

A session killed by the agent (``kill_session``) is reported as ``killed`` even when opencode's
``session.deleted`` alone would read as ``completed`` (an idle session deleted without an abort
mid-turn): :meth:`EventBridge.mark_killing`.

The sink is an async callable ``(event_id, type, session_id, project, data) -> stored | None``
(``AsyncOutbox.append`` in the agent). The bridge is used from one event loop; appends are
submitted in call order, so per-node order of the stored events is the order of the calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from halswarm.agent.opencode_events import OpencodeEvent
from halswarm.agent.session_state import COMPLETED, KILLED, TERMINAL, DeltaCoalescer, SessionReducer

log = logging.getLogger(__name__)

STATE_EVENT = "session.state"
NOISE_TYPES = frozenset(
    {
        "server.connected",
        "server.heartbeat",
        "server.instance.disposed",
        "global.disposed",
        "plugin.added",
        "catalog.updated",
        "reference.updated",
        "integration.updated",
        "installation.updated",
        "installation.update-available",
        "lsp.updated",
        "lsp.client.diagnostics",
        "file.watcher.updated",
    }
)
# The session object of docs/protocol.md, in its documented key order.
SESSION_FIELDS = (
    "id",
    "project",
    "directory",
    "status",
    "model",
    "tokens",
    "cost_usd",
    "compaction_count",
    "current_task",
    "error",
    "title",
    "started_at",
    "last_activity",
)

Sink = Callable[[str | None, str, str | None, str | None, Any], Awaitable[Any]]


def session_object(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Tracker snapshot -> the protocol's session object (``model`` as ``provider/model``)."""
    obj = {key: snapshot.get(key) for key in SESSION_FIELDS}
    model, provider = snapshot.get("model"), snapshot.get("provider")
    if isinstance(model, str) and isinstance(provider, str) and provider and not model.startswith(provider + "/"):
        obj["model"] = f"{provider}/{model}"
    obj["tokens"] = dict(snapshot.get("tokens") or {"input": 0, "output": 0, "total": 0})
    return obj


def _key(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What decides whether a session changed: everything but ``last_activity``."""
    return {k: v for k, v in obj.items() if k != "last_activity"}


class EventBridge:
    def __init__(
        self,
        tracker: SessionReducer,
        sink: Sink,
        *,
        coalesce_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        remember: int = 1000,
    ) -> None:
        self.tracker = tracker
        self._sink = sink
        self.coalescer = DeltaCoalescer(coalesce_interval, clock=clock)
        self._remember = remember
        self._last_key: dict[str, dict[str, Any]] = {}
        self._last_obj: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._killing: set[str] = set()
        self._turn_ends: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = dict.fromkeys(
            ("received", "forwarded", "states", "noise", "sessionless", "foreign", "after_end", "refused"), 0
        )

    # ------------------------------------------------------------------ queries

    def get(self, session_id: str) -> dict[str, Any] | None:
        """The session object of a live session of ours, else None."""
        state = self.tracker.get(session_id)
        if state is None or not state.project or state.status in TERMINAL:
            return None
        return session_object(state.to_dict())

    def last_reported(self, session_id: str) -> dict[str, Any] | None:
        """The last session object sent for this id (kept for a while after it ended)."""
        obj = self._last_obj.get(session_id)
        return dict(obj) if obj is not None else None

    def snapshot(self) -> list[dict[str, Any]]:
        """Live sessions of our projects, for ``register``."""
        return [
            session_object(s.to_dict())
            for s in self.tracker.sessions.values()
            if s.project and s.status not in TERMINAL
        ]

    def tracked_ids(self) -> set[str]:
        return {s.id for s in self.tracker.sessions.values() if s.project and s.status not in TERMINAL}

    def turn_ends(self, session_id: str) -> int:
        """How many turns of this session ended (``session.idle`` events) since the agent started."""
        return self._turn_ends.get(session_id, 0)

    def is_gone(self, session_id: str) -> bool:
        return session_id in self._gone

    # ------------------------------------------------------------------ events in

    async def handle(self, event: OpencodeEvent) -> None:
        """One event of opencode's global stream."""
        self.counters["received"] += 1
        if event.type in NOISE_TYPES:
            self.counters["noise"] += 1
            return
        sid = event.session_id
        if sid is None:
            self.counters["sessionless"] += 1
            return
        if sid in self._gone:
            self.counters["after_end"] += 1
            return
        for out in self.coalescer.push(event):
            await self._forward(out)

    async def flush_due(self) -> None:
        """Forward delta runs that waited long enough (call on a timer)."""
        for ev in self.coalescer.flush_due():
            await self._forward(ev)

    async def flush_all(self) -> None:
        for ev in self.coalescer.flush_all():
            await self._forward(ev)

    async def _forward(self, ev: OpencodeEvent) -> None:
        sid = ev.session_id
        assert sid is not None
        changed = bool(self.tracker.apply(ev))
        project = self._project_of(sid, ev.directory)
        if project is None:
            self.counters["foreign"] += 1
            return
        if ev.type == "session.idle":
            self._turn_ends[sid] = self._turn_ends.get(sid, 0) + 1
            # The turn may have (re)written .context/CURRENT_TASK.md.
            changed = bool(self.tracker.refresh_current_task(sid)) or changed
        self.counters["forwarded"] += 1
        await self._emit(ev.id, ev.type, sid, project, ev.properties)
        if changed:
            await self.report(sid)

    def _project_of(self, sid: str, directory: str | None) -> str | None:
        state = self.tracker.get(sid)
        if state is not None:
            return state.project or None
        return self.tracker.project_for(directory)

    # ------------------------------------------------------------------ session state out

    async def report(self, session_id: str, *, force: bool = False) -> dict[str, Any] | None:
        """Send ``session.state`` if the session object changed since the last one sent."""
        state = self.tracker.get(session_id)
        if state is None or not state.project:
            return None
        obj = session_object(state.to_dict())
        if session_id in self._killing and obj["status"] == COMPLETED:
            obj["status"] = KILLED
        key = _key(obj)
        if not force and self._last_key.get(session_id) == key:
            return obj
        self._last_key[session_id] = key
        self._store_last(session_id, obj)
        if obj["status"] in TERMINAL:
            self.tracker.forget(session_id)
            self._killing.discard(session_id)
            self._last_key.pop(session_id, None)
            self._turn_ends.pop(session_id, None)
            self._gone[session_id] = None
            while len(self._gone) > self._remember:
                self._gone.popitem(last=False)
        await self._emit(None, STATE_EVENT, session_id, obj["project"], obj)
        return obj

    def _store_last(self, session_id: str, obj: dict[str, Any]) -> None:
        self._last_obj[session_id] = obj
        self._last_obj.move_to_end(session_id)
        while len(self._last_obj) > self._remember:
            self._last_obj.popitem(last=False)

    async def _emit(self, event_id: str | None, etype: str, sid: str | None, project: str | None, data: Any) -> None:
        stored = await self._sink(event_id, etype, sid, project, data)
        if etype == STATE_EVENT:
            self.counters["states"] += 1
        if stored is None:
            self.counters["refused"] += 1

    # ------------------------------------------------------------------ resynchronisation

    async def seed(
        self, sessions: Iterable[Mapping[str, Any]], statuses: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Load sessions listed by opencode (``GET /session``-like objects).

        ``statuses`` is the merged ``GET /session/status`` map of their directories, where idle
        sessions are absent: a listed session missing from it is idle. ``None`` means "unknown":
        the status is left alone (used for a single ``GET /session/{id}``).
        """
        for info in sessions:
            sid = info.get("id")
            if not isinstance(sid, str) or sid in self._gone:
                continue
            status = None if statuses is None else (statuses.get(sid) or {"type": "idle"})
            if self.tracker.seed(info, status):
                await self.report(sid)

    async def vanished(self, session_id: str) -> None:
        """opencode no longer has this session (deleted while we were not listening)."""
        if self.tracker.get(session_id) is None:
            return
        self.tracker.apply(OpencodeEvent("session.deleted", {"sessionID": session_id, "info": {"id": session_id}}))
        await self.report(session_id)

    async def refresh_tasks(self) -> None:
        """Re-read ``.context/CURRENT_TASK.md`` of every live session of ours."""
        for sid in list(self.tracked_ids()):
            if self.tracker.refresh_current_task(sid):
                await self.report(sid)

    # ------------------------------------------------------------------ commands' helpers

    def mark_killing(self, session_id: str) -> None:
        """The agent is deleting this session on purpose: report it as ``killed``."""
        self._killing.add(session_id)

    def unmark_killing(self, session_id: str) -> None:
        self._killing.discard(session_id)

    def reassert_later(self, returned: Mapping[str, Any], delay: float = 1.0) -> None:
        """Make the event stream have the last word after a command returned a session object.

        The supervisor applies a command's output apart from the event stream, so an output
        built just before a state change may be applied *after* the event that reported the
        change. ``delay`` seconds later, if the last reported state differs from what the
        command returned, it is sent again.
        """
        sid = returned.get("id")
        if not isinstance(sid, str):
            return
        task = asyncio.get_running_loop().create_task(self._reassert(sid, _key(returned), delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reassert(self, sid: str, returned_key: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        last = self._last_obj.get(sid)
        if last is None or _key(last) == returned_key:
            return
        if self.tracker.get(sid) is not None:
            await self.report(sid, force=True)
        else:  # ended: repeat the final state
            await self._emit(None, STATE_EVENT, sid, last.get("project"), dict(last))

    async def close(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
