"""Sessions: listed from the store (ended sessions leave memory), a session from memory else the
store; every change is a command to the session's agent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from halswarm.core.model import Session
from halswarm.core.paging import Page, PageRequest, window
from halswarm.protocol import CommandTarget
from halswarm.store.reader import Reader
from halswarm.store.repos.sessions import get_session, list_sessions
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
    def __init__(self, tracker: SessionTracker, commands: CommandRunner, reader: Reader,
                 held_here: Callable[[str], bool] | None = None) -> None:
        self.tracker = tracker
        self.commands = commands
        self.reader = reader
        # Several supervisors on one PostgreSQL: whether a node is connected here. Memory is the newest word
        # only about the sessions of those; the others' are as their holder stored them (None: SQLite, one
        # supervisor, memory always).
        self.held_here = held_here

    async def page(self, project: str | None, status: str | None, node_id: str | None,
                   req: PageRequest, *, q: str | None = None) -> tuple[Page[Session], int]:
        """Newest first by (started_at, id), walking the store's index; with the exact total.

        Every change the tracker makes is stored before it is acknowledged, so the store lists what
        memory holds, and also the sessions that left memory. `q`: a substring of id, project, title or
        current task (the console's search)."""
        rows, total = await self.reader.run(lambda c: list_sessions(c, req, project=project or None,
                                                                    status=status or None, node_id=node_id or None,
                                                                    q=q or None))
        return window(rows, req, session_key), total

    async def get(self, session_id: str) -> Session:
        s = self.tracker.sessions.get(session_id)  # in memory: the newest word (of a node connected here)
        if s is None or (self.held_here is not None and not self.held_here(s.node_id)):
            stored = await self.reader.run(lambda c: get_session(c, session_id))
            s = stored if stored is not None else s
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
        await self.get(session_id)
        res = await self.commands.dispatch(ctype, CommandTarget(session_id=session_id), args, **kw)
        raise_for(res)
        await self.commands.apply_output(res)
        return res.to_api()
