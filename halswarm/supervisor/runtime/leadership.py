"""Run the leader-only engines (policies, cost polling, dependencies, auto-remediation, retention,
backup watch) on one supervisor at a time.

On PostgreSQL a `Leadership` takes turns: a follower tries the leader lock every `retry_sec`, a leader
checks every `check_sec` that its lock connection still lives; what to do is `halswarm.core.leadership`'s
pure decision. Becoming leader starts the engines in order; losing the connection stops them in reverse
before the lock is tried again. On SQLite (one supervisor per file) `AlwaysLeader` starts them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from halswarm.core.leadership import Act, Role, Seen, decide, probe_kind

log = logging.getLogger(__name__)

RETRY_SEC = 2.0  # a follower tries the lock this often (so a dead leader's engines move within ~this)
CHECK_SEC = 2.0  # a leader checks its lock connection this often
STOP_TIMEOUT_SEC = 20.0


class LeaderLock(Protocol):
    def try_acquire(self) -> bool: ...
    def held(self) -> bool: ...
    def close(self) -> None: ...


Step = Callable[[], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Engine:
    name: str
    start: Step
    stop: Step


async def _call(step: Step) -> None:
    result = step()
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        await result


class EngineSet:
    """The leader-only engines, started in order and stopped in reverse (a failing one is logged and
    the others still start or stop)."""

    def __init__(self) -> None:
        self.engines: list[Engine] = []
        self.running = False

    def add(self, name: str, start: Step, stop: Step) -> None:
        self.engines.append(Engine(name, start, stop))

    async def start(self) -> None:
        for e in self.engines:
            try:
                await _call(e.start)
            except Exception:
                log.exception("leader engines: starting %s failed", e.name)
        self.running = True

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        for e in reversed(self.engines):
            try:
                await asyncio.wait_for(_call(e.stop), STOP_TIMEOUT_SEC)
            except Exception as exc:
                log.error("leader engines: stopping %s failed: %s", e.name, exc or type(exc).__name__)


class AlwaysLeader:
    """SQLite: the one supervisor of a file is the leader from start to stop."""

    role = Role.LEADER
    detail = "sqlite: single supervisor"

    def __init__(self, engines: EngineSet, on_change: Callable[[bool], None] | None = None) -> None:
        self.engines = engines
        self._on_change = on_change

    @property
    def is_leader(self) -> bool:
        return True

    async def start(self) -> None:
        await self.engines.start()
        if self._on_change is not None:
            self._on_change(True)

    async def stop(self) -> None:
        await self.engines.stop()


class Leadership:
    """The turns of a supervisor on a shared database (see the module docstring)."""

    def __init__(self, lock: LeaderLock, engines: EngineSet, *, on_change: Callable[[bool], None] | None = None,
                 retry_sec: float = RETRY_SEC, check_sec: float = CHECK_SEC, name: str = "") -> None:
        self.name = name  # this supervisor's id (host:agent port), shown in the status
        self.lock = lock
        self.engines = engines
        self.role = Role.FOLLOWER
        self.retry_sec = retry_sec
        self.check_sec = check_sec
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.since = time.time()
        self.terms = 0  # how often this supervisor became leader
        self.last_error: str | None = None

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def detail(self) -> str:
        text = f"{self.role.value} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.since))}"
        return f"{text} ({self.last_error})" if self.last_error and not self.is_leader else text

    async def start(self) -> None:
        """One turn now (a free lock is taken before start-up ends), then turns in the background."""
        await self.turn()
        self._task = asyncio.create_task(self._loop(), name="leadership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self.engines.stop()
        await asyncio.to_thread(self.lock.close)  # releases the lock at once for the next leader
        self._set(Role.FOLLOWER)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_sec if self.is_leader else self.retry_sec)
            try:
                await self.turn()
            except Exception:  # never leave the loop: the next turn tries again
                log.exception("leadership: turn failed")

    async def observe(self) -> Seen:
        kind = probe_kind(self.role)
        try:
            if kind == "acquire":
                return Seen.ACQUIRED if await asyncio.to_thread(self.lock.try_acquire) else Seen.BUSY
            return Seen.HELD if await asyncio.to_thread(self.lock.held) else Seen.LOST
        except Exception as exc:  # psycopg.Error, OSError: the server is out of reach
            self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return Seen.LOST

    async def turn(self) -> None:
        seen = await self.observe()
        role, act = decide(self.role, seen)
        if act is Act.START_ENGINES:
            self.last_error = None
            self.terms += 1
            log.info("leadership: this supervisor is the leader; starting %s",
                     ", ".join(e.name for e in self.engines.engines))
            self._set(role)
            await self.engines.start()
        elif act is Act.STOP_ENGINES:
            log.warning("leadership: lost the leader lock (%s); stopping the leader engines",
                        self.last_error or "the lock is no longer held")
            self._set(role)
            await self.engines.stop()
            role, _ = decide(role, Seen.STOPPED)
            self._set(role)
        elif role is not self.role:
            self._set(role)

    def _set(self, role: Role) -> None:
        if role is self.role:
            return
        was = self.is_leader
        self.role = role
        self.since = time.time()
        if was != self.is_leader and self._on_change is not None:
            self._on_change(self.is_leader)
