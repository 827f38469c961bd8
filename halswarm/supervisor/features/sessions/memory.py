"""Ended sessions leave memory after the grace period (issue 22: memory bounded by live work).

Each sweep takes the tracker's oldest ended sessions (an ordered index: the sweep never walks every
session), reads their stored rows in a reader thread, and evicts those whose row says what memory
says; a change not yet committed keeps its session in memory until a later sweep."""

from __future__ import annotations

import functools
import logging

from halswarm.store.reader import Reader
from halswarm.store.repos.sessions import get_sessions
from halswarm.supervisor.features.sessions.settings import SessionSettings
from halswarm.supervisor.runtime.periodic import PeriodicEngine
from halswarm.supervisor.runtime.tracker import SessionTracker

log = logging.getLogger(__name__)
BATCH = 500  # most sessions one sweep reads back (a sweep repeats at once while it finds a full batch)


def sweep_interval(grace: float) -> float:
    """How often to sweep: a quarter of the grace period, between 0.2 s and 30 s."""
    return min(max(grace / 4, 0.2), 30.0)


class SessionMemory(PeriodicEngine):
    def __init__(self, tracker: SessionTracker, reader: Reader, settings: SessionSettings) -> None:
        super().__init__()
        self.tracker = tracker
        self.reader = reader
        self.grace = settings.memory_grace_seconds

    async def sweep(self) -> int:
        """One sweep; returns the sessions evicted."""
        total = 0
        while True:
            candidates = self.tracker.eviction_candidates(self.grace, BATCH)
            if not candidates:
                return total
            ids = [s.id for s in candidates]
            stored = await self.reader.run(functools.partial(get_sessions, ids=ids))
            n = self.tracker.evict(self.grace, stored)
            total += n
            if n == 0 or len(candidates) < BATCH:
                return total

    async def check(self) -> int:
        return await self.sweep()

    async def start(self) -> None:
        self._start_loop(sweep_interval(self.grace), "session-memory", log)

    async def stop(self) -> None:
        await self._stop_loop(0)
