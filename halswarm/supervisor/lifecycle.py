"""Start what the supervisor runs in order and stop it in reverse (supervisord-style explicit lifecycle).

Each part is registered as it starts; stopping walks the list backwards, so a part never outlives what it
uses, and a start that fails half-way stops exactly what had started. A part's stop that fails or hangs is
logged and the next one still stops: shutdown always reaches the database writer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[Any] | Any]
DEFAULT_STOP_TIMEOUT_SEC = 20.0


class State(Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


# The only transitions there are; anything else is a bug in the caller.
ALLOWED = {
    State.NEW: {State.STARTING, State.STOPPED},
    State.STARTING: {State.RUNNING, State.STOPPING},
    State.RUNNING: {State.STOPPING},
    State.STOPPING: {State.STOPPED},
    State.STOPPED: set(),
}


class LifecycleError(RuntimeError):
    pass


@dataclass(frozen=True)
class Part:
    name: str
    stop: Step
    timeout: float = DEFAULT_STOP_TIMEOUT_SEC


async def _call(step: Step) -> Any:
    result = step()
    if inspect.isawaitable(result):
        return await result
    return result


class Lifecycle:
    def __init__(self) -> None:
        self.state = State.NEW
        self._parts: list[Part] = []

    def _to(self, new: State) -> None:
        if new not in ALLOWED[self.state]:
            raise LifecycleError(f"lifecycle: {self.state.value} -> {new.value}")
        self.state = new

    @property
    def names(self) -> list[str]:
        """What runs, in start order."""
        return [p.name for p in self._parts]

    async def start(self, name: str, start: Step, stop: Step, *, timeout: float = DEFAULT_STOP_TIMEOUT_SEC) -> Any:
        """Start one part now and remember how to stop it; returns what `start` returned."""
        if self.state is State.NEW:
            self._to(State.STARTING)
        if self.state is not State.STARTING:
            raise LifecycleError(f"lifecycle: cannot start {name} while {self.state.value}")
        result = await _call(start)
        self._parts.append(Part(name, stop, timeout))
        return result

    def running(self) -> None:
        """Everything started."""
        self._to(State.RUNNING)

    async def stop(self) -> list[str]:
        """Stop every started part in reverse order; returns the names of the parts whose stop failed."""
        if self.state in (State.STOPPING, State.STOPPED):
            return []
        if self.state is State.NEW:
            self._to(State.STOPPED)
            return []
        self._to(State.STOPPING)
        failed: list[str] = []
        for part in reversed(self._parts):
            try:
                await asyncio.wait_for(_call(part.stop), part.timeout)
            except Exception as exc:  # one part's failure must not keep the rest running
                failed.append(part.name)
                log.error("stopping %s failed: %s", part.name, exc or type(exc).__name__)
        self._parts.clear()
        self._to(State.STOPPED)
        return failed
