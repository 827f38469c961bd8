"""A protocol-speaking agent for tests: real websockets, real frames from halswarm.protocol."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from halswarm.protocol import (
    Command,
    CommandResult,
    Envelope,
    Event,
    Heartbeat,
    ProjectRef,
    Register,
    decode,
    encode,
)
from halswarm.protocol.codec import encode_raw

CommandHandler = Callable[[Command], Awaitable[CommandResult] | CommandResult | None]


class SimAgent:
    def __init__(self, url: str, token: str, node_id: str, projects: list[tuple[str, str]] | None = None) -> None:
        self.url = url
        self.token = token
        self.node_id = node_id
        self.projects = projects or []
        self.ws: ClientConnection | None = None
        self.acked = 0
        self.ack_log: list[int] = []  # every ack in arrival order (acks must never go backwards)
        self.errors: list[dict[str, Any]] = []
        self.commands: list[Command] = []
        self.frames: asyncio.Queue[Envelope] = asyncio.Queue()
        self.handler: CommandHandler | None = None
        self.registered: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._ack_event = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self, *, sessions: list[dict[str, Any]] | None = None, last_acked_seq: int = 0,
                      token: str | None = None, ssl: Any = None) -> Any:
        """`ssl`: the context that verifies a wss:// supervisor (default: the system's)."""
        extra = {"ssl": ssl} if ssl is not None else {}
        self.ws = await connect(self.url, additional_headers={"Authorization": f"Bearer {token or self.token}"},
                                max_size=None, open_timeout=10, **extra)
        reg = Register(node_id=self.node_id, hostname=f"{self.node_id}.test", version="test",
                       projects=[ProjectRef(n, d) for n, d in self.projects], capabilities={"opencode": True},
                       resources={"cpu_percent": 1.0, "ram_used_mb": 100, "ram_total_mb": 1000,
                                  "disk_used_gb": 1, "disk_total_gb": 10},
                       sessions=sessions or [], last_acked_seq=last_acked_seq)
        await self.ws.send(encode(reg))
        env = decode(await asyncio.wait_for(self.ws.recv(), 10))
        assert env.type == "registered", env
        self.registered = env.payload
        self._reader = asyncio.create_task(self._read())
        return env.payload

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                env = decode(frame, max_bytes=1 << 30)
                if env.type == "ack":
                    self.ack_log.append(env.payload.seq)
                    self.acked = max(self.acked, env.payload.seq)
                    self._ack_event.set()
                elif env.type == "error":
                    self.errors.append({"code": env.payload.code, "message": env.payload.message})
                elif env.type == "command":
                    self.commands.append(env.payload)
                    task = asyncio.create_task(self._run_command(env.payload))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                await self.frames.put(env)

    async def _run_command(self, cmd: Command) -> None:
        if self.handler is None:
            return
        res = self.handler(cmd)
        if asyncio.iscoroutine(res):
            res = await res
        if res is not None and self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.send(encode(res, request_id=cmd.command_id))

    async def send_event(self, seq: int, ev_type: str = "test.event", *, session_id: str | None = None,
                         project: str | None = None, data: Any = None, event_id: str | None = None) -> None:
        assert self.ws is not None
        ev = Event(seq=seq, event_id=event_id or f"{self.node_id}-{seq:06d}", type=ev_type, session_id=session_id,
                   project=project, data=data if data is not None else {"n": seq}, timestamp=time.time())
        await self.ws.send(encode(ev))

    async def send_raw(self, frame: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(frame)

    async def heartbeat(self) -> None:
        assert self.ws is not None
        await self.ws.send(encode(Heartbeat({"cpu_percent": 2.0, "ram_used_mb": 1, "ram_total_mb": 2,
                                             "disk_used_gb": 1, "disk_total_gb": 2})))

    async def wait_acked(self, seq: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.node_id}: acked {self.acked}, wanted {seq}")
            self._ack_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ack_event.wait(), remaining)

    def assert_acks_monotonic(self) -> None:
        """Acks arrive in order: each one is >= the one before (a repeat of a duplicate is fine)."""
        back = [(a, b) for a, b in zip(self.ack_log, self.ack_log[1:], strict=False) if b < a]
        assert not back, f"{self.node_id}: ack went backwards: {back[:5]} (of {len(self.ack_log)} acks)"

    async def next_frame(self, type_: str, timeout: float = 10.0) -> Envelope:
        deadline = time.monotonic() + timeout
        while True:
            env = await asyncio.wait_for(self.frames.get(), max(0.01, deadline - time.monotonic()))
            if env.type == type_:
                return env

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


def session_state(session_id: str, project: str, status: str = "running", **extra: Any) -> dict[str, Any]:
    return {"id": session_id, "project": project, "status": status, **extra}


def new_session_id() -> str:
    return "ses_" + uuid.uuid4().hex[:20]


def raw_frame(type_: str, payload: Any, version: Any = 1) -> str:
    frame = encode_raw(type_, payload)
    if version != 1:
        frame = frame.replace('"version":1', f'"version":{version}', 1)
    return frame
