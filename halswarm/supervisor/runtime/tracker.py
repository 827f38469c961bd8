"""Session tracker: folds agents' session reports and snapshots into the session table."""

from __future__ import annotations

import builtins
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
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
Loader = Callable[[str], "Session | None"]  # a session's stored row, by id (None: not stored)
BatchLoader = Callable[[list[str]], Awaitable[dict[str, Session]]]  # stored rows by id, read off the event loop
PEEK_TTL = 5.0  # seconds a row read by `resolve` answers lookups (long enough to reach the event's commit)
PEEK_MAX = 20_000  # rows kept by `resolve` at most (the oldest go first)


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
    session over (`expect_handover`).

    Memory holds live sessions and those that ended less than `grace` seconds ago (issue 22): an
    ended session leaves memory by `evict` once its stored row says what memory says, and `get`
    reads it from the store (`loader`); a report about it brings it back. Live sessions are indexed
    (`live`, `live_on`), so periodic and per-node work never walks every session ever seen."""

    def __init__(self, note: Note | None = None, *, loader: Loader | None = None,
                 batch_loader: BatchLoader | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions: dict[str, Session] = {}  # in memory: live, and ended within the grace period
        self.note = note  # told about every time value converted (milliseconds) or refused
        self.loader = loader  # synchronous: only the fallback when `resolve` did not read the id first
        self.batch_loader = batch_loader
        # Rows `resolve` read for ids not in memory (None: not stored), with when they were read: the
        # synchronous rule (`get`, `_resident`) answers from here instead of reading on the event loop.
        self._peek: dict[str, tuple[float, Session | None]] = {}
        self.peeked = 0  # ids `resolve` read (introspection for tests)
        self.clock = clock
        self._handover_to: dict[str, str] = {}  # session id -> the node a supervisor handover moves it to
        # Ids first named by an event accepted but not yet applied (events reach the tracker only after
        # their commit): the first node to name an id owns it from that moment, not from its commit.
        self._claimed: dict[str, str] = {}
        self.refused = 0  # foreign claims refused by apply_state (defence in depth behind the hub)
        self._live: dict[str, Session] = {}  # not terminal
        self._by_node: dict[str, dict[str, None]] = {}  # ids in memory, by owner (ordered sets)
        self._ended: dict[str, float] = {}  # terminal ids in memory -> clock() of their last change, oldest first
        self._indexed: dict[str, tuple[str, str]] = {}  # id -> (node, status) when last indexed
        self._counts: Counter[str] = Counter()  # every session ever seen, by status
        self._changed: set[str] = set()  # ids changed since the last `drain_changed` (the cost sampler's)
        self.evicted = 0  # sessions that left memory (introspection for tests and metrics)
        self.reloaded = 0  # evicted sessions a report brought back
        self.visited = 0  # sessions handed to periodic passes by `live`/`live_on`

    # ----- memory -----

    def _index(self, s: Session, *, new: bool) -> None:
        """Keep the indexes true after `s` was created (`new`), reloaded or changed: O(1)."""
        prev = self._indexed.get(s.id)
        if prev is not None:
            node0, status0 = prev
            if node0 != s.node_id:
                self._unlink(node0, s.id)
            if status0 != s.status:
                self._counts[status0] -= 1
                self._counts[s.status] += 1
        elif new:
            self._counts[s.status] += 1
        self._by_node.setdefault(s.node_id, {})[s.id] = None
        self._ended.pop(s.id, None)
        if s.terminal:
            self._live.pop(s.id, None)
            self._ended[s.id] = self.clock()  # re-inserted: the dict stays ordered by time
        else:
            self._live[s.id] = s
        self._indexed[s.id] = (s.node_id, s.status)
        self._changed.add(s.id)

    def _unlink(self, node_id: str, sid: str) -> None:
        ids = self._by_node.get(node_id)
        if ids is not None:
            ids.pop(sid, None)
            if not ids:
                del self._by_node[node_id]

    def add(self, s: Session) -> None:
        """Put a session in memory (and its indexes) as it is."""
        self.sessions[s.id] = s
        self._peek.pop(s.id, None)
        self._index(s, new=True)

    async def resolve(self, ids: Iterable[str]) -> None:
        """Read the stored rows of the ids that neither memory nor a claim knows, in one query off the
        event loop, before the synchronous rule (`foreign`, `claim`, `apply_*`) looks them up.

        Without it, each event naming a session new to this supervisor cost up to four synchronous reads
        on the event loop (a round trip each on PostgreSQL): a node sending fresh ids could hold the loop.
        A row read here answers for `PEEK_TTL` seconds; on several supervisors a session first stored by
        another one within that window is seen as new here, the same window as a read before the commit."""
        if self.batch_loader is None:
            return
        now = self.clock()
        peek, claimed, sessions = self._peek, self._claimed, self.sessions
        unknown = []
        for sid in ids:
            if sid in sessions or sid in claimed:
                continue
            got = peek.get(sid)
            if got is None or now - got[0] > PEEK_TTL:
                unknown.append(sid)
        if not unknown:
            return
        found = await self.batch_loader(unknown)
        now = self.clock()
        for sid in unknown:
            peek.pop(sid, None)  # re-inserted last: the dict stays ordered by read time
            peek[sid] = (now, found.get(sid))
        self.peeked += len(unknown)
        while len(peek) > PEEK_MAX or (peek and now - next(iter(peek.values()))[0] > PEEK_TTL):
            del peek[next(iter(peek))]

    def _stored(self, sid: str) -> Session | None:
        """A session not in memory, as stored: what `resolve` read lately, else the synchronous loader."""
        got = self._peek.get(sid)
        if got is not None and self.clock() - got[0] <= PEEK_TTL:
            return got[1]
        return self.loader(sid) if self.loader is not None else None

    def _resident(self, sid: str) -> Session | None:
        """The session to update: from memory, else reloaded from the store into memory."""
        s = self.sessions.get(sid)
        if s is None:
            s = self._stored(sid)
            if s is not None:
                self._peek.pop(sid, None)  # memory answers from now on
                self.sessions[sid] = s
                self._index(s, new=False)
                self.reloaded += 1
        return s

    def eviction_candidates(self, grace: float, limit: int = 500) -> builtins.list[Session]:
        """Ended sessions unchanged for `grace` seconds, oldest first (O(result))."""
        deadline = self.clock() - grace
        out: builtins.list[Session] = []
        for sid, at in self._ended.items():
            if at > deadline or len(out) >= limit:
                break
            out.append(self.sessions[sid])
        return out

    def evict(self, grace: float, stored: Mapping[str, Session]) -> int:
        """Drop from memory the candidates whose stored row (`stored`, read after
        `eviction_candidates`) equals memory: never lose a change the store does not have yet."""
        deadline = self.clock() - grace
        n = 0
        for sid, row in stored.items():
            s = self.sessions.get(sid)
            at = self._ended.get(sid)
            if s is None or at is None or at > deadline or row.to_api() != s.to_api():
                continue
            del self.sessions[sid], self._ended[sid], self._indexed[sid]
            self._unlink(s.node_id, sid)  # a pending `_changed` entry stays: drain reads the stored row
            n += 1
        self.evicted += n
        return n

    def in_memory(self) -> int:
        return len(self.sessions)

    def live(self) -> builtins.list[Session]:
        """The sessions not ended (what periodic passes walk)."""
        out = list(self._live.values())
        self.visited += len(out)
        return out

    def live_on(self, node_id: str) -> builtins.list[Session]:
        out = [s for sid in self._by_node.get(node_id, ()) if (s := self._live.get(sid)) is not None]
        self.visited += len(out)
        return out

    def mark_changed(self, ids: Iterable[str]) -> None:
        """Hand ids back to the next `drain_changed` (their sampling failed)."""
        self._changed.update(ids)

    def drain_changed(self) -> builtins.list[Session]:
        """Sessions changed since the last call (from memory, else as stored)."""
        ids, self._changed = self._changed, set()
        out: builtins.list[Session] = []
        for sid in ids:
            s = self.get(sid)
            if s is not None:
                out.append(s)
        return out

    # ----- ownership -----

    def owner(self, session_id: str) -> str | None:
        claimed = self._claimed.get(session_id)
        if claimed is not None:
            return claimed
        s = self.get(session_id)
        return s.node_id if s is not None else None

    def claim(self, node_id: str, session_ids: list[str]) -> None:
        """Record the owner of ids an accepted event names before the event is applied.

        Once per accepted agent event. An id already claimed is left as it is without asking the store:
        the lookup (`get`, a synchronous read on the event loop, a network round trip on PostgreSQL) ran
        again for every event of a new session until its first batch committed, and 100 agents starting
        200 events each on two supervisors held one loop for 30 s and more before its first ack."""
        claimed = self._claimed
        for sid in session_ids:
            if sid in claimed or sid in self.sessions:
                continue
            if len(claimed) < 100_000 and self.get(sid) is None:
                claimed[sid] = node_id

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
        """Restore from the database: nodes are offline after a restart, so live sessions are unreachable.
        Ended sessions are only counted: they stay in the store."""
        for s in sessions:
            if s.status in TERMINAL_SESSION_STATUSES:
                self._counts[s.status] += 1
                continue
            self._counts[s.status] += 1
            self.sessions[s.id] = s
            self._indexed[s.id] = (s.node_id, s.status)
            s.set_status("unreachable")
            self._index(s, new=False)

    def get(self, session_id: str) -> Session | None:
        """From memory, else as stored (not brought back into memory: reading changes nothing)."""
        s = self.sessions.get(session_id)
        return s if s is not None else self._stored(session_id)

    def list(self, *, project: str | None = None, status: str | None = None, node_id: str | None = None
             ) -> list[Session]:
        """The sessions in memory (live and recently ended); the API lists from the store."""
        out = [
            s for s in self.sessions.values()
            if (project is None or s.project == project)
            and (status is None or s.status == status)
            and (node_id is None or s.node_id == node_id)
        ]
        out.sort(key=lambda s: (s.started_at or 0, s.id), reverse=True)
        return out

    def counts(self) -> Counter[str]:
        """Every session ever seen, by status (kept up to date, never counted by walking)."""
        return +self._counts

    def apply_state(self, node_id: str, state: dict[str, Any], *, at: float | None = None) -> Session | None:
        """Merge a session object reported by an agent; returns the session if anything changed."""
        sid = state.get("id", state.get("session_id"))
        if not isinstance(sid, str) or not sid:
            return None
        s = self._resident(sid)
        if not self.may_claim(node_id, sid):
            self.refused += 1
            return None
        if self._handover_to.get(sid) == node_id:
            del self._handover_to[sid]
        created = s is None
        if s is None:
            s = Session(id=sid, node_id=node_id, started_at=at)
            self._claimed.pop(sid, None)
            self.add(s)
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
        if created or s.to_api() != before:
            self._index(s, new=False)
            return s
        return None

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
        s = self._resident(session_id)
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
        if (s.last_activity, s.status) != before:
            self._index(s, new=False)
            return s
        return None

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
        for s in self.live_on(node_id):
            if s.id not in seen and s.status == "unreachable":
                msg = "not reported by its node after it registered again"
                if s.error != msg:
                    s.error = msg
                    self._index(s, new=False)
                    changed.append(s)
        return changed

    def mark_node_unreachable(self, node_id: str) -> builtins.list[Session]:
        changed = []
        for s in self.live_on(node_id):
            if s.set_status("unreachable"):
                self._index(s, new=False)
                changed.append(s)
        return changed
