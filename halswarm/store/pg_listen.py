"""One LISTEN connection per supervisor, for every channel it listens on (issue 21).

Command forwarding (`hal_command_forwards`) and the event tail (`hal_events`) each wake on another
supervisor's NOTIFY. Both subscribe here: one asyncio psycopg connection (`application_name`
`hal-supervisor-listen`), autocommit, with the leader lock's keepalives so a vanished server is noticed in
about 10 s, LISTENs on every subscribed channel and hands each notification's payload to the
subscribers of its channel (on the event loop).

NOTIFY is never the only carrier: every subscriber also polls. So a lost connection costs latency only;
it is re-opened with a backoff (0.5 s doubling to 30 s), and once it is back every subscriber is called
with an empty payload ("maybe something happened meanwhile"), which makes each read the store at once.
A subscription made while connected is LISTENed within `APPLY_SEC` (the notification wait is cut that
often), and its subscriber is then called with an empty payload too.

Log lines (one per outage, not one per attempt): `LISTEN connection: listening on <channels> (...)` when
connected, `LISTEN connection lost (<why>); polling until it is back` when it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

log = logging.getLogger(__name__)
APPLICATION_NAME = "hal-supervisor-listen"
CONNECT_TIMEOUT_SEC = 5
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
APPLY_SEC = 1.0  # a channel subscribed while connected is LISTENed within this

Callback = Callable[[str], None]


@dataclass(frozen=True)
class _Sub:
    callback: Callback
    own: bool  # also the notifications this supervisor's own sessions sent


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quoted(channel: str) -> str:
    if not channel or not all(ch.isalnum() or ch == "_" for ch in channel):
        raise ValueError(f"not a channel name: {channel!r}")
    return f'"{channel}"'


class PgListener:
    """`subscribe` channels, then `start`; `connected`, `connects`, `last_error` and `down_since` say
    how it goes (the readiness component and the `hal_o_swarm_pg_listen_up` gauge read them)."""

    def __init__(self, conninfo: str = "", *, password: str | None = None,
                 connect: Callable[[], Awaitable[Any]] | None = None,
                 backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX), apply_sec: float = APPLY_SEC,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._conninfo = conninfo
        self._password = password
        self._connect_fn = connect or self._connect  # tests pass a scripted connection
        self.backoff_min, self.backoff_max = backoff
        self.apply_sec = apply_sec
        self.clock = clock
        self._sleep = sleep  # the backoff's wait (tests record it)
        self._subs: dict[str, list[_Sub]] = {}
        self._listening: set[str] = set()  # channels LISTENed on the current connection
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.connects = 0  # connections made (1 + reconnections)
        self.received = 0  # notifications handed over
        self.last_error: str | None = None
        self.backend_pid: int | None = None  # the connection's server process (pg_stat_activity.pid)
        self.down_since: float | None = None  # wall clock of the outage's start (None while connected)
        self.on_change: Callable[[bool], None] | None = None  # told on each up/down transition

    @property
    def channels(self) -> list[str]:
        return sorted(self._subs)

    def subscribe(self, channel: str, callback: Callback, *, own: bool = True) -> None:
        """Hand `channel`'s payloads to `callback` from now on (`own=False`: not those this supervisor's
        own sessions sent). Poll anyway: a notification may be lost."""
        _quoted(channel)
        self._subs.setdefault(channel, []).append(_Sub(callback, own))

    def unsubscribe(self, channel: str, callback: Callback) -> None:
        subs = [s for s in self._subs.get(channel, []) if s.callback != callback]
        if subs:
            self._subs[channel] = subs
        else:
            self._subs.pop(channel, None)  # still LISTENed until the next connection: payloads are dropped

    # ----- lifecycle -----

    async def start(self) -> None:
        self.down_since = self.clock()
        self._task = asyncio.get_running_loop().create_task(self.run(), name="pg-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    # ----- the connection -----

    async def _connect(self) -> Any:
        kw: dict[str, Any] = {"autocommit": True, "application_name": APPLICATION_NAME, "keepalives": 1,
                              "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                              "tcp_user_timeout": 10000}
        if "connect_timeout" not in self._conninfo:
            kw["connect_timeout"] = CONNECT_TIMEOUT_SEC
        if self._password:
            kw["password"] = self._password
        return await psycopg.AsyncConnection.connect(self._conninfo, **kw)

    def dispatch(self, channel: str, payload: str, *, own: bool) -> None:
        """One notification to the subscribers of its channel; one that raises does not stop the others."""
        for sub in list(self._subs.get(channel, ())):
            if own and not sub.own:
                continue
            self.received += 1
            try:
                sub.callback(payload)
            except Exception:
                log.exception("LISTEN connection: a subscriber of %s failed", channel)

    def _wake_all(self, channels: set[str] | None = None) -> None:
        for channel in list(self._subs):
            if channels is None or channel in channels:
                for sub in list(self._subs[channel]):
                    with contextlib.suppress(Exception):
                        sub.callback("")

    async def _listen_new(self, conn: Any) -> set[str]:
        new = set(self._subs) - self._listening
        for channel in sorted(new):
            await conn.execute(f"LISTEN {_quoted(channel)}")
            self._listening.add(channel)
        return new

    def _set(self, up: bool) -> None:
        if up == self.connected:
            return
        self.connected = up
        self.down_since = None if up else self.clock()
        if self.on_change is not None:
            with contextlib.suppress(Exception):
                self.on_change(up)

    async def run(self) -> None:
        """Until cancelled: connect, LISTEN, dispatch; after a failure wait the backoff and again."""
        backoff = self.backoff_min
        if not self.connected and self.down_since is None:
            self.down_since = self.clock()
        said_down = False  # the outage was logged (once per outage)
        while True:
            conn: Any = None
            self._listening = set()
            try:
                conn = await self._connect_fn()
                await self._listen_new(conn)
                own_pid = self.backend_pid = conn.info.backend_pid
                self.connects += 1
                self.last_error = None
                self._set(True)
                said_down = False
                backoff = self.backoff_min
                log.info("LISTEN connection: listening on %s (polling carries on while it is down)",
                         ", ".join(sorted(self._listening)) or "no channel yet")
                self._wake_all()  # whatever was sent while not listening is read by the subscribers now
                while True:
                    async for n in conn.notifies(timeout=self.apply_sec):
                        self.dispatch(n.channel, n.payload, own=n.pid == own_pid)
                    new = await self._listen_new(conn)
                    if new:
                        log.info("LISTEN connection: also listening on %s", ", ".join(sorted(new)))
                        self._wake_all(new)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error, self.backend_pid = _why(exc), None
                if not said_down:
                    log.warning("LISTEN connection lost (%s); polling until it is back", self.last_error)
                    said_down = True
                self._set(False)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await self._sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)
