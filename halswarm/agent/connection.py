"""The agent's WebSocket link to the supervisor (SPEC 4).

One ``SupervisorConnection`` per agent. ``run()`` (or ``start()``) connects, registers, replays
the outbox from ``resume_from_seq``, streams new events, answers commands and sends heartbeats
(the first right after registration; each carries the outbox's pending/refused counts);
it reconnects forever with full-jitter backoff until ``close()``.

Failover (issue 21): ``url`` may be a list of supervisor URLs, and a URL whose host name has several
addresses counts as several supervisors. Which one the next attempt goes to is decided by the sans-I/O
``halswarm.protocol.failover.Rotation``; this module resolves names (``getaddrinfo`` off the event
loop, every A/AAAA answer) and dials the chosen address while TLS and the ``Host`` header keep the
URL's name. ``current_target`` and the ``failovers`` counter say where the agent is.

Every decision (states and their legal transitions, the send window, acks, ``seq_gap`` rewinds,
backoff, heartbeat and registration deadlines) is made by the sans-I/O
``halswarm.protocol.agent_link.AgentLinkCore``; this module only moves frames and runs timers.

Per connection a few tasks run side by side: the reader (acks, commands, errors), the event
sender (windowed: at most ``max_in_flight`` unacked events on the wire), the acker (applies the
highest cumulative ack to the outbox; acks arriving in bursts coalesce into one delete), the
heartbeat and the drain of queued frames (``send_frame``, command results). Commands run as
their own tasks and survive a reconnect: their result is queued and sent once ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import socket
import ssl as ssl_mod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from halswarm.agent.outbox import AsyncOutbox
from halswarm.agent.resources import sample_resources
from halswarm.protocol import (
    MAX_FRAME_BYTES,
    Ack,
    Command,
    CommandResult,
    ErrorMsg,
    Event,
    Heartbeat,
    Message,
    ProtocolError,
    Register,
    Registered,
    decode,
    encode,
)
from halswarm.protocol.agent_link import AgentLinkCore, ConnState, Resync, Rewind
from halswarm.protocol.backoff import Backoff
from halswarm.protocol.errors import SEQ_GAP, UNEXPECTED_TYPE
from halswarm.protocol.failover import Rotation, Target
from halswarm.protocol.messages import COMMAND_STATUSES
from halswarm.protocol.supervisor_urls import SupervisorUrl, parse_supervisor_urls

log = logging.getLogger(__name__)

CommandHandler = Callable[[Command], Awaitable[Any]]
RegisterBuilder = Callable[[], Register | dict[str, Any] | Awaitable[Register | dict[str, Any]]]
ReadyCallback = Callable[[Registered], Awaitable[None] | None]

_AUTH_STATUSES = frozenset({401, 403})
_THROTTLE_STATUSES = frozenset({429})
_PREVIEW_CHARS = 16 * 1024


class RegistrationError(Exception):
    """The supervisor did not answer ``register`` with ``registered``."""


class _Resync(Exception):
    """The supervisor expects a seq this outbox no longer holds: re-register to renumber."""


class _Unresolvable(Exception):
    """The current supervisor URL's host name did not resolve."""


Resolver = Callable[[SupervisorUrl], Awaitable[list[str]]]


async def resolve_addresses(url: SupervisorUrl) -> list[str]:
    """Every address (A and AAAA) of the URL's host, in the resolver's order (``getaddrinfo``, off the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class SupervisorConnection:
    """Client side of the agent <-> supervisor protocol. Use from one event loop only."""

    def __init__(
        self,
        url: str | Sequence[str],
        token: str,
        outbox: AsyncOutbox,
        *,
        register_builder: RegisterBuilder,
        command_handler: CommandHandler | None = None,
        on_ready: ReadyCallback | None = None,
        resources_fn: Callable[[], dict[str, float]] = sample_resources,
        process_fn: Callable[[], dict[str, float]] | None = None,
        backoff: Backoff | None = None,
        auth_backoff: Backoff | None = None,
        open_timeout: float = 10.0,
        registered_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_in_flight: int = 1000,
        batch_size: int = 200,
        max_queued_frames: int = 1000,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        ssl: ssl_mod.SSLContext | None = None,
        proxy: str | bool | None = None,
        resolver: Resolver = resolve_addresses,
    ) -> None:
        if max_in_flight < 1 or batch_size < 1:
            raise ValueError("max_in_flight and batch_size must be >= 1")
        # SupervisorUrlError (a ValueError) for a bad URL; behind a proxy the proxy resolves names.
        self.rotation = Rotation(parse_supervisor_urls(url if isinstance(url, str) else list(url)),
                                 resolve=not proxy)
        self._resolver = resolver
        self.current_target: Target | None = None  # the supervisor registered with (None when not ready)
        self.core = AgentLinkCore(
            max_in_flight=max_in_flight,
            backoff=backoff,
            auth_backoff=auth_backoff,
            registered_timeout=registered_timeout,
        )
        self._token = token
        self._outbox = outbox
        self._register_builder = register_builder
        self._command_handler = command_handler
        self._on_ready = on_ready
        self._resources_fn = resources_fn
        self._process_fn = process_fn
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.batch_size = batch_size
        self.max_frame_bytes = max_frame_bytes
        self._ssl = ssl
        self._proxy = proxy

        self._closing = False
        self._run_task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()
        self.registered: Registered | None = None

        # Per-session sender state.
        self._wake = asyncio.Event()  # sender: new event, ack, rewind
        self._ack_wake = asyncio.Event()

        self._queue: deque[str] = deque()
        self._max_queued = max_queued_frames
        self._queue_wake = asyncio.Event()
        self._commands: dict[str, asyncio.Task[None]] = {}

        self.counters: dict[str, int] = dict.fromkeys(
            (
                "connect_attempts",
                "connect_failures",
                "auth_failures",
                "registrations",
                "reconnects",
                "events_sent",
                "acks",
                "commands",
                "commands_failed",
                "commands_timed_out",
                "heartbeats_sent",
                "errors_received",
                "bad_frames",
                "seq_gap_rewinds",
                "frames_queued",
                "frames_dropped",
                "failovers",
                "resolve_failures",
            ),
            0,
        )
        outbox.on_append(self._on_append)

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ConnState:
        return self.core.state

    @property
    def url(self) -> str:
        """The supervisor URL being used (or tried next)."""
        return self.rotation.url.url

    @property
    def max_in_flight(self) -> int:
        return self.core.max_in_flight

    @property
    def registered_timeout(self) -> float:
        return self.core.registered_timeout

    def _set_state(self, new: ConnState) -> None:
        old = self.core.state
        self.core.transition(new)  # raises IllegalTransition (a RuntimeError)
        log.debug("connection state %s -> %s", old, new)
        if new is ConnState.READY:
            self._ready.set()
        else:
            self._ready.clear()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until registered (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> asyncio.Task[None]:
        """Run the connection in a background task."""
        if self._run_task is None or self._run_task.done():
            self._run_task = asyncio.create_task(self.run(), name="supervisor-connection")
        return self._run_task

    async def run(self) -> None:
        """Connect and stay connected until ``close()``."""
        if self.core.state is ConnState.CLOSED:
            raise RuntimeError("connection is closed")
        if self._run_task is None:
            self._run_task = asyncio.current_task()
        while not self._closing:
            delay = await self._attempt()
            if self._closing:
                break
            await asyncio.sleep(delay)

    async def close(self) -> None:
        """Stop reconnecting, cancel commands and tasks, close the socket. Idempotent."""
        if self.core.state is ConnState.CLOSED:
            return
        self._closing = True
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        commands = list(self._commands.values())
        for t in commands:
            t.cancel()
        await asyncio.gather(*commands, return_exceptions=True)
        self._outbox.remove_on_append(self._on_append)
        self._set_state(ConnState.CLOSED)

    # ------------------------------------------------------------------ one connection

    async def _target(self) -> Target:
        """The supervisor to dial now; resolves the current URL's host first when it is a name."""
        rot = self.rotation
        if rot.needs_resolve:
            try:
                async with asyncio.timeout(self.open_timeout):
                    addresses = await self._resolver(rot.url)
            except (OSError, TimeoutError) as exc:
                raise _Unresolvable(f"cannot resolve {rot.url.host}: {str(exc) or type(exc).__name__}") from None
            if not addresses:
                raise _Unresolvable(f"{rot.url.host} has no address")
            rot.resolved(addresses)
            if len(rot.addresses) > 1:
                log.info("supervisor %s resolves to %d addresses: %s", rot.url.url, len(rot.addresses),
                         ", ".join(str(a) for a in rot.addresses))
        return rot.current()

    async def _attempt(self) -> float:
        """One connect/register/serve cycle. Returns the delay before the next attempt."""
        self._set_state(ConnState.CONNECTING)
        self.counters["connect_attempts"] += 1
        kwargs: dict[str, Any] = {
            "additional_headers": {"Authorization": f"Bearer {self._token}"},
            "open_timeout": self.open_timeout,
            "close_timeout": self.close_timeout,
            # Oversized frames are the codec's business (error frame, connection survives);
            # websockets only stops the truly absurd ones.
            "max_size": 4 * self.max_frame_bytes,
            "proxy": self._proxy,
        }
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        label = self.url
        move_on = True  # after this attempt, try the next supervisor of the rotation
        try:
            target = await self._target()
            label = target.label
            if target.address is not None:
                # Dial this address; TLS (server_hostname) and the Host header keep the URL's name.
                kwargs["host"] = target.address
                kwargs["port"] = target.url.port
            async with connect(target.url.url, **kwargs) as ws:
                self._ws = ws
                self._set_state(ConnState.REGISTERING)
                reg = await self._register(ws)
                self._became_ready(reg)
                await self._serve(ws)
            log.info("supervisor connection closed (%s)", label)
        except _Unresolvable as exc:
            self.counters["connect_failures"] += 1
            self.counters["resolve_failures"] += 1
            log.warning("cannot connect to supervisor %s: %s", label, exc)
            return self.core.retry_delay(round_done=self.rotation.unresolvable())
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.counters["connect_failures"] += 1
            if status in _AUTH_STATUSES or status in _THROTTLE_STATUSES:
                delay = self.core.retry_delay(refused=True, round_done=self.rotation.failed())
                if status in _AUTH_STATUSES:
                    self.counters["auth_failures"] += 1
                    log.error(
                        "supervisor %s rejected the agent token (HTTP %d): check auth_token; retrying in %.1f s",
                        label,
                        status,
                        delay,
                    )
                else:
                    log.warning(
                        "supervisor %s is throttling this agent (HTTP %d); retrying in %.1f s", label, status, delay
                    )
                return delay
            log.warning("supervisor %s refused the WebSocket upgrade (HTTP %d)", label, status)
        except ConnectionClosed as exc:
            log.warning("supervisor connection lost (%s): %s", label, exc)  # the phrase operators grep for
        except _Resync as exc:
            move_on = False  # the same supervisor: re-register there to renumber
            log.warning("re-registering to resynchronise seqs: %s", exc)
        except (OSError, TimeoutError, RegistrationError, ProtocolError, InvalidHandshake) as exc:
            # InvalidHandshake: the peer closed or answered garbage before the upgrade (a restarting
            # supervisor, a proxy): as routine as a refused connection, so one line, not a traceback.
            self.counters["connect_failures"] += 1
            log.warning("cannot connect to supervisor %s: %s", label, str(exc) or type(exc).__name__)
        except Exception as exc:  # any other failure must not kill the reconnect loop
            self.counters["connect_failures"] += 1
            log.exception("supervisor connection to %s failed: %s", label, exc)
        finally:
            self._ws = None
            self.current_target = None
            if self.core.state not in (ConnState.DISCONNECTED, ConnState.CLOSED):
                self._set_state(ConnState.DISCONNECTED)
        round_done = self.rotation.failed() if move_on else True
        if round_done is False:
            log.info("trying the next supervisor: %s", self.rotation.url.url)
        return self.core.retry_delay(round_done=round_done)

    async def _register(self, ws: ClientConnection) -> Registered:
        built = self._register_builder()
        if inspect.isawaitable(built):
            built = await built
        reg = Register.from_payload(built) if isinstance(built, dict) else built
        if not reg.resources:
            reg = dataclasses.replace(reg, resources=await asyncio.to_thread(self._resources_fn))
        # The outbox, not the caller, is the authority on what was acknowledged.
        reg = dataclasses.replace(reg, last_acked_seq=self._outbox.last_acked_seq)
        await ws.send(encode(reg))
        self.core.register_sent()
        try:
            async with asyncio.timeout(self.core.register_time_left()):
                while True:
                    env = await self._recv(ws)
                    if env is None:
                        continue
                    if env.type == Registered.TYPE:
                        registered: Registered = env.payload
                        break
                    if env.type == ErrorMsg.TYPE:
                        err: ErrorMsg = env.payload
                        raise RegistrationError(f"supervisor refused register: {err.code}: {err.message}")
                    if env.type != "heartbeat":
                        raise RegistrationError(f"expected 'registered', got {env.type!r}")
        except TimeoutError:
            raise RegistrationError(f"no 'registered' within {self.registered_timeout} s") from None
        # After a failover, the resume seq of a supervisor that never acked our events is not trusted
        # to delete any (independent stores number independently; halswarm.protocol.failover).
        await self._outbox.resume_from(registered.resume_from_seq, same_store=self.rotation.same_store())
        self.rotation.resumed()
        return registered

    def _became_ready(self, reg: Registered) -> None:
        self.registered = reg
        moved = self.rotation.registered()
        self.current_target = self.rotation.current()
        if moved:
            self.counters["failovers"] += 1
        self.core.registered(reg.resume_from_seq, self._outbox.last_acked_seq, reg.heartbeat_interval_sec)
        if self.counters["registrations"]:
            self.counters["reconnects"] += 1
        self.counters["registrations"] += 1
        self._set_state(ConnState.READY)
        self._wake.set()
        self._queue_wake.set()
        log.info(
            "registered with supervisor %s as %s (resume_from_seq=%d, %d pending)%s",
            self.current_target.label,
            reg.node_id,
            reg.resume_from_seq,
            self._outbox.core.size(),
            f"; failover #{self.counters['failovers']}" if moved else "",
        )

    async def _serve(self, ws: ClientConnection) -> None:
        assert self.registered is not None
        tasks = [
            asyncio.create_task(self._reader(ws), name="conn-reader"),
            asyncio.create_task(self._sender(ws), name="conn-sender"),
            asyncio.create_task(self._acker(), name="conn-acker"),
            asyncio.create_task(self._heartbeat(ws), name="conn-heartbeat"),
            asyncio.create_task(self._drain(ws), name="conn-drain"),
        ]
        if self._on_ready is not None:
            tasks.append(asyncio.create_task(self._call_on_ready(self.registered), name="conn-on-ready"))
        try:
            done, _ = await asyncio.wait(tasks[:5], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Persist the last ack heard, so last_acked_seq is exact in the next register.
            with contextlib.suppress(Exception):
                await self._outbox.ack(self.core.acked)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc

    async def _call_on_ready(self, reg: Registered) -> None:
        try:
            res = self._on_ready(reg)  # type: ignore[misc]
            if inspect.isawaitable(res):
                await res
        except Exception:
            log.exception("on_ready callback failed")

    # ------------------------------------------------------------------ receiving

    async def _recv(self, ws: ClientConnection) -> Any:
        """Next decoded envelope, or None after answering a bad frame with an ``error`` frame."""
        raw = await ws.recv()
        return await self._decode_or_reply(ws, raw)

    async def _decode_or_reply(self, ws: ClientConnection, raw: str | bytes) -> Any:
        try:
            return decode(raw, max_bytes=self.max_frame_bytes)
        except ProtocolError as exc:
            self.counters["bad_frames"] += 1
            log.warning("bad frame from supervisor (%s): %s", exc.code, exc.message)
            await ws.send(encode(ErrorMsg(exc.code, exc.message, exc.request_id), request_id=exc.request_id))
            return None

    async def _reader(self, ws: ClientConnection) -> None:
        async for raw in ws:
            env = await self._decode_or_reply(ws, raw)
            if env is None:
                continue
            msg = env.payload
            if isinstance(msg, Ack):
                self._on_ack(msg.seq)
            elif isinstance(msg, Command):
                self._spawn_command(msg, env.request_id)
            elif isinstance(msg, ErrorMsg):
                self._on_error(msg)
            elif env.type in ("heartbeat", "registered"):
                continue
            else:
                self.counters["bad_frames"] += 1
                text = f"agent does not accept {env.type!r} frames"
                await ws.send(encode(ErrorMsg(UNEXPECTED_TYPE, text, env.request_id), request_id=env.request_id))

    def _on_ack(self, seq: int) -> None:
        self.counters["acks"] += 1
        if self.core.on_ack(seq):
            self._ack_wake.set()
            self._wake.set()

    def _on_error(self, err: ErrorMsg) -> None:
        self.counters["errors_received"] += 1
        if err.code != SEQ_GAP:
            log.warning("supervisor error %s: %s", err.code, err.message)
            return
        action = self.core.on_seq_gap(err.message)
        if isinstance(action, Resync):
            raise _Resync(str(action))
        if isinstance(action, Rewind):
            log.warning("seq_gap from supervisor: resending from seq %d", action.seq)
            self.counters["seq_gap_rewinds"] += 1
            self._wake.set()

    # ------------------------------------------------------------------ sending

    def _on_append(self, _event: Event) -> None:
        self._wake.set()

    async def _sender(self, ws: ClientConnection) -> None:
        core = self.core
        while True:
            self._wake.clear()
            room = core.room()
            if room <= 0:
                await self._wake.wait()
                continue
            gen = core.generation
            events = await self._outbox.pending(core.next_to_send - 1, min(room, self.batch_size))
            if gen != core.generation:
                continue
            if not events:
                await self._wake.wait()
                continue
            for ev in events:
                if gen != core.generation:
                    break
                await ws.send(encode(ev))
                self.counters["events_sent"] += 1
                core.sent(ev.seq, gen)

    async def _acker(self) -> None:
        while True:
            self._ack_wake.clear()
            target = self.core.ack_to_apply()
            if target is not None:
                await self._outbox.ack(target)
                self.core.ack_applied(target)
            else:
                await self._ack_wake.wait()

    def _sample(self) -> tuple[dict[str, float], dict[str, float]]:
        """The heartbeat's `resources` and `process` figures (procfs reads: run in a thread)."""
        return self._resources_fn(), (self._process_fn() if self._process_fn is not None else {})

    async def _heartbeat(self, ws: ClientConnection) -> None:
        # The first one is due right after registration (see AgentLinkCore.registered).
        while True:
            await asyncio.sleep(self.core.heartbeat_delay())
            resources, process = await asyncio.to_thread(self._sample)
            await ws.send(encode(Heartbeat(resources=resources, outbox=self._outbox.stats(), process=process)))
            self.counters["heartbeats_sent"] += 1
            self.core.heartbeat_sent()

    async def _drain(self, ws: ClientConnection) -> None:
        while True:
            self._queue_wake.clear()
            while self._queue:
                frame = self._queue.popleft()
                try:
                    await ws.send(frame)
                except BaseException:
                    self._queue.appendleft(frame)
                    raise
            await self._queue_wake.wait()

    def _enqueue(self, frame: str) -> None:
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self.counters["frames_dropped"] += 1
            log.warning("outgoing frame queue full (%d); dropped the oldest frame", self._max_queued)
        self._queue.append(frame)
        self.counters["frames_queued"] += 1
        self._queue_wake.set()

    def send_frame(self, msg: Message, *, request_id: str | None = None) -> None:
        """Queue a frame (``auth_state``, ``credential_sync``, ...); sent in order once ready.

        Events must go through the outbox and ``register`` is the connection's own job.
        """
        if isinstance(msg, Event | Register):
            raise TypeError(f"{type(msg).TYPE} frames cannot be sent with send_frame")
        if self.core.state is ConnState.CLOSED:
            raise RuntimeError("connection is closed")
        self._enqueue(encode(msg, request_id=request_id))

    # ------------------------------------------------------------------ commands

    def _spawn_command(self, cmd: Command, request_id: str | None) -> None:
        if cmd.command_id in self._commands:
            log.info("command %s is already running; ignoring the duplicate", cmd.command_id)
            return
        self.counters["commands"] += 1
        task = asyncio.create_task(self._run_command(cmd, request_id), name=f"command-{cmd.command_id}")
        self._commands[cmd.command_id] = task
        command_id = cmd.command_id
        task.add_done_callback(lambda _t: self._commands.pop(command_id, None))

    async def _run_command(self, cmd: Command, request_id: str | None) -> None:
        result = await self._execute(cmd)
        self._enqueue(self._encode_result(result, request_id or cmd.command_id))

    async def _execute(self, cmd: Command) -> CommandResult:
        if self._command_handler is None:
            self.counters["commands_failed"] += 1
            return CommandResult(cmd.command_id, "failure", error="this agent has no command handler")
        inner = asyncio.ensure_future(self._command_handler(cmd))
        try:
            done, _ = await asyncio.wait({inner}, timeout=cmd.timeout_ms / 1000)
        except asyncio.CancelledError:
            inner.cancel()
            raise
        if not done:
            inner.cancel()  # not awaited: a handler that swallows cancellation must not delay the result
            self.counters["commands_timed_out"] += 1
            log.warning("command %s (%s) timed out after %d ms", cmd.command_id, cmd.type, cmd.timeout_ms)
            return CommandResult(cmd.command_id, "timeout", error=f"command timed out after {cmd.timeout_ms} ms")
        exc = inner.exception()
        if exc is not None:
            self.counters["commands_failed"] += 1
            log.error("command %s (%s) failed: %s: %s", cmd.command_id, cmd.type, type(exc).__name__, exc, exc_info=exc)
            return CommandResult(cmd.command_id, "failure", error=f"{type(exc).__name__}: {exc}")
        result = inner.result()
        if not isinstance(result, CommandResult):
            return CommandResult(cmd.command_id, "success", output=result)
        if result.status not in COMMAND_STATUSES:
            self.counters["commands_failed"] += 1
            return CommandResult(
                cmd.command_id,
                "failure",
                output=result.output,
                error=f"handler returned invalid status {result.status!r}",
            )
        if result.command_id != cmd.command_id:
            result = dataclasses.replace(result, command_id=cmd.command_id)
        if result.status == "failure":
            self.counters["commands_failed"] += 1
        return result

    def _encode_result(self, result: CommandResult, request_id: str) -> str:
        try:
            frame = encode(result, request_id=request_id)
        except (TypeError, ValueError) as exc:  # output not JSON-serialisable
            result = CommandResult(result.command_id, "failure", error=f"result not serialisable: {exc}")
            return encode(result, request_id=request_id)
        size = len(frame.encode("utf-8"))
        if size <= self.max_frame_bytes - 1024:
            return frame
        # The supervisor would reject the frame and the command would only time out there.
        text = result.output if isinstance(result.output, str) else json.dumps(result.output, default=str)
        result = dataclasses.replace(
            result,
            output={"truncated": True, "original_bytes": size, "preview": text[:_PREVIEW_CHARS]},
            error=result.error or "output truncated: result exceeded the frame size limit",
        )
        return encode(result, request_id=request_id)
