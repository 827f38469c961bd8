"""Running commands for callers (API, policies, dependencies): dispatch, fold the session a command
returns into the tracker, or start one in the background whose outcome lands in the commands table."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from halswarm.core.model import Session
from halswarm.protocol import CommandTarget
from halswarm.store.repos.sessions import upsert_sessions
from halswarm.store.writer import Writer
from halswarm.supervisor.runtime.dispatcher import Dispatcher, Result
from halswarm.supervisor.runtime.tracker import SessionTracker


class CommandRunner:
    def __init__(self, dispatcher: Dispatcher, tracker: SessionTracker, writer: Writer) -> None:
        self.dispatcher = dispatcher
        self.tracker = tracker
        self.writer = writer
        self._bg: set[asyncio.Task[Any]] = set()

    async def dispatch(self, ctype: str, target: CommandTarget, args: dict[str, Any], **kw: Any) -> Result:
        """Dispatch and wait; raises CommandError for what cannot be dispatched at all."""
        return await self.dispatcher.dispatch(ctype, target, args, **kw)

    async def apply_output(self, res: Result) -> Session | None:
        """Fold a session object returned by a command into the tracker right away."""
        out = res.output
        if not isinstance(out, dict) or res.node_id is None:
            return None
        state = found if isinstance(found := out.get("session"), dict) else out
        if not isinstance(state.get("id"), str):
            return None
        changed = []
        old = out.get("old_session")
        if isinstance(old, dict) and isinstance(old.get("id"), str):
            s_old = self.tracker.apply_state(res.node_id, old, at=time.time())
            if s_old is not None:
                changed.append(s_old)
        s = self.tracker.apply_state(res.node_id, state, at=time.time())
        if s is not None:
            changed.append(s)
        if changed:
            await self.writer.run(lambda c: upsert_sessions(c, changed))
        return self.tracker.get(state["id"])

    async def run_and_apply(self, ctype: str, target: CommandTarget, args: dict[str, Any], **kw: Any) -> Result:
        """Dispatch, wait, and fold a successful command's session into the tracker."""
        res = await self.dispatch(ctype, target, args, **kw)
        if res.status == "success":
            await self.apply_output(res)
        return res

    async def background(self, ctype: str, target: CommandTarget, args: dict[str, Any], **kw: Any) -> str:
        """Start a command without waiting (HTTP 202); its outcome lands in the commands table."""
        await self.dispatcher.refresh_leases()  # a node another supervisor holds is a target too
        self.dispatcher.resolve(ctype, target)  # a bad target is an error now, not later in the background
        command_id = str(uuid.uuid4())
        task = asyncio.create_task(self.run_and_apply(ctype, target, args, command_id=command_id, **kw))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return command_id

    async def stop(self) -> None:
        """Cancel background commands still waiting (their rows stay `pending` or are finished by the
        dispatcher's own timeout handling)."""
        for task in list(self._bg):
            task.cancel()
        if self._bg:
            await asyncio.gather(*self._bg, return_exceptions=True)
