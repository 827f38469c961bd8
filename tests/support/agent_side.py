"""The agent's side of the wire inside the test process, for the env and auth integration tests.

``AgentSide`` holds a real ``AsyncOutbox`` and a real ``SupervisorConnection`` (register, commands,
``on_ready``), the way the agent app wires them, around one agent service's command handlers:
``EnvAgent`` (an ``NodeEnvService``) and ``AuthAgent`` (an ``AuthService``) only say which service and what
the node registers with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halswarm.agent.auth import AuthService
from halswarm.agent.connection import SupervisorConnection
from halswarm.agent.env import NodeEnvService
from halswarm.agent.env.service import node_probes
from halswarm.agent.outbox import AsyncOutbox
from halswarm.protocol import Command, CommandResult, ProjectRef, Register
from tests.support.supervisor_proc import SupervisorProc

Handler = Callable[[Command], Awaitable[CommandResult]]


@dataclass
class AgentSide:
    sup: SupervisorProc
    node_id: str
    data_dir: Path
    conn: SupervisorConnection | None = field(default=None, kw_only=True)
    outbox: AsyncOutbox | None = field(default=None, kw_only=True)
    commands: list[Command] = field(default_factory=list, kw_only=True)
    # rewrites a command's result before it is sent (a compromised agent lying to the supervisor)
    tamper: Callable[[Command, CommandResult], CommandResult] | None = field(default=None, kw_only=True)

    def _service(self) -> dict[str, Handler]:
        """Build the agent service; its command handlers by command type."""
        raise NotImplementedError

    async def _register(self) -> Register:
        raise NotImplementedError

    async def _service_start(self) -> None:
        """Start the service (the connection exists, not yet connected)."""

    async def _service_stop(self) -> None:
        """Stop the service (before the connection closes)."""

    def _on_ready(self) -> Callable[[], Any] | None:
        return None

    async def start(self) -> AgentSide:
        self.outbox = await AsyncOutbox.open(self.data_dir)
        handlers = self._service()

        async def handle(cmd: Command) -> CommandResult:
            self.commands.append(cmd)
            h = handlers.get(cmd.type)
            if h is None:
                return CommandResult(cmd.command_id, "failure", error=f"unsupported command {cmd.type}")
            res = await h(cmd)
            return self.tamper(cmd, res) if self.tamper is not None else res

        self.conn = SupervisorConnection(self.sup.ws_url, self.sup.agent_token, self.outbox,
                                         register_builder=self._register, command_handler=handle,
                                         on_ready=self._on_ready())
        await self._service_start()
        self.conn.start()
        await self.conn.wait_ready(20)
        return self

    async def stop(self) -> None:
        await self._service_stop()
        conn, outbox = self.conn, self.outbox
        self.conn = self.outbox = None
        if conn is not None:
            await conn.close()
        if outbox is not None:
            await outbox.close()

    def of_type(self, ctype: str) -> list[Command]:
        return [c for c in self.commands if c.type == ctype]


@dataclass
class EnvAgent(AgentSide):
    projects: dict[str, str]
    base_env: dict[str, str]
    service: NodeEnvService | None = None
    # the node's agent config `env.probe_tools` (tool -> argv): the only extra programs its checks run
    probe_tools: dict[str, list[str]] = field(default_factory=dict)

    def _service(self) -> dict[str, Handler]:
        self.service = NodeEnvService(projects=lambda: self.projects, data_dir=self.data_dir, node_id=self.node_id,
                                  base_env=self.base_env, probe_timeout=10.0, probes=node_probes(self.probe_tools))
        return self.service.handlers()

    async def _register(self) -> Register:
        assert self.service is not None
        return Register(node_id=self.node_id, hostname="127.0.0.1", version="test",
                        projects=[ProjectRef(n, d) for n, d in sorted(self.projects.items())],
                        capabilities={"env": self.service.snapshot()})


@dataclass
class AuthAgent(AgentSide):
    service_kwargs: dict[str, Any] = field(default_factory=dict)
    auth: AuthService | None = None

    def _service(self) -> dict[str, Handler]:
        def send(msg: Any) -> None:
            assert self.conn is not None
            self.conn.send_frame(msg)

        async def emit(etype: str, data: dict[str, Any]) -> None:
            assert self.outbox is not None
            await self.outbox.append(None, etype, None, None, data)

        kwargs = {"interval": 3600.0} | self.service_kwargs
        self.auth = AuthService(None, send, None, node_id=self.node_id, data_dir=str(self.data_dir),
                                emit_event=emit, **kwargs)
        return self.auth.handlers()

    def _on_ready(self) -> Callable[[], Any] | None:
        assert self.auth is not None
        return self.auth.on_ready

    async def _register(self) -> Register:
        assert self.auth is not None
        return Register(node_id=self.node_id, hostname="127.0.0.2", version="test",
                        capabilities={"auth": self.auth.snapshot()})

    async def _service_start(self) -> None:
        assert self.auth is not None
        self.auth.start()
        await asyncio.wait_for(self.auth.first_report.wait(), 60)

    async def _service_stop(self) -> None:
        auth, self.auth = self.auth, None
        if auth is not None:
            await auth.stop()
