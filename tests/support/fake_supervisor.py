"""A small in-test supervisor speaking the real agent wire format (SPEC 4) on loopback, for the agent
connection's tests (tests/unit/agent/test_connection*.py).

It answers `register` with `registered` (resume_from_seq = its stored high-water mark), stores events
once and gap-free, acks cumulatively, answers a gap with `error` seq_gap, can drop the connection,
refuse the upgrade (401/503) and send commands. Its store is its own: two of them are two independent
supervisors.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from halswarm.agent.outbox import AsyncOutbox
from halswarm.protocol import (
    Ack,
    CommandResult,
    Envelope,
    ErrorMsg,
    Event,
    Heartbeat,
    ProtocolError,
    Register,
    Registered,
    decode,
    encode,
)
from halswarm.protocol.errors import SEQ_GAP


class FakeSupervisor:
    def __init__(self) -> None:
        self.server: Server | None = None
        self.port = 0
        self.high = 0  # highest stored seq ("the database")
        self.stored: list[Event] = []
        self.received_seqs: list[int] = []
        self.auto_ack = True
        self.heartbeat_interval = 30
        self.reject_status: int | None = None
        self.answer_register = True
        self.lose_seq_once: int | None = None  # simulate a lost/unstored event -> later gap
        self.attempt_times: list[float] = []
        self.auth_headers: list[str | None] = []
        self.connections: list[list[Envelope]] = []
        self.registers: list[Register] = []
        self.results: dict[str, tuple[float, CommandResult, str | None]] = {}
        self.heartbeats: list[tuple[float, Heartbeat]] = []
        self.errors: list[ErrorMsg] = []
        self.ws: ServerConnection | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/agent"

    async def start(self) -> None:
        self.server = await serve(self._handler, "127.0.0.1", 0, process_request=self._process_request)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.attempt_times.append(time.monotonic())
        self.auth_headers.append(request.headers.get("Authorization"))
        if self.reject_status is not None:
            return conn.respond(HTTPStatus(self.reject_status), "nope\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.ws = ws
        frames: list[Envelope] = []
        self.connections.append(frames)
        async for raw in ws:
            try:
                env = decode(raw)
            except ProtocolError as exc:
                await ws.send(encode(ErrorMsg(exc.code, exc.message, exc.request_id)))
                continue
            frames.append(env)
            msg = env.payload
            if isinstance(msg, Register):
                self.registers.append(msg)
                if self.answer_register:
                    reg = Registered(msg.node_id, self.high, self.heartbeat_interval, 1)
                    await ws.send(encode(reg, request_id=env.request_id))
            elif isinstance(msg, Event):
                await self._on_event(ws, msg)
            elif isinstance(msg, CommandResult):
                self.results[msg.command_id] = (time.monotonic(), msg, env.request_id)
            elif isinstance(msg, Heartbeat):
                self.heartbeats.append((time.monotonic(), msg))
            elif isinstance(msg, ErrorMsg):
                self.errors.append(msg)

    async def _on_event(self, ws: ServerConnection, ev: Event) -> None:
        self.received_seqs.append(ev.seq)
        if ev.seq == self.lose_seq_once:
            self.lose_seq_once = None
            return
        if ev.seq <= self.high:  # duplicate: acknowledged again, not stored twice
            if self.auto_ack:
                await ws.send(encode(Ack(self.high)))
            return
        if ev.seq != self.high + 1:
            msg = f"expected seq {self.high + 1}, got {ev.seq}"
            await ws.send(encode(ErrorMsg(SEQ_GAP, msg, None)))
            return
        self.stored.append(ev)
        self.high = ev.seq
        if self.auto_ack:
            await ws.send(encode(Ack(self.high)))

    async def send(self, msg: Any, request_id: str | None = None) -> None:
        assert self.ws is not None
        await self.ws.send(encode(msg, request_id=request_id))

    async def drop(self) -> None:
        """Cut the connection abruptly (no close handshake), like a network failure."""
        assert self.ws is not None
        self.ws.transport.abort()


async def append(outbox: AsyncOutbox, n: int, etype: str = "session.status") -> list[int]:
    out = []
    for _ in range(n):
        ev = await outbox.append(None, etype, "ses_1", "alpha", {"n": outbox.next_seq})
        assert ev is not None
        out.append(ev.seq)
    return out
