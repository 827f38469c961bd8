"""Session tracker: folds agents' session reports and snapshots into the session table."""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Callable
from typing import Any

from halswarm.core.model import SESSION_STATUSES, TERMINAL_SESSION_STATUSES, Session
from halswarm.core.timestamps import sane_float, sql_int, to_seconds
from halswarm.core.timeutil import parse_ts

# Statuses an agent may report; `unreachable` is the supervisor's own verdict.
AGENT_STATUSES = frozenset(SESSION_STATUSES) - {"unreachable"}
STATE_EVENT = "session.state"


def _int(v: Any, default: int = 0) -> int:
    """A counter an agent reports: kept only if it fits SQLite (a 2^64 would fail the whole write)."""
    ok = sql_int(v)
    return default if ok is None else ok


Note = Callable[[str, str], None]  # (field, reason) of a value that was converted or refused


def claimed_session_ids(ev_type: str, session_id: str | None, data: Any) -> list[str]:
    """The session ids an agent event would update: the envelope's, and for `session.state` the
    id inside its data (which `apply_event` prefers)."""
    out = [session_id] if isinstance(session_id, str) and session_id else []
    if ev_type == STATE_EVENT and isinstance(data, dict):
        inner = data.get("id", data.get("session_id"))
        if isinstance(inner, str) and inner and inner not in out:
            out.append(inner)
    return out


def snapshot_session_id(state: Any) -> str | None:
    sid = state.get("id", state.get("session_id")) if isinstance(state, dict) else None
    return sid if isinstance(sid, str) and sid else None


class SessionTracker:
    """Sessions by id. Each session belongs to the node that first reported it: another node's
    report of the same id is refused (never applied), until the supervisor itself hands the
    session over (`expect_handover`)."""

    def __init__(self, note: Note | None = None) -> None:
        self.sessions: dict[str, Session] = {}
        self.note = note  # told about every time value converted (milliseconds) or refused
        self._handover_to: dict[str, str] = {}  # session id -> the node a supervisor handover moves it to
        # Ids first named by an event accepted but not yet applied (events reach the tracker only after
        # their commit): the first node to name an id owns it from that moment, not from its commit.
        self._claimed: dict[str, str] = {}
        self.refused = 0  # foreign claims refused by apply_state (defence in depth behind the hub)

    # ----- ownership -----

    def owner(self, session_id: str) -> str | None:
        s = self.sessions.get(session_id)
        return s.node_id if s is not None else self._claimed.get(session_id)

    def claim(self, node_id: str, session_ids: list[str]) -> None:
        """Record the owner of ids an accepted event names before the event is applied."""
        for sid in session_ids:
            if sid not in self.sessions and len(self._claimed) < 100_000:
                self._claimed.setdefault(sid, node_id)

    def may_claim(self, node_id: str, session_id: str) -> bool:
        """True when `node_id` owns the session, nobody does yet, or a handover moves it there."""
        owner = self.owner(session_id)
        return owner is None or owner == node_id or self._handover_to.get(session_id) == node_id

    def event_claims(self, node_id: str, ev_type: str, session_id: str | None, data: Any
                     ) -> tuple[list[str], list[str]]:
        """(ids an agent event names, those of them another node owns), checked before it is accepted.

        Once per agent event, so the common case, an event of the node's own known session (nothing
        foreign, nothing new to `claim`), is one dict lookup; everything else takes the full rule."""
        if ev_type != STATE_EVENT and session_id:
            s = self.sessions.get(session_id)
            if s is not None and s.node_id == node_id:
                return [], []
        claimed = claimed_session_ids(ev_type, session_id, data)
        return claimed, self.foreign(node_id, claimed)

    def foreign(self, node_id: str, session_ids: list[str]) -> list[str]:
        """The ids among `session_ids` that belong to another node (`may_claim` false).

        Once per agent event: the common case (the node's own, already known session) is one dict
        lookup here, without the calls of `may_claim`."""
        sessions = self.sessions
        out: list[str] = []
        for sid in session_ids:
            s = sessions.get(sid)
            if s is not None and s.node_id == node_id:
                continue
            if not self.may_claim(node_id, sid):
                out.append(sid)
        return out

    def expect_handover(self, session_id: str, node_id: str) -> None:
        """The supervisor dispatched a handover of `session_id` to `node_id`: that node (only) may
        claim it next; its first accepted report moves the ownership."""
        self._handover_to[session_id] = node_id

    def _time(self, field: str, value: Any) -> float | None:
        """A reported time by the rule of halswarm.core.timestamps; text (ISO-8601) is accepted."""
        if value is None:
            return None
        if isinstance(value, str):
            secs, reason = parse_ts(value), None
            if secs is None:
                reason = "not_a_number"
        else:
            secs, reason = to_seconds(value)
        if reason is not None and self.note is not None:
            self.note(field, reason)
        return secs

    def load(self, sessions: list[Session]) -> None:
        """Restore from the database: nodes are offline after a restart, so live sessions are unreachable."""
        for s in sessions:
            if s.status not in TERMINAL_SESSION_STATUSES:
                s.set_status("unreachable")
            self.sessions[s.id] = s

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def list(self, *, project: str | None = None, status: str | None = None, node_id: str | None = None
             ) -> list[Session]:
        out = [
            s for s in self.sessions.values()
            if (project is None or s.project == project)
            and (status is None or s.status == status)
            and (node_id is None or s.node_id == node_id)
        ]
        out.sort(key=lambda s: (s.started_at or 0, s.id), reverse=True)
        return out

    def counts(self) -> Counter[str]:
        return Counter(s.status for s in self.sessions.values())

    def apply_state(self, node_id: str, state: dict[str, Any], *, at: float | None = None) -> Session | None:
        """Merge a session object reported by an agent; returns the session if anything changed."""
        sid = state.get("id", state.get("session_id"))
        if not isinstance(sid, str) or not sid:
            return None
        if not self.may_claim(node_id, sid):
            self.refused += 1
            return None
        if self._handover_to.get(sid) == node_id:
            del self._handover_to[sid]
        s = self.sessions.get(sid)
        created = s is None
        if s is None:
            s = Session(id=sid, node_id=node_id, started_at=at)
            self.sessions[sid] = s
            self._claimed.pop(sid, None)
        before = s.to_api()
        s.node_id = node_id
        if isinstance(state.get("project"), str) and state["project"]:
            s.project = state["project"]
        status = state.get("status")
        if isinstance(status, str) and status in AGENT_STATUSES:
            s.set_status(status)
        elif s.status == "unreachable":
            # The node is talking to us again; without a status we assume it is alive and idle.
            s.set_status("idle")
        for key in ("model", "current_task", "error", "title"):
            if key in state and (state[key] is None or isinstance(state[key], str)):
                setattr(s, key, state[key])
        tokens = state.get("tokens")
        if isinstance(tokens, dict):
            s.tokens_input = _int(tokens.get("input"), s.tokens_input)
            s.tokens_output = _int(tokens.get("output"), s.tokens_output)
            s.tokens_total = _int(tokens.get("total"), s.tokens_input + s.tokens_output)
        elif isinstance(tokens, int) and not isinstance(tokens, bool):
            s.tokens_total = _int(tokens, s.tokens_total)
        s.compaction_count = _int(state.get("compaction_count"), s.compaction_count)
        cost = sane_float(state.get("cost_usd", state.get("cost")))
        if cost is not None:
            s.cost_usd = cost
        started = self._time("session.started_at", state.get("started_at"))
        if started is not None:
            s.started_at = started
        last = self._time("session.last_activity", state.get("last_activity"))
        if last is not None:
            s.last_activity = last
        elif at is not None:
            s.last_activity = max(s.last_activity or 0, at)
        return s if created or s.to_api() != before else None

    def apply_event(self, node_id: str, ev_type: str, session_id: str | None, project: str | None, data: Any,
                    timestamp: float) -> Session | None:
        """Update the tracker from one stored event."""
        if ev_type == STATE_EVENT and isinstance(data, dict):
            state = dict(data)
            state.setdefault("id", session_id)
            if project and not state.get("project"):
                state["project"] = project
            return self.apply_state(node_id, state, at=timestamp)
        if not session_id:
            return None
        s = self.sessions.get(session_id)
        if (s is None or s.node_id != node_id) and not self.may_claim(node_id, session_id):
            self.refused += 1
            return None
        if s is None:
            return self.apply_state(node_id, {"id": session_id, "project": project or "", "status": "running"},
                                    at=timestamp)
        before = (s.last_activity, s.status)
        s.last_activity = max(s.last_activity or 0, timestamp)
        if s.status == "unreachable":
            s.set_status("running")
        return s if (s.last_activity, s.status) != before else None

    # `builtins.list` below: inside the class, `list` is the method above.
    def apply_snapshot(self, node_id: str, states: builtins.list[dict[str, Any]], *, at: float
                       ) -> builtins.list[Session]:
        changed = []
        seen = set()
        for st in states:
            s = self.apply_state(node_id, st, at=at)
            sid = st.get("id", st.get("session_id"))
            seen.add(sid)
            if s is not None:
                changed.append(s)
        for s in self.sessions.values():
            if s.node_id == node_id and s.id not in seen and s.status == "unreachable":
                msg = "not reported by its node after it registered again"
                if s.error != msg:
                    s.error = msg
                    changed.append(s)
        return changed

    def mark_node_unreachable(self, node_id: str) -> builtins.list[Session]:
        changed = []
        for s in self.sessions.values():
            if s.node_id == node_id and not s.terminal and s.set_status("unreachable"):
                changed.append(s)
        return changed
