"""Approvals: pending permission requests across the fleet (the `approvals` table, kept by an ingest
stage in the same transaction as the events), and an operator's answer carried out as the agent's
`permission_reply` command: audited by the dispatcher with the caller's name, recorded on the row and
announced as an `approval.replied` event. One answer per request: the second gets 409."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from halswarm.core import approvals as core
from halswarm.core.paging import Page, PageRequest, window
from halswarm.core.secret_values import SECRETS
from halswarm.core.timeutil import iso
from halswarm.protocol import PERMISSION_REPLY, CommandTarget, PermissionReply, ProtocolError, is_permission_id
from halswarm.protocol.permission import NOT_PENDING
from halswarm.store.reader import Reader
from halswarm.store.repos.approvals import (
    apply_changes,
    get_approval,
    mark_gone,
    page_pending,
    pending_asked_before,
    record_reply,
)
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.commands import raise_for
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.runtime.commands import CommandRunner
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.tracker import SessionTracker

APPROVAL_CURSOR = "fs"  # (asked_at, id)
REPLIED_EVENT = "approval.replied"


def approval_key(row: dict[str, Any]) -> tuple[float, str]:
    return float(row["asked_at"]), str(row["id"])


def to_api(row: dict[str, Any], now: float) -> dict[str, Any]:
    """A stored request as the API answers it (times as ISO text, the age in seconds)."""
    return {
        "id": row["id"], "node_id": row["node_id"], "session_id": row["session_id"], "project": row["project"],
        "permission": row["permission"], "patterns": row["patterns"], "always": row["always"],
        "command": row["command"], "tool": row["tool"], "status": row["status"],
        "asked_at": iso(row["asked_at"]), "age_sec": round(max(0.0, now - float(row["asked_at"])), 3),
        "reply": row["reply"], "message": row["message"], "replied_by": row["replied_by"],
        "replied_at": iso(row["replied_at"]), "escalated_at": iso(row["escalated_at"]),
        "approve_command": core.approve_command(row["id"]), "deny_command": core.deny_command(row["id"]),
    }


def _scrubbed(ch: core.Change) -> core.Change:
    """Secret values (by value, as in stored events) never reach the approvals table."""
    if not isinstance(ch, core.Asked) or not len(SECRETS):
        return ch
    return core.Asked(ch.id, ch.node_id, ch.session_id, ch.project, SECRETS.scrub(ch.permission),
                      tuple(SECRETS.scrub(p) for p in ch.patterns), tuple(SECRETS.scrub(p) for p in ch.always),
                      SECRETS.scrub(ch.command) if ch.command else None, ch.tool, ch.asked_at)


def approvals_stage(items: list[tuple[Any, ...]]) -> Callable[[Any], None] | None:
    """The ingest stage: the batch's approval changes, written with its events."""
    changes = [_scrubbed(ch) for ch in core.changes_of(items)]
    if not changes:
        return None
    return lambda conn: apply_changes(conn, changes)


def _conflict(row: dict[str, Any]) -> ApiError:
    rid = row["id"]
    if row["status"] == core.ANSWERED:
        who = f" by {row['replied_by']}" if row["replied_by"] else " (at its node)"
        when = f" at {iso(row['replied_at'])}" if row["replied_at"] else ""
        return ApiError("CONFLICT", f"approval {rid} was already answered ({row['reply'] or 'reply unknown'}{who}"
                                    f"{when}); nothing was sent")
    return ApiError("CONFLICT", f"approval {rid} is no longer pending (its session ended or the request was "
                                f"withdrawn); nothing was sent")


class ApprovalsService:
    def __init__(self, reader: Reader, writer: Writer, commands: CommandRunner, tracker: SessionTracker,
                 ingestor: Ingestor) -> None:
        self.reader = reader
        self.writer = writer
        self.commands = commands
        self.tracker = tracker
        self.ingestor = ingestor
        self._sending: set[str] = set()

    async def page(self, req: PageRequest, *, node_id: str | None = None, session_id: str | None = None,
                   project: str | None = None) -> tuple[Page[dict[str, Any]], int, float]:
        """Pending requests, oldest first; with the exact count and the time the ages are counted at."""
        rows, total = await self.reader.run(lambda c: page_pending(c, req, node_id=node_id, session_id=session_id,
                                                                   project=project))
        return window(rows, req, approval_key), total, time.time()

    async def get(self, approval_id: str) -> dict[str, Any]:
        row = await self.reader.run(lambda c: get_approval(c, approval_id)) if is_permission_id(approval_id) else None
        if row is None:
            raise ApiError("NOT_FOUND", f"approval {approval_id} not found")
        return row

    async def overdue(self, cutoff: float, *, unescalated: bool) -> list[dict[str, Any]]:
        return await self.reader.run(lambda c: pending_asked_before(c, cutoff, unescalated=unescalated))

    async def reply(self, approval_id: str, reply: str, message: str | None, *, actor: str,
                    ip: str | None = None) -> dict[str, Any]:
        """Answer one pending request through its agent; the row and an `approval.replied` event record it."""
        try:
            answer = PermissionReply(approval_id, reply, message or None)
        except ProtocolError as exc:
            raise ApiError("VALIDATION_ERROR", exc.message) from None
        if approval_id in self._sending:  # concurrent answers to one request: the first one sends
            raise ApiError("CONFLICT", f"an answer to approval {approval_id} is already being sent; nothing was sent")
        self._sending.add(approval_id)
        try:
            return await self._reply(answer, actor, ip)
        finally:
            self._sending.discard(approval_id)

    async def _reply(self, answer: PermissionReply, actor: str, ip: str | None) -> dict[str, Any]:
        row = await self.get(answer.permission_id)
        if row["status"] != core.PENDING:
            raise _conflict(row)
        sid = row["session_id"]
        # A live session goes to its node; one the supervisor does not hold (yet) to the node that asked.
        live = sid in self.tracker.sessions
        target = CommandTarget(session_id=sid) if live else CommandTarget(node_id=row["node_id"])
        res = await self.commands.dispatch(PERMISSION_REPLY, target, answer.to_args() | {"session_id": sid},
                                           actor=actor, ip=ip)
        now = time.time()
        if res.status == "failure" and (res.error or "").startswith(NOT_PENDING):
            await self.writer.run(lambda c: mark_gone(c, answer.permission_id, now))
            latest = await self.get(answer.permission_id)
            if latest["status"] != core.PENDING:
                raise _conflict(latest) from None
        raise_for(res)
        await self.writer.run(lambda c: record_reply(c, answer.permission_id, answer.reply, answer.message, actor,
                                                     now))
        data = {"id": answer.permission_id, "reply": answer.reply, "actor": actor, "node_id": row["node_id"],
                "permission": row["permission"], "patterns": row["patterns"], "command_id": res.command_id}
        if answer.message:
            data["message"] = answer.message
        await self.ingestor.emit_stored(row["node_id"], REPLIED_EVENT, data, session_id=sid, project=row["project"])
        out = to_api(await self.get(answer.permission_id), now)
        return out | {"command_id": res.command_id}
