"""ansible-rulebook event source: the HAL-O-SWARM supervisor's live event stream, resumed by event id.

Reads `GET /api/v1/events/stream` (Server-Sent Events, `id: <event id>`), puts each event on the
rulebook's queue, and remembers the id of the last one handed over (in memory, and in `state_file` when
set, written atomically) so a reconnect or a restart resumes with `Last-Event-ID`: nothing lost, nothing
twice. Transport errors and 5xx answers are retried with bounded exponential backoff and jitter; a refused
token, a wrong URL or a rejected request stop the source with a one-line error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp

DOCUMENTATION = r"""
---
author:
  - HAL-O-SWARM maintainers
name: event_stream
short_description: Receive the HAL-O-SWARM supervisor's events from its live stream, with resume
description:
  - Connects to the supervisor's C(GET /api/v1/events/stream) (Server-Sent Events) with a viewer token and
    puts each event on the rulebook's queue as the event's JSON (C(id), C(node_id), C(seq), C(event_id),
    C(session_id), C(project), C(type), C(data), C(timestamp)).
  - Remembers the id of the last event handed over and resumes from it with C(Last-Event-ID) after a lost
    connection or a supervisor restart; with O(state_file) also across restarts of ansible-rulebook.
  - Reconnects with exponential backoff (with jitter) between O(reconnect_min) and O(reconnect_max)
    seconds. A refused token (401/403), an unknown path (404), a rejected request (400) or a certificate
    that fails verification stop the source.
options:
  url:
    description:
      - Base URL of the supervisor's HTTP API, for example C(https://supervisor.example:8421).
    type: str
    required: true
  token:
    description:
      - Bearer token of an operator with at least the viewer role. Never logged.
      - Exactly one of O(token) and O(token_file) is required.
    type: str
  token_file:
    description:
      - File holding the token (read at each connection, so a rotated token is picked up).
    type: str
  types:
    description:
      - Event types to receive; an entry may end in C(*) to match a prefix (C(node.*)).
      - One entry is filtered by the supervisor; several are filtered here.
    type: list
    elements: str
  node_id:
    description: Only events of this node.
    type: str
  project:
    description: Only events of this project.
    type: str
  last_event_id:
    description:
      - Resume right after this event id when O(state_file) holds none. Without both, the stream starts
        with the events committed from the moment it connects.
    type: int
  state_file:
    description:
      - File where the id of the last event handed over is kept (replaced atomically, one write at a time
        with the newest id; a stop waits for it), so that a restarted rulebook resumes where it stopped.
        After a crash the events handed over since the last finished write come again; none is lost.
      - Keep it out of the directory of the playbooks the rulebook runs, which C(run_playbook) copies for
        each action; a temp file renamed during that copy fails the action.
    type: str
  ca_file:
    description: CA bundle that verifies the supervisor's certificate (https).
    type: str
  verify_ssl:
    description: Verify the supervisor's certificate (https). Turn off only for tests.
    type: bool
    default: true
  reconnect_min:
    description: First delay before a reconnection, in seconds.
    type: float
    default: 1
  reconnect_max:
    description: Longest delay between reconnections, in seconds.
    type: float
    default: 30
  idle_timeout:
    description:
      - Reconnect when nothing (not even the 15 s keepalive) arrived for this many seconds.
    type: float
    default: 60
  max_event_bytes:
    description: Largest event accepted; a larger one stops the source (it would be lost otherwise).
    type: int
    default: 1048576
"""

EXAMPLES = r"""
- name: Remediate a node that went offline
  hosts: all
  sources:
    - halswarm.ops.event_stream:
        url: http://127.0.0.1:8421
        token_file: /etc/hal-o-swarm/eda.token
        types: [node.offline]
        state_file: /var/lib/eda/halswarm-events.last-id
  rules:
    - name: Node offline
      condition: event.type == "node.offline"
      action:
        debug:
"""

log = logging.getLogger(__name__)
STREAM_PATH = "/api/v1/events/stream"
FATAL_STATUS = {400: "the supervisor rejected the request", 401: "the supervisor refused the token",
                403: "the token lacks the viewer role", 404: "no event stream at this URL"}


class StreamError(Exception):
    """A condition that retrying cannot fix (bad argument, refused token, wrong URL, unverified certificate,
    oversized or malformed event, unwritable state file): it ends the source."""


# ----- pure parts -----------------------------------------------------------------------------------


class SseParser:
    """Incremental Server-Sent Events parser: feed bytes, get `(id, data)` for each complete message.

    Lines and messages are bounded (`max_bytes`): a peer cannot make it buffer without limit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buf = b""
        self._data: list[str] = []
        self._size = 0
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        self._buf += chunk
        out: list[tuple[str | None, str]] = []
        while True:
            cut = self._buf.find(b"\n")
            if cut < 0:
                break
            line, self._buf = self._buf[:cut].rstrip(b"\r"), self._buf[cut + 1:]
            msg = self._line(line.decode("utf-8", errors="replace"))
            if msg is not None:
                out.append(msg)
        if len(self._buf) > self.max_bytes:
            raise StreamError(f"an SSE line is longer than {self.max_bytes} bytes")
        return out

    def _line(self, line: str) -> tuple[str | None, str] | None:
        if not line:  # a blank line ends the message
            msg = (self._id, "\n".join(self._data)) if self._data else None
            self._data, self._size, self._id = [], 0, None
            return msg
        if line.startswith(":"):
            return None  # comment: `: connected`, `: keepalive`
        cut = line.find(":")
        field, value = (line, "") if cut < 0 else (line[:cut], line[cut + 1:])
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            self._size += len(value) + 1
            if self._size > self.max_bytes:
                raise StreamError(f"an event is larger than {self.max_bytes} bytes")
            self._data.append(value)
        elif field == "id":
            self._id = value
        return None


def type_matches(event_type: str, patterns: list[str]) -> bool:
    """The supervisor's `type` filter: exact, or a prefix when the pattern ends in `*`."""
    return any(event_type.startswith(p[:-1]) if p.endswith("*") else event_type == p for p in patterns)


def backoff_delay(attempt: int, low: float, high: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter in its upper half: within [low, min(high, low * 2**attempt)]."""
    cap = min(high, low * (2 ** min(attempt, 30)))
    return max(low, cap / 2 + rand() * cap / 2)


def query_string(types: list[str], node_id: str | None, project: str | None) -> str:
    params = {"node_id": node_id, "project": project, "type": types[0] if len(types) == 1 else None}
    return urlencode({k: v for k, v in params.items() if v})


# ----- state file -----------------------------------------------------------------------------------


def read_state(path: str) -> int | None:
    try:
        text = open(path, encoding="utf-8").read().strip()  # noqa: SIM115 - tiny file
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise StreamError(f"state_file {path}: not an event id: {text[:40]!r}")
    return int(text)


def write_state(path: str, last_id: int) -> None:
    """Replace the state file atomically (temp file in the same directory, fsync, rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".event_stream.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"{last_id}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----- the source -----------------------------------------------------------------------------------


def _number(args: dict[str, Any], name: str, default: float) -> float:
    try:
        value = float(args.get(name, default))
    except (TypeError, ValueError):
        raise StreamError(f"{name}: a number is required, got {args.get(name)!r}") from None
    if value <= 0:
        raise StreamError(f"{name}: must be > 0")
    return value


class Settings:
    """The plugin's arguments, checked once (a bad value is a one-line error before any connection)."""

    def __init__(self, args: dict[str, Any]) -> None:
        url = str(args.get("url") or "").rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise StreamError("url: an http:// or https:// URL of the supervisor's API is required")
        self.url = url if url.endswith(STREAM_PATH) else url + STREAM_PATH
        self.token = args.get("token")
        self.token_file = args.get("token_file")
        if bool(self.token) == bool(self.token_file):
            raise StreamError("exactly one of token and token_file is required")
        types = args.get("types") or []
        self.types = [types] if isinstance(types, str) else [str(t) for t in types]
        self.node_id, self.project = args.get("node_id"), args.get("project")
        self.state_file = args.get("state_file")
        if self.state_file and not os.access(os.path.dirname(os.path.abspath(self.state_file)), os.W_OK):
            raise StreamError(f"state_file {self.state_file}: its directory is missing or not writable")
        self.low = _number(args, "reconnect_min", 1.0)
        self.high = _number(args, "reconnect_max", 30.0)
        if not 0 < self.low <= self.high:
            raise StreamError("reconnect_min must be > 0 and <= reconnect_max")
        self.idle = _number(args, "idle_timeout", 60.0)
        self.max_bytes = int(_number(args, "max_event_bytes", 1 << 20))
        self.ssl: ssl.SSLContext | bool = True
        if self.url.startswith("https://"):
            if not args.get("verify_ssl", True):
                self.ssl = False
            elif args.get("ca_file"):
                try:
                    self.ssl = ssl.create_default_context(cafile=str(args["ca_file"]))
                except (OSError, ssl.SSLError) as exc:
                    raise StreamError(f"ca_file {args['ca_file']}: cannot load it ({exc})") from None
        start = read_state(self.state_file) if self.state_file else None
        initial = args.get("last_event_id")
        if initial is not None and not str(initial).isdigit():
            raise StreamError(f"last_event_id: not an event id: {str(initial)[:40]!r}")
        self.last_id: int | None = start if start is not None else (int(initial) if initial is not None else None)
        query = query_string(self.types, self.node_id, self.project)
        self.full_url = self.url + (f"?{query}" if query else "")

    def bearer(self) -> str:
        if self.token:
            return str(self.token)
        try:
            token = open(str(self.token_file), encoding="utf-8").read().strip()  # noqa: SIM115 - tiny file
        except OSError as exc:
            raise StreamError(f"token_file: cannot read it ({exc.strerror})") from None
        if not token:
            raise StreamError("token_file: it is empty")
        return token


async def _chunks(resp: aiohttp.ClientResponse, idle: float) -> AsyncIterator[bytes]:
    while True:
        chunk = await asyncio.wait_for(resp.content.readany(), idle)
        if not chunk:
            return
        yield chunk


async def stream_once(session: aiohttp.ClientSession, cfg: Settings, queue: asyncio.Queue[Any],
                      state: StateWriter | None, connected: Callable[[], None]) -> None:
    """One connection: hand over every event after `cfg.last_id` until the stream ends."""
    token = await asyncio.to_thread(cfg.bearer)
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if cfg.last_id is not None:
        headers["Last-Event-ID"] = str(cfg.last_id)
    async with session.get(cfg.full_url, headers=headers, ssl=cfg.ssl) as resp:
        if resp.status in FATAL_STATUS:
            raise StreamError(f"{FATAL_STATUS[resp.status]} (HTTP {resp.status} from {cfg.url})")
        if resp.status != 200:
            raise aiohttp.ClientResponseError(resp.request_info, resp.history, status=resp.status,
                                              message=f"HTTP {resp.status}")
        connected()
        parser = SseParser(cfg.max_bytes)
        async for chunk in _chunks(resp, cfg.idle):
            for sse_id, data in parser.feed(chunk):
                await _hand_over(cfg, queue, sse_id, data, state)


class StateWriter:
    """Keeps `state_file` naming the last event handed over, off the hand-over path.

    One write runs at a time, in a worker thread, with the newest id when it starts; ids handed over while
    it runs are folded into the next one. A write ends with an fsync, which on a busy disk can take a
    second or more: one write per event would hold the source to one event per fsync. A stop waits for
    the newest id to land; a crash repeats at most the events handed over since the last finished write,
    and never loses one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.newest: int | None = None
        self.written: int | None = None
        self.writes = 0
        self.error: str | None = None
        self._task: asyncio.Future[None] | None = None

    def check(self) -> None:
        """Raise a failed write: a source that goes on would repeat every later event after a restart."""
        if self.error is not None:
            raise StreamError(self.error)

    def note(self, event_id: int) -> None:
        self.newest = event_id
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self.error is None and self.newest is not None and self.newest != self.written:
            target = self.newest
            try:
                await asyncio.to_thread(write_state, self.path, target)
            except OSError as exc:
                self.error = f"state_file {self.path}: cannot write it ({exc.strerror})"
                return
            self.written, self.writes = target, self.writes + 1

    async def close(self) -> None:
        """Wait until the newest id is written, then raise a failed write. A cancellation (ansible-rulebook
        stopping) still waits for the write: a file left one write behind would repeat events at the
        next start."""
        task = self._task
        if task is not None:
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                await task
                raise
        self.check()


async def _hand_over(cfg: Settings, queue: asyncio.Queue[Any], sse_id: str | None, data: str,
                     state: StateWriter | None) -> None:
    if sse_id is None or not sse_id.isdigit():
        raise StreamError(f"a stream message without a numeric id: {sse_id!r}")
    event_id = int(sse_id)
    if cfg.last_id is not None and event_id <= cfg.last_id:
        return  # already handed over (the supervisor never repeats; this guards a misbehaving proxy)
    try:
        event = json.loads(data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise StreamError(f"event {event_id} is not a JSON object")
    event["id"] = event_id
    wanted = not cfg.types or len(cfg.types) == 1 or type_matches(str(event.get("type", "")), cfg.types)
    if state is not None:
        state.check()
    if wanted:
        await queue.put(event)
    cfg.last_id = event_id
    if wanted and state is not None:  # after the hand-over: a crash in between repeats it, never loses it
        state.note(event_id)


async def main(queue: asyncio.Queue[Any], args: dict[str, Any]) -> None:
    """Entry point called by ansible-rulebook: runs until cancelled or a fatal StreamError."""
    cfg = Settings(args)
    state = StateWriter(cfg.state_file) if cfg.state_file else None
    try:
        await _follow(cfg, queue, state)
    finally:
        if state is not None:
            await state.close()


async def _follow(cfg: Settings, queue: asyncio.Queue[Any], state: StateWriter | None) -> None:
    attempt = 0

    def connected() -> None:
        nonlocal attempt
        attempt = 0

    timeout = aiohttp.ClientTimeout(total=None, connect=15, sock_connect=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                await stream_once(session, cfg, queue, state, connected)
            except aiohttp.ClientConnectorCertificateError as exc:  # configuration, not transport: say so
                raise StreamError(f"the certificate of {cfg.url} failed verification "
                                  f"({exc.certificate_error}); set ca_file") from None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:  # noqa: UP041 - py3.10
                reason = f"{type(exc).__name__}: {exc}"  # StreamError is none of these: it ends the source
            else:
                reason = "stream ended"
            delay = backoff_delay(attempt, cfg.low, cfg.high)
            attempt += 1
            log.warning("event_stream: %s; reconnecting in %.1fs after event id %s", reason, delay, cfg.last_id)
            await asyncio.sleep(delay)
