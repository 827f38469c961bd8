"""Pending permission requests (approvals) from stored events: a pure reducer, stdlib only.

Events in, changes out: `permission.asked` opens a request, `permission.replied` (opencode's answer,
forwarded by the agent) closes it, and a `session.state` closes what the session no longer lists as
pending (its `pending_permissions`) or every request of a session that ended. The store applies the
changes (store/repos/approvals.py); the same reducer over a dict is the in-memory model the unit tests
check it against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PENDING, ANSWERED, GONE = "pending", "answered", "gone"
ASKED, REPLIED, STATE = "permission.asked", "permission.replied", "session.state"
# A session that ended takes its requests with it; an `error` session may still be prompted, so its
# requests stay (an answer opencode no longer has is refused by the agent and the row closes then).
ENDED = frozenset({"completed", "killed"})
_ID = re.compile(r"per_[A-Za-z0-9]{1,64}")
MAX_PATTERNS = 20
MAX_TEXT = 500


def approve_command(approval_id: str) -> str:
    """The halctl line that answers a request (named in notifications)."""
    return f"halctl approvals approve {approval_id}"


def deny_command(approval_id: str) -> str:
    return f"halctl approvals deny {approval_id}"


@dataclass(frozen=True, slots=True)
class Asked:
    id: str
    node_id: str
    session_id: str
    project: str | None
    permission: str
    patterns: tuple[str, ...]
    always: tuple[str, ...]
    command: str | None
    tool: Mapping[str, Any] = field(default_factory=dict)
    asked_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Replied:
    id: str
    reply: str | None
    at: float


@dataclass(frozen=True, slots=True)
class SessionPending:
    """A session's report: the request ids still pending (None: the report does not say), or ended."""

    node_id: str
    session_id: str
    pending: frozenset[str] | None
    ended: bool
    at: float


Change = Asked | Replied | SessionPending


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(t for v in value[:MAX_PATTERNS] if (t := _text(v)) is not None)


def change_of(node_id: str | None, ev_type: str, session_id: str | None, project: str | None, data: Any,
              ts: float) -> Change | None:
    """What one stored event does to the approvals, or None (most events)."""
    if ev_type not in (ASKED, REPLIED, STATE) or not node_id or not isinstance(data, dict):
        return None
    if ev_type == ASKED:
        rid, sid = data.get("id"), data.get("sessionID") or session_id
        if not (isinstance(rid, str) and _ID.fullmatch(rid)) or not isinstance(sid, str) or not sid:
            return None
        meta = m if isinstance(m := data.get("metadata"), dict) else {}
        tool = t if isinstance(t := data.get("tool"), dict) else {}
        return Asked(rid, node_id, sid, project, _text(data.get("permission")) or "unknown",
                     _texts(data.get("patterns")), _texts(data.get("always")), _text(meta.get("command")),
                     {k: v for k, v in tool.items() if k in ("messageID", "callID") and isinstance(v, str)}, ts)
    if ev_type == REPLIED:
        rid = data.get("requestID") or data.get("permissionID") or data.get("id")
        if not isinstance(rid, str) or not _ID.fullmatch(rid):
            return None
        reply = data.get("reply") or data.get("response")
        return Replied(rid, reply if isinstance(reply, str) else None, ts)
    sid = data.get("id") or session_id
    if not isinstance(sid, str) or not sid:
        return None
    listed = data.get("pending_permissions")
    pending = frozenset(p for p in listed if isinstance(p, str)) if isinstance(listed, list) else None
    ended = data.get("status") in ENDED
    if pending is None and not ended:
        return None
    return SessionPending(node_id, sid, pending, ended, ts)


def changes_of(events: Iterable[tuple[str | None, str, str | None, str | None, Any, float]]) -> list[Change]:
    """`change_of` over (node_id, type, session_id, project, data, time) tuples, in order (the supervisor
    passes the time each event was received, so ages and the timeout use one clock)."""
    out = []
    for ev in events:
        ch = change_of(*ev)
        if ch is not None:
            out.append(ch)
    return out


@dataclass(slots=True)
class Approval:
    """One request as the reducer keeps it (the store's row has the same fields)."""

    asked: Asked
    status: str = PENDING
    reply: str | None = None
    replied_at: float | None = None


def reduce(state: dict[str, Approval], changes: Iterable[Change]) -> dict[str, Approval]:
    """Apply changes to {id: Approval} in place and return it.

    A repeated ask changes nothing (replays are stored once); a reply or a session report closes only
    what is still pending, so the first answer wins; a session's report closes only its own requests
    on its own node."""
    for ch in changes:
        if isinstance(ch, Asked):
            state.setdefault(ch.id, Approval(ch))
        elif isinstance(ch, Replied):
            a = state.get(ch.id)
            if a is not None and a.status == PENDING:
                a.status, a.reply, a.replied_at = ANSWERED, ch.reply, ch.at
        else:
            for a in state.values():
                if (a.status == PENDING and a.asked.session_id == ch.session_id and a.asked.node_id == ch.node_id
                        and (ch.ended or (ch.pending is not None and a.asked.id not in ch.pending))
                        and a.asked.asked_at <= ch.at):
                    a.status, a.replied_at = GONE, ch.at
    return state


def overdue(asked_at: Iterable[tuple[str, float]], now: float, timeout_sec: float) -> list[str]:
    """Ids of pending requests asked at least `timeout_sec` ago (the unanswered-request policy)."""
    return [rid for rid, at in asked_at if now - at >= timeout_sec]
