"""An ``AgentCommands`` rig for the agent's command tests: a fake opencode that answers like the real HTTP
API and reports what it did as events on the bridge (a moment later, in order), like the real
/global/event stream; ``Sink`` records what the bridge forwards."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

from halswarm.agent.bridge import EventBridge
from halswarm.agent.commands import AgentCommands
from halswarm.agent.opencode_client import OpencodeNotFound
from halswarm.agent.opencode_events import OpencodeEvent
from halswarm.agent.session_state import SessionReducer
from halswarm.protocol import Command, CommandTarget


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def __call__(self, event_id: str | None, etype: str, sid: str | None, project: str | None, data: Any) -> Any:
        ev = {"event_id": event_id, "type": etype, "session_id": sid, "project": project, "data": data}
        self.events.append(ev)
        return ev

    def states(self, sid: str) -> list[str]:
        return [e["data"]["status"] for e in self.events if e["type"] == "session.state" and e["session_id"] == sid]


class FakeOpencode:
    """The subset of OpencodeClient the commands use.

    ``turns``: ``"complete"`` (busy -> idle), ``"hang"`` (stays busy) or ``"error"`` (session.error then
    idle). ``events=False`` simulates a dead event stream. ``fail[method] = exc`` makes a call raise.
    """

    def __init__(self, bridge: EventBridge, *, turns: str = "complete", events: bool = True) -> None:
        self.bridge = bridge
        self.turns = turns
        self.events = events
        self.calls: list[tuple[Any, ...]] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.busy: set[str] = set()
        self.fail: dict[str, Exception] = {}
        self.permissions: dict[str, dict[str, Any]] = {}  # pending requests, as GET /permission lists them
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[OpencodeEvent] = asyncio.Queue()
        self._pump = asyncio.get_running_loop().create_task(self._deliver())

    async def _deliver(self) -> None:
        while True:
            ev = await self._queue.get()
            await asyncio.sleep(0.005)
            await self.bridge.handle(ev)

    def _emit(self, etype: str, sid: str, **props: Any) -> None:
        if self.events:
            directory = self.sessions.get(sid, {}).get("directory")
            self._queue.put_nowait(OpencodeEvent(etype, {"sessionID": sid, **props}, directory=directory))

    def _check(self, name: str) -> None:
        exc = self.fail.get(name)
        if exc is not None:
            raise exc

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    async def close(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)

    # -- API ------------------------------------------------------------------------------------
    async def create_session(self, directory: str, title: str | None = None, model: str | None = None
                             ) -> dict[str, Any]:
        self.calls.append(("create_session", directory, model))
        self._check("create_session")
        sid = f"ses_fake{next(self._ids)}"
        info: dict[str, Any] = {"id": sid, "directory": directory, "title": title or "New session",
                                "time": {"created": int(time.time() * 1000)}}
        if model:
            provider, _, model_id = model.partition("/")
            info["model"] = {"id": model_id, "providerID": provider}
        self.sessions[sid] = info
        self._emit("session.created", sid, info=dict(info))
        return dict(info)

    async def get_session(self, session_id: str, *, directory: str | None = None) -> dict[str, Any]:
        self.calls.append(("get_session", session_id))
        if session_id not in self.sessions:
            raise OpencodeNotFound(f"Session not found: {session_id}", status=404, name="NotFoundError")
        return dict(self.sessions[session_id])

    async def prompt_async(self, session_id: str, text: str, *, model: str | None = None,
                           directory: str | None = None, agent: str | None = None) -> None:
        self.calls.append(("prompt_async", session_id, text, model, directory))
        self._check("prompt_async")
        if session_id not in self.sessions:
            raise OpencodeNotFound(f"Session not found: {session_id}", status=404, name="NotFoundError")
        self.busy.add(session_id)
        self._emit("session.status", session_id, status={"type": "busy"})
        if self.turns == "error":
            self._emit("session.error", session_id, error={"name": "APIError", "data": {"message": "boom"}})
        if self.turns in ("complete", "error"):
            self._end_turn(session_id)

    def _end_turn(self, sid: str) -> None:
        self.busy.discard(sid)
        self._emit("session.status", sid, status={"type": "idle"})
        self._emit("session.idle", sid)

    async def abort(self, session_id: str, *, directory: str | None = None) -> bool:
        self.calls.append(("abort", session_id))
        self._check("abort")
        if session_id in self.busy:
            self._emit("session.error", session_id, error={"name": "MessageAbortedError", "data": {"message": "x"}})
        self._end_turn(session_id)
        return True

    async def delete_session(self, session_id: str, *, directory: str | None = None) -> bool:
        self.calls.append(("delete_session", session_id))
        self._check("delete_session")
        if session_id not in self.sessions:
            raise OpencodeNotFound(f"Session not found: {session_id}", status=404, name="NotFoundError")
        info = self.sessions.pop(session_id)
        self._emit("session.deleted", session_id, info=info)
        return True

    def ask(self, sid: str, rid: str, *, emit: bool = True) -> None:
        """The session's tool call needs a permission: opencode lists it and emits permission.asked."""
        req = {"id": rid, "sessionID": sid, "permission": "bash", "patterns": ["echo hi"], "always": ["echo *"],
               "metadata": {"command": "echo hi"}, "tool": {"messageID": "msg_1", "callID": "call_1"}}
        self.permissions[rid] = req
        if emit:
            self._emit("permission.asked", sid, **{k: v for k, v in req.items() if k != "sessionID"})

    async def list_permissions(self, *, directory: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(("list_permissions", directory))
        return [dict(p) for p in self.permissions.values()
                if self.sessions.get(p["sessionID"], {}).get("directory") == directory]

    async def reply_permission(self, request_id: str, reply: str, *, message: str | None = None,
                               directory: str | None = None) -> bool:
        self.calls.append(("reply_permission", request_id, reply, message, directory))
        self._check("reply_permission")
        req = self.permissions.pop(request_id, None)
        if req is None:
            raise OpencodeNotFound(f"Permission not found: {request_id}", status=404, name="NotFoundError")
        self._emit("permission.replied", req["sessionID"], requestID=request_id, reply=reply)
        return True


class Rig:
    def __init__(self, tmp: Path, **fake_kw: Any) -> None:
        self.proj = tmp / "alpha"
        self.proj.mkdir()
        self.projects = {"alpha": str(self.proj), "ghost": str(tmp / "ghost")}
        self.sink = Sink()
        self.bridge = EventBridge(SessionReducer(self.projects), self.sink)
        self.fake = FakeOpencode(self.bridge, **fake_kw)
        self.up = True
        self.commands = AgentCommands(
            self.bridge,
            client=lambda: self.fake if self.up else None,
            unavailable_reason=lambda: "opencode serve is backoff (exited with code 1)",
            projects=lambda: self.projects,
            resume_message="please continue",
            start_wait=0.5,
            kill_wait=0.5,
            reassert_delay=0.05,
            poll=0.01,
        )
        self._ids = itertools.count(1)

    async def run(self, ctype: str, *, session_id: str | None = None, timeout_ms: int = 10_000, **args: Any
                  ) -> Any:
        cmd = Command(f"cmd-{next(self._ids)}", ctype, CommandTarget(session_id=session_id), args, timeout_ms)
        return await self.commands.handle(cmd)

    async def start(self, **args: Any) -> dict[str, Any]:
        res = await self.run("create_session", project="alpha", **args)
        assert res.status == "success", res.error
        return res.output

    async def settle(self) -> None:
        await asyncio.sleep(0.05)
