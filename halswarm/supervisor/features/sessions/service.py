"""Sessions: read from the tracker; every change is a command to the session's agent."""

from __future__ import annotations

from typing import Any

from halswarm.core.model import Session
from halswarm.core.paging import Page, PageRequest, slice_sorted
from halswarm.protocol import CommandTarget
from halswarm.supervisor.apikit.commands import raise_for
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.runtime.commands import CommandRunner
from halswarm.supervisor.runtime.tracker import SessionTracker

SESSION_CURSOR = "fs"  # (started_at, id)


def session_key(s: Session) -> tuple[float, str]:
    return float(s.started_at or 0), s.id


# API action -> agent command type
ACTIONS = {"resume": "resume", "restart": "restart_session", "handover": "handover", "kill": "kill_session"}


class SessionsService:
    def __init__(self, tracker: SessionTracker, commands: CommandRunner) -> None:
        self.tracker = tracker
        self.commands = commands

    def page(self, project: str | None, status: str | None, node_id: str | None,
             req: PageRequest) -> tuple[Page[Session], int]:
        """Newest first by (started_at, id), the tracker's order; with the exact total (in memory)."""
        items = self.tracker.list(project=project or None, status=status or None, node_id=node_id or None)
        return slice_sorted(items, req, session_key, descending=True), len(items)

    def get(self, session_id: str) -> Session:
        s = self.tracker.get(session_id)
        if s is None:
            raise ApiError("NOT_FOUND", f"session {session_id} not found")
        return s

    async def create(self, project: str, prompt: str | None, model: str | None, node_id: str | None,
                     idempotency_key: str | None, *, actor: str, ip: str | None) -> dict[str, Any]:
        args = {"project": project}
        if prompt:
            args["prompt"] = prompt
        if model:
            args["model"] = model
        res = await self.commands.dispatch("create_session", CommandTarget(project=project, node_id=node_id), args,
                                           actor=actor, ip=ip, idempotency_key=idempotency_key)
        raise_for(res)
        session = await self.commands.apply_output(res)
        if session is None:
            raise ApiError("DISPATCH_ERROR", f"agent {res.node_id} created no session it could describe")
        return session.to_api() | {"command_id": res.command_id}

    async def prompt(self, session_id: str, message: str, idempotency_key: str | None, *, actor: str,
                     ip: str | None) -> dict[str, Any]:
        return await self._on_session(session_id, "prompt_session", {"session_id": session_id, "message": message},
                                      actor=actor, ip=ip, idempotency_key=idempotency_key)

    async def act(self, session_id: str, action: str, *, actor: str, ip: str | None) -> dict[str, Any]:
        return await self._on_session(session_id, ACTIONS[action], {"session_id": session_id}, actor=actor, ip=ip)

    async def _on_session(self, session_id: str, ctype: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.get(session_id)
        res = await self.commands.dispatch(ctype, CommandTarget(session_id=session_id), args, **kw)
        raise_for(res)
        await self.commands.apply_output(res)
        return res.to_api()
