"""One simulated node for the policy tests: sessions put into the states the policies act on, and the
answers hal-agent gives to resume / handover / kill_session (docs/protocol.md), over tests/support/agentsim.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from halswarm.protocol import Command, CommandResult
from tests.support.agentsim import SimAgent


class SimFleet:
    """One simulated node, project `alpha`, answering like hal-agent (docs/protocol.md)."""

    def __init__(self, sup: Any, node_id: str = "policy-node") -> None:
        self.sup = sup
        self.agent = SimAgent(sup.ws_url, sup.agent_token, node_id, [("alpha", "/srv/alpha")])
        self.agent.handler = self.handle
        self.seq = 0
        self.sessions: dict[str, dict[str, Any]] = {}
        self.refuse: set[str] = set()
        self.commands = self.agent.commands

    async def connect(self) -> None:
        reg = await self.agent.connect(sessions=list(self.sessions.values()), last_acked_seq=self.seq)
        self.seq = max(self.seq, reg.resume_from_seq)

    async def close(self) -> None:
        await self.agent.close()

    async def report(self, state: dict[str, Any]) -> None:
        self.sessions[state["id"]] = state
        self.seq += 1
        await self.agent.send_event(self.seq, "session.state", session_id=state["id"], project="alpha", data=state)
        await self.agent.wait_acked(self.seq)

    def _new(self, status: str, **kw: Any) -> dict[str, Any]:
        now = time.time()
        return {"id": "ses_" + uuid.uuid4().hex[:12], "project": "alpha", "directory": "/srv/alpha",
                "status": status, "model": "fake/fake-model", "tokens": {"input": 10, "output": 5, "total": 15},
                "cost_usd": 0.01, "compaction_count": 0, "started_at": now - 600, "last_activity": now} | kw

    async def idle_session(self) -> str:
        s = self._new("idle", last_activity=time.time() - 120)
        await self.report(s)
        return s["id"]

    async def compacted_session(self) -> str:
        s = self._new("running", compaction_count=3)
        await self.report(s)
        return s["id"]

    async def costly_session(self) -> str:
        s = self._new("running", cost_usd=7.5)
        await self.report(s)
        return s["id"]

    async def unresponsive_session(self) -> str:
        s = self._new("idle", last_activity=time.time() - 120)
        self.refuse.add(s["id"])
        await self.report(s)
        return s["id"]

    async def handle(self, cmd: Command) -> CommandResult:
        sid = cmd.target.session_id or cmd.args.get("session_id")
        s = self.sessions.get(sid)
        if s is None:
            return CommandResult(cmd.command_id, "failure", None, f"session {sid} not found on this node")
        if sid in self.refuse:
            return CommandResult(cmd.command_id, "failure", None, "opencode did not accept the prompt")
        if cmd.type == "resume":
            # The session works on the prompt for a moment and goes idle again (fresh activity).
            asyncio.get_running_loop().call_later(0.2, lambda: asyncio.ensure_future(
                self.report(s | {"status": "idle", "last_activity": time.time()})))
            return CommandResult(cmd.command_id, "success", {"session_id": sid, "accepted": True})
        if cmd.type == "kill_session":
            killed = s | {"status": "killed", "last_activity": time.time()}
            self.sessions[sid] = killed
            return CommandResult(cmd.command_id, "success", killed)
        if cmd.type == "handover":
            old = s | {"status": "killed", "last_activity": time.time()}
            new = self._new("running")
            self.sessions[sid], self.sessions[new["id"]] = old, new
            return CommandResult(cmd.command_id, "success", {"old_session": old, "session": new})
        return CommandResult(cmd.command_id, "failure", None, f"unexpected command {cmd.type}")

    def sent(self, ctype: str, sid: str) -> int:
        return sum(1 for c in self.commands if c.type == ctype and (c.target.session_id or c.args.get("session_id"))
                   == sid)
