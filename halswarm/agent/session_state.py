"""Pure session state derived from opencode's events, plus a coalescer for streaming text deltas.

:class:`SessionReducer` is a reducer: ``apply(event) -> list[Change]``.  It does no I/O; the clock and
the ``.context/CURRENT_TASK.md`` reader are injected.  Field names follow SPEC section 5.

Mapping of opencode events (field names checked against the 1.18.33 captures and OpenAPI):

===============================  ===============================================================
``session.created/updated``      create/refresh: title, directory, model (``info.model.id``),
                                 cumulative ``info.tokens``/``info.cost`` (never lowers what the
                                 messages already added up)
``session.status`` busy          ``running``; retry -> ``running`` with ``retry`` {attempt, message}
                                 (kept until the turn ends or its assistant message completes)
``session.status`` idle,         ``idle``, except that an ``error`` stays until the next turn
``session.idle``                 starts (opencode always follows session.error with idle)
``permission.asked``             ``waiting_input`` (pending request ids are kept)
``permission.replied``           back to ``running`` once no request is pending
``session.error``                ``error`` with ``error.data.message`` (the first error of a turn
                                 is kept: opencode repeats it, the 2nd time with a JS stack).
                                 ``MessageAbortedError`` is NOT an error: an abort is a deliberate
                                 stop, so the session becomes ``idle`` with ``aborted=True``
``session.compacted``            ``compaction_count + 1``
``session.deleted``              ``completed`` if it was idle after a normal turn (its work was
                                 done), else ``killed`` (deleted while running / waiting / in error,
                                 or right after an abort: kill_session = abort + delete)
``message.updated`` (assistant)  per-message tokens {input, output, total} and cost, summed over
                                 the session; ``modelID``/``providerID`` -> model/provider
``message.updated`` (user)       ``model.modelID``/``providerID`` -> model/provider
===============================  ===============================================================

``killed``/``completed`` are terminal: later events for that id (opencode emits idle even for an
aborted unknown id) change nothing; drop them with :meth:`SessionReducer.forget` once reported.
Events that only name a session id we have never seen are ignored (no phantom sessions); seed
existing sessions with :meth:`SessionReducer.seed` after (re)connecting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from halswarm.agent.opencode_events import OpencodeEvent

RUNNING = "running"
IDLE = "idle"
WAITING_INPUT = "waiting_input"
ERROR = "error"
COMPLETED = "completed"
KILLED = "killed"
TERMINAL = frozenset({COMPLETED, KILLED})
ABORTED_ERROR = "MessageAbortedError"

TaskReader = Callable[[str], str | None]


def read_current_task(directory: str) -> str | None:
    """First non-empty line of ``<directory>/.context/CURRENT_TASK.md`` (None if absent/unreadable).

    This is the I/O half; pass it as ``task_reader`` to :class:`SessionReducer`."""
    path = os.path.join(directory, ".context", "CURRENT_TASK.md")
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for _, line in zip(range(200), fh, strict=False):
                text = line.strip().lstrip("#").strip()
                if text:
                    return text[:500]
    except OSError:
        return None
    return None


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def tokens_from(raw: Any) -> dict[str, int]:
    """opencode ``tokens`` {input, output, reasoning, cache{read,write}, total?} -> {input, output, total}.

    ``total`` is opencode's own when present (message tokens carry it); session tokens have none,
    then it is input + output + reasoning + cache read/write (what the provider billed)."""
    if not isinstance(raw, dict):
        return {"input": 0, "output": 0, "total": 0}
    inp, out = int(_num(raw.get("input"))), int(_num(raw.get("output")))
    if "total" in raw:
        total = int(_num(raw.get("total")))
    else:
        cache = c if isinstance(c := raw.get("cache"), dict) else {}
        total = inp + out + int(_num(raw.get("reasoning")) + _num(cache.get("read")) + _num(cache.get("write")))
    return {"input": inp, "output": out, "total": total}


def _zero_tokens() -> dict[str, int]:
    return {"input": 0, "output": 0, "total": 0}


@dataclass
class SessionState:
    """One session as the agent reports it."""

    id: str
    project: str | None = None
    directory: str | None = None
    status: str = IDLE
    model: str | None = None
    provider: str | None = None
    tokens: dict[str, int] = field(default_factory=_zero_tokens)
    cost_usd: float = 0.0
    compaction_count: int = 0
    current_task: str | None = None
    error: str | None = None
    error_name: str | None = None
    aborted: bool = False
    retry: dict[str, Any] | None = None
    pending_permissions: tuple[str, ...] = ()
    started_at: float | None = None
    last_activity: float | None = None
    title: str | None = None
    # Bookkeeping for sums; not part of the reported snapshot.
    message_tokens: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)
    message_costs: dict[str, float] = field(default_factory=dict, repr=False)
    session_tokens: dict[str, int] = field(default_factory=_zero_tokens, repr=False)
    session_cost: float = field(default=0.0, repr=False)

    REPORTED = (
        "id",
        "project",
        "directory",
        "status",
        "model",
        "provider",
        "tokens",
        "cost_usd",
        "compaction_count",
        "current_task",
        "error",
        "error_name",
        "aborted",
        "retry",
        "pending_permissions",
        "started_at",
        "last_activity",
        "title",
    )

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.REPORTED}
        out["tokens"] = dict(self.tokens)
        out["pending_permissions"] = list(self.pending_permissions)
        return out


@dataclass(frozen=True)
class Change:
    """What one event did to one session.

    ``fields`` maps each changed reported field to ``(old, new)``; ``last_activity`` alone is not a
    change.  ``created`` marks the first sight of the session.  ``snapshot`` is the full state after.
    """

    session_id: str
    event_type: str
    fields: Mapping[str, tuple[Any, Any]]
    snapshot: Mapping[str, Any]
    created: bool = False

    @property
    def status_changed(self) -> bool:
        return "status" in self.fields


_DIFF_FIELDS = tuple(n for n in SessionState.REPORTED if n != "last_activity")


class SessionReducer:
    """Reduce opencode events into :class:`SessionState` objects.

    ``projects`` maps our project names to their directories; a session belongs to the project whose
    directory equals or contains the session's directory (the longest match wins).
    """

    def __init__(
        self,
        projects: Mapping[str, str] | None = None,
        *,
        task_reader: TaskReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._projects = sorted(
            ((os.path.normpath(d), name) for name, d in (projects or {}).items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._task_reader = task_reader
        self._clock = clock
        self.sessions: dict[str, SessionState] = {}

    # -- queries -------------------------------------------------------------------------------
    def get(self, session_id: str) -> SessionState | None:
        return self.sessions.get(session_id)

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.sessions.values()]

    def project_for(self, directory: str | None) -> str | None:
        if not directory:
            return None
        d = os.path.normpath(directory)
        for root, name in self._projects:
            if d == root or d.startswith(root.rstrip(os.sep) + os.sep):
                return name
        return None

    # -- mutations -----------------------------------------------------------------------------
    def forget(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    def seed(self, info: Mapping[str, Any], status: Mapping[str, Any] | None = None) -> list[Change]:
        """Load a session from ``GET /session`` (and its ``GET /session/status`` entry) at (re)connect."""
        sid = info.get("id")
        if not isinstance(sid, str):
            return []
        changes = self.apply(OpencodeEvent("session.updated", {"sessionID": sid, "info": dict(info)}))
        if status:
            changes += self.apply(OpencodeEvent("session.status", {"sessionID": sid, "status": dict(status)}))
        return changes

    def refresh_current_task(self, session_id: str) -> list[Change]:
        state = self.sessions.get(session_id)
        if state is None or state.directory is None or self._task_reader is None:
            return []
        before = replace(state)
        state.current_task = self._task_reader(state.directory)
        return self._diff(before, state, "current_task.refresh", created=False)

    def apply(self, event: OpencodeEvent) -> list[Change]:
        """Apply one event; returns the changes (empty when nothing reported changed)."""
        handler = _HANDLERS.get(event.type)
        sid = event.session_id
        if handler is None or sid is None:
            return []
        state = self.sessions.get(sid)
        created = False
        if state is None:
            if event.type not in _CREATING:
                return []
            state = SessionState(id=sid, started_at=self._clock())
            created = True
            self.sessions[sid] = state
        elif state.status in TERMINAL:
            return []
        before = replace(state, tokens=dict(state.tokens))
        if event.directory and not state.directory:
            self._set_directory(state, event.directory)
        handler(self, state, event)
        state.last_activity = self._clock()
        if created and self._task_reader is not None and state.directory:
            state.current_task = self._task_reader(state.directory)
        return self._diff(before, state, event.type, created=created)

    def apply_all(self, events: Iterable[OpencodeEvent]) -> list[Change]:
        out: list[Change] = []
        for ev in events:
            out.extend(self.apply(ev))
        return out

    # -- helpers ---------------------------------------------------------------------------------
    def _set_directory(self, state: SessionState, directory: str) -> None:
        state.directory = directory
        state.project = self.project_for(directory)

    @staticmethod
    def _diff(before: SessionState, after: SessionState, event_type: str, *, created: bool) -> list[Change]:
        changed = {
            name: (getattr(before, name), getattr(after, name))
            for name in _DIFF_FIELDS
            if getattr(before, name) != getattr(after, name)
        }
        if not changed and not created:
            return []
        return [Change(after.id, event_type, changed, after.to_dict(), created)]

    # -- handlers ----------------------------------------------------------------------------------
    def _on_session_info(self, state: SessionState, event: OpencodeEvent) -> None:
        info = event.properties.get("info")
        if not isinstance(info, dict):
            return
        if isinstance(info.get("title"), str):
            state.title = info["title"]
        directory = info.get("directory")
        if isinstance(directory, str) and directory != state.directory:
            self._set_directory(state, directory)
        model = info.get("model")
        if isinstance(model, dict) and isinstance(model.get("id"), str):
            state.model = model["id"]
            if isinstance(model.get("providerID"), str):
                state.provider = model["providerID"]
        created = (info.get("time") or {}).get("created") if isinstance(info.get("time"), dict) else None
        if isinstance(created, int | float) and created > 0:
            state.started_at = created / 1000.0
        if "tokens" in info:
            state.session_tokens = tokens_from(info["tokens"])
        if "cost" in info:
            state.session_cost = _num(info["cost"])
        _recompute_usage(state)

    def _on_status(self, state: SessionState, event: OpencodeEvent) -> None:
        status = s if isinstance(s := event.properties.get("status"), dict) else {}
        kind = status.get("type")
        if kind == "busy":
            _start_turn(state)  # keeps ``retry``: opencode goes retry -> busy -> retry while retrying
        elif kind == "retry":
            _start_turn(state)
            state.retry = {"attempt": status.get("attempt"), "message": status.get("message")}
        elif kind == "idle":
            _go_idle(state)

    def _on_idle(self, state: SessionState, event: OpencodeEvent) -> None:
        _go_idle(state)

    def _on_permission_asked(self, state: SessionState, event: OpencodeEvent) -> None:
        rid = event.properties.get("id")
        if isinstance(rid, str) and rid not in state.pending_permissions:
            state.pending_permissions = (*state.pending_permissions, rid)
        state.status = WAITING_INPUT

    def _on_permission_replied(self, state: SessionState, event: OpencodeEvent) -> None:
        rid = event.properties.get("requestID") or event.properties.get("permissionID")
        state.pending_permissions = tuple(p for p in state.pending_permissions if p != rid)
        if not state.pending_permissions and state.status == WAITING_INPUT:
            state.status = RUNNING

    def _on_error(self, state: SessionState, event: OpencodeEvent) -> None:
        err = event.properties.get("error")
        name = err.get("name") if isinstance(err, dict) else None
        data = err.get("data") if isinstance(err, dict) else None
        message = data.get("message") if isinstance(data, dict) else None
        if name == ABORTED_ERROR:
            state.aborted = True
            state.pending_permissions = ()
            state.retry = None
            if state.status != ERROR:
                state.status = IDLE
            return
        if state.status == ERROR and state.error:
            return  # keep the first error of this turn
        state.status = ERROR
        state.error = message if isinstance(message, str) and message else (name or "unknown error")
        state.error_name = name if isinstance(name, str) else None
        state.retry = None
        state.pending_permissions = ()

    def _on_compacted(self, state: SessionState, event: OpencodeEvent) -> None:
        state.compaction_count += 1

    def _on_deleted(self, state: SessionState, event: OpencodeEvent) -> None:
        self._on_session_info(state, event)
        state.status = COMPLETED if state.status == IDLE and not state.aborted else KILLED
        state.pending_permissions = ()
        state.retry = None

    def _on_message(self, state: SessionState, event: OpencodeEvent) -> None:
        info = event.properties.get("info")
        if not isinstance(info, dict):
            return
        if info.get("role") == "user":
            model = info.get("model")
            if isinstance(model, dict) and isinstance(model.get("modelID"), str):
                state.model = model["modelID"]
                if isinstance(model.get("providerID"), str):
                    state.provider = model["providerID"]
            return
        if info.get("role") != "assistant":
            return
        if isinstance(info.get("modelID"), str):
            state.model = info["modelID"]
        if isinstance(info.get("providerID"), str):
            state.provider = info["providerID"]
        if isinstance(info.get("time"), dict) and info["time"].get("completed"):
            state.retry = None
        mid = info.get("id")
        if isinstance(mid, str):
            if "tokens" in info:
                state.message_tokens[mid] = tokens_from(info["tokens"])
            if "cost" in info:
                state.message_costs[mid] = _num(info["cost"])
            _recompute_usage(state)


def _start_turn(state: SessionState) -> None:
    if state.status != WAITING_INPUT:
        state.status = RUNNING
    state.error = None
    state.error_name = None
    state.aborted = False


def _go_idle(state: SessionState) -> None:
    state.retry = None
    state.pending_permissions = ()
    if state.status != ERROR:
        state.status = IDLE


def _recompute_usage(state: SessionState) -> None:
    """Session usage = the larger of the sum over assistant messages and the session's own totals.

    Both normally agree; the session totals cover messages from before we attached, the message
    sum is fresher while a turn is streaming."""
    summed = _zero_tokens()
    for tok in state.message_tokens.values():
        for key in summed:
            summed[key] += tok[key]
    state.tokens = {k: max(summed[k], state.session_tokens.get(k, 0)) for k in summed}
    state.cost_usd = round(max(sum(state.message_costs.values()), state.session_cost), 10)


_Handler = Callable[[SessionReducer, SessionState, OpencodeEvent], None]
_HANDLERS: dict[str, _Handler] = {
    "session.created": SessionReducer._on_session_info,
    "session.updated": SessionReducer._on_session_info,
    "session.status": SessionReducer._on_status,
    "session.idle": SessionReducer._on_idle,
    "session.error": SessionReducer._on_error,
    "session.compacted": SessionReducer._on_compacted,
    "session.deleted": SessionReducer._on_deleted,
    "permission.asked": SessionReducer._on_permission_asked,
    "permission.replied": SessionReducer._on_permission_replied,
    "message.updated": SessionReducer._on_message,
}
# Events that carry enough (session info or a message of the session) to start tracking a session.
_CREATING = frozenset({"session.created", "session.updated", "message.updated"})


# ----------------------------------------------------------------------------------------------
# Delta coalescing
# ----------------------------------------------------------------------------------------------
DELTA_TYPE = "message.part.delta"


@dataclass
class _Pending:
    first: OpencodeEvent
    parts: list[str]
    started: float

    def merged(self) -> OpencodeEvent:
        props = dict(self.first.properties)
        props["delta"] = "".join(self.parts)
        props["count"] = len(self.parts)
        return replace(self.first, properties=props)


class DeltaCoalescer:
    """Merge runs of ``message.part.delta`` events of the same part into one event per interval.

    Pure (the clock is injected).  ``push(event)`` returns what to forward now, in order:

    - a delta for the part already pending is appended (nothing forwarded, unless the pending run is
      older than ``interval``, in which case the merged run is forwarded and a new one starts);
    - a delta for another part of the same session first flushes that session's pending run;
    - any other event of a session first flushes that session's pending run, then passes through,
      so per-session order is kept (runs of other sessions keep accumulating).

    The merged event keeps the first delta's id/ids and carries the concatenated ``delta`` and a
    ``count`` of merged deltas.  Call :meth:`flush_due` on a timer and :meth:`flush_all` at shutdown.
    """

    def __init__(self, interval: float = 0.5, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._pending: dict[str, _Pending] = {}  # by session id
        self.received = 0
        self.forwarded = 0

    def _key(self, ev: OpencodeEvent) -> tuple[Any, ...]:
        p = ev.properties
        return (p.get("messageID"), p.get("partID"), p.get("field"))

    def push(self, event: OpencodeEvent) -> list[OpencodeEvent]:
        self.received += 1
        sid = event.session_id or ""
        out: list[OpencodeEvent] = []
        if event.type != DELTA_TYPE or not isinstance(event.properties.get("delta"), str):
            out.extend(self._flush_session(sid))
            out.append(event)
        else:
            now = self._clock()
            pending = self._pending.get(sid)
            if pending is not None and (
                self._key(pending.first) != self._key(event) or now - pending.started >= self.interval
            ):
                out.extend(self._flush_session(sid))
                pending = None
            if pending is None:
                self._pending[sid] = _Pending(event, [event.properties["delta"]], now)
            else:
                pending.parts.append(event.properties["delta"])
        self.forwarded += len(out)
        return out

    def flush_due(self) -> list[OpencodeEvent]:
        """Forward runs that have been pending for ``interval`` or longer."""
        now = self._clock()
        due = [sid for sid, p in self._pending.items() if now - p.started >= self.interval]
        out = [ev for sid in due for ev in self._flush_session(sid)]
        self.forwarded += len(out)
        return out

    def flush_all(self) -> list[OpencodeEvent]:
        out = [ev for sid in list(self._pending) for ev in self._flush_session(sid)]
        self.forwarded += len(out)
        return out

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def _flush_session(self, sid: str) -> list[OpencodeEvent]:
        pending = self._pending.pop(sid, None)
        return [pending.merged()] if pending is not None else []


__all__ = [
    "ABORTED_ERROR",
    "COMPLETED",
    "ERROR",
    "IDLE",
    "KILLED",
    "RUNNING",
    "TERMINAL",
    "WAITING_INPUT",
    "Change",
    "DeltaCoalescer",
    "SessionReducer",
    "SessionState",
    "TaskReader",
    "read_current_task",
    "tokens_from",
]
