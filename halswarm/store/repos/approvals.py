"""SQL for the ``approvals`` table: the changes of core/approvals applied, pages of pending requests,
an operator's answer and the policy's escalation mark."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from halswarm.core.approvals import ANSWERED, GONE, PENDING, Asked, Change, Replied
from halswarm.core.paging import PageRequest
from halswarm.store.repos.jsonfields import _j, _load_json
from halswarm.store.repos.keyset import keyset_select


def apply_changes(conn: sqlite3.Connection, changes: Sequence[Change]) -> None:
    """The reducer of core/approvals in SQL: a repeated ask is ignored, only pending rows close."""
    for ch in changes:
        if isinstance(ch, Asked):
            conn.execute(
                "INSERT INTO approvals(id, node_id, session_id, project, permission, patterns, always,"
                " command, tool, asked_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (ch.id, ch.node_id, ch.session_id, ch.project, ch.permission, _j(list(ch.patterns)),
                 _j(list(ch.always)), ch.command, _j(dict(ch.tool)), ch.asked_at))
        elif isinstance(ch, Replied):
            conn.execute("UPDATE approvals SET status = ?, reply = COALESCE(reply, ?),"
                         " replied_at = COALESCE(replied_at, ?) WHERE id = ? AND status = ?",
                         (ANSWERED, ch.reply, ch.at, ch.id, PENDING))
        elif ch.ended:
            conn.execute("UPDATE approvals SET status = ?, replied_at = ? WHERE session_id = ? AND node_id = ?"
                         " AND status = ? AND asked_at <= ?", (GONE, ch.at, ch.session_id, ch.node_id, PENDING, ch.at))
        elif ch.pending is not None:
            keep = sorted(ch.pending)
            marks = ",".join("?" * len(keep))
            not_in = f" AND id NOT IN ({marks})" if keep else ""
            conn.execute(f"UPDATE approvals SET status = ?, replied_at = ? WHERE session_id = ? AND node_id = ?"
                         f" AND status = ? AND asked_at <= ?{not_in}",
                         (GONE, ch.at, ch.session_id, ch.node_id, PENDING, ch.at, *keep))


def _row(r: sqlite3.Row) -> dict[str, Any]:
    return {"id": r["id"], "node_id": r["node_id"], "session_id": r["session_id"], "project": r["project"],
            "permission": r["permission"], "patterns": _load_json(r["patterns"], []),
            "always": _load_json(r["always"], []), "command": r["command"], "tool": _load_json(r["tool"], {}),
            "asked_at": r["asked_at"], "status": r["status"], "reply": r["reply"], "message": r["message"],
            "replied_by": r["replied_by"], "replied_at": r["replied_at"], "escalated_at": r["escalated_at"]}


def get_approval(conn: sqlite3.Connection, approval_id: str) -> dict[str, Any] | None:
    r = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
    return _row(r) if r is not None else None


def _where(node_id: str | None, session_id: str | None, project: str | None) -> tuple[str, list[Any]]:
    conds, args = ["status = ?"], [PENDING]
    for col, val in (("node_id", node_id), ("session_id", session_id), ("project", project)):
        if val:
            conds.append(f"{col} = ?")
            args.append(val)
    return " WHERE " + " AND ".join(conds), args


def page_pending(conn: sqlite3.Connection, req: PageRequest, *, node_id: str | None = None,
                 session_id: str | None = None, project: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """(one page of pending requests plus one, oldest first by (asked_at, id); the exact count)."""
    where, args = _where(node_id, session_id, project)
    sql, params = keyset_select("approvals", ("asked_at", "id"), where, args, req, descending=False)
    rows = [_row(r) for r in conn.execute(sql, params)]
    total = conn.execute(f"SELECT count(*) FROM approvals{where}", args).fetchone()[0]
    return rows, int(total)


def pending_of_session(conn: sqlite3.Connection, session_id: str) -> list[dict[str, Any]]:
    return [_row(r) for r in conn.execute(
        "SELECT * FROM approvals WHERE session_id = ? AND status = ? ORDER BY asked_at, id", (session_id, PENDING))]


def pending_asked_before(conn: sqlite3.Connection, cutoff: float, *, unescalated: bool = False,
                         limit: int = 500) -> list[dict[str, Any]]:
    """Pending requests asked at or before `cutoff` (oldest first), for the unanswered-request policy."""
    extra = " AND escalated_at IS NULL" if unescalated else ""
    return [_row(r) for r in conn.execute(
        f"SELECT * FROM approvals WHERE status = ? AND asked_at <= ?{extra} ORDER BY asked_at, id LIMIT ?",
        (PENDING, cutoff, limit))]


def record_reply(conn: sqlite3.Connection, approval_id: str, reply: str, message: str | None, actor: str,
                 at: float) -> None:
    """An operator's (or the policy's) answer that the agent carried out: who and how, whatever the
    order in which opencode's own `permission.replied` arrives."""
    conn.execute("UPDATE approvals SET status = ?, reply = ?, message = ?, replied_by = ?,"
                 " replied_at = COALESCE(replied_at, ?) WHERE id = ?",
                 (ANSWERED, reply, message, actor, at, approval_id))


def mark_gone(conn: sqlite3.Connection, approval_id: str, at: float) -> None:
    conn.execute("UPDATE approvals SET status = ?, replied_at = ? WHERE id = ? AND status = ?",
                 (GONE, at, approval_id, PENDING))


def mark_escalated(conn: sqlite3.Connection, ids: Iterable[str], at: float) -> None:
    conn.executemany("UPDATE approvals SET escalated_at = ? WHERE id = ? AND escalated_at IS NULL",
                     [(at, i) for i in ids])
