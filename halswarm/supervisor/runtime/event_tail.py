"""Every supervisor's events for this one's streams, on a shared PostgreSQL (issue 21).

With several supervisors on one store, the SSE streams of each must show every event, whichever
supervisor ingested it. The tail reads the store by id, in id order, up to the safe horizon
(halswarm.core.event_horizon: the ids below it are all committed or never will be), and hands each range
to the broadcast's ring, which the streams read as on SQLite. `id:` is the store's id, the same on
every supervisor, so a `Last-Event-ID` from one resumes on any other.

It runs when something happened, never per event:
- this supervisor committed a batch (the ingest calls `committed`): it NOTIFYs the others once (payload:
  the sequence's last value), and reads;
- another supervisor's NOTIFY arrived (the supervisor's one LISTEN connection, halswarm.store.pg_listen,
  shared with command forwarding; it calls `on_notify` with an empty payload when it (re)connects);
- a candidate horizon waits for a transaction to end: again after RETRY_SEC;
- else every POLL_SEC while a stream is open: NOTIFY is never the only carrier (a lost LISTEN connection,
  a missed notification).
Probes and reads run only while a stream is open (or one asks for the horizon); NOTIFYs are always sent.
SQLite has no tail: one supervisor, its commits are the whole stream, as before.

Metrics (when given): `hal_o_swarm_event_tail_lag_events` (ids assigned at the last probe not yet handed
to the streams; 0 while none is open) and `hal_o_swarm_event_tail_horizon_waits_total` (probes whose
horizon waited for another transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from halswarm.core.event_horizon import Horizon
from halswarm.store.repos.events import EVENTS_CHANNEL, events_between, notify_events, probe_horizon
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.broadcast import EventBroadcast

log = logging.getLogger(__name__)

POLL_SEC = 1.0  # the fallback read while a stream is open (NOTIFY is only a wake-up)
RETRY_SEC = 0.02  # a horizon waiting for a transaction's end is probed again this soon
READ_EVENTS = 1000  # events one read takes (a long range is read in several)
HORIZON_WAIT_SEC = 10.0  # how long a stream opening waits for a horizon before it fails
FAIL_LOG_EVERY_SEC = 60.0


class HorizonUnavailable(RuntimeError):
    pass


class EventTail:
    def __init__(self, reader: Any, broadcast: EventBroadcast, listener: Any | None = None, *,
                 poll: float = POLL_SEC, clock: Callable[[], float] = time.monotonic,
                 metrics: Metrics | None = None) -> None:
        self.reader = reader
        self.broadcast = broadcast
        self.listener = listener  # the supervisor's halswarm.store.pg_listen.PgListener, or None (polling only)
        self.metrics = metrics
        self.lag = 0  # ids assigned at the last probe, not yet handed to the ring (0: not following)
        self.horizon_waits = 0
        self.poll = poll
        self.clock = clock
        self.horizon = Horizon()
        self.published: int | None = None  # every id up to here went to the ring (None: not following)
        self.turns = 0  # wake-ups and polls of the loop
        self.probes = 0
        self.reads = 0
        self.notifies_sent = 0
        self.remote_wakeups = 0
        self._wake = asyncio.Event()
        self._notify_due = asyncio.Event()
        self._fresh: list[asyncio.Future[int]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._failed_logged = -FAIL_LOG_EVERY_SEC

    @property
    def safe(self) -> int | None:
        return self.horizon.safe

    # ----- wake-ups -----

    def committed(self) -> None:
        """This supervisor committed events (after the COMMIT): tell the others, and read."""
        self._notify_due.set()
        self._wake.set()

    def on_notify(self, payload: str) -> None:
        """Another supervisor committed events up to the id in `payload` (empty: maybe some)."""
        try:
            high = int(payload)
        except ValueError:
            high = None
        safe = self.horizon.safe
        if high is None or safe is None or high > safe:
            self.remote_wakeups += 1
            self._wake.set()

    async def fresh_horizon(self) -> int:
        """The safe horizon from a probe made after this call (what a stream opening starts from)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._fresh.append(fut)
        self._wake.set()
        try:
            async with asyncio.timeout(HORIZON_WAIT_SEC):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise HorizonUnavailable(f"postgresql: no event horizon within {HORIZON_WAIT_SEC:g} s "
                                     "(the store does not answer)") from None
        finally:
            if fut in self._fresh:
                self._fresh.remove(fut)

    # ----- lifecycle -----

    async def start(self) -> None:
        self.broadcast.tailed = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name="event-tail"),
                       loop.create_task(self._notifier(), name="event-tail-notify")]
        if self.listener is not None:  # not our own NOTIFYs: our commits wake us through `committed`
            self.listener.subscribe(EVENTS_CHANNEL, self.on_notify, own=False)

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.unsubscribe(EVENTS_CHANNEL, self.on_notify)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    # ----- the loops -----

    async def _notifier(self) -> None:
        """One NOTIFY per wake-up: commits made while one is being sent share the next."""
        while True:
            await self._notify_due.wait()
            self._notify_due.clear()
            try:
                await self.reader.run(notify_events)
                self.notifies_sent += 1
            except Exception as exc:  # the others poll: a lost NOTIFY costs them latency only
                self._failed("NOTIFY", exc)

    async def _run(self) -> None:
        while True:
            following = bool(self.broadcast.streams or self._fresh)
            timeout = RETRY_SEC if following and self.horizon.waiting else self.poll
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            self.turns += 1
            if not (self.broadcast.streams or self._fresh):
                self.published = None  # nobody streams: the ring is empty, start afresh with the next one
                self._set_lag(0)
                continue
            try:
                await self.step()
            except Exception as exc:  # PostgreSQL down, a reader pool timeout: the next wake-up retries
                self._failed("read", exc)
                await asyncio.sleep(min(self.poll, 1.0))

    async def step(self) -> None:
        """One probe, then every settled event not yet handed to the ring."""
        waiting = list(self._fresh)
        assigned, holders = await self.reader.run(probe_horizon)
        self.probes += 1
        safe = self.horizon.probe(assigned, holders)
        if self.horizon.waiting:
            self.horizon_waits += 1
            if self.metrics is not None:
                self.metrics.event_tail_horizon_waits.inc()
        try:
            self._step(waiting, safe)
            if self.published is not None:
                await self._read_up_to(self.horizon.safe)
        finally:
            following = self.published is not None and bool(self.broadcast.streams)
            self._set_lag(max(0, assigned - self.published) if following and self.published is not None else 0)

    def _set_lag(self, lag: int) -> None:
        self.lag = lag
        if self.metrics is not None:
            self.metrics.event_tail_lag.set(lag)

    def _step(self, waiting: list[asyncio.Future[int]], safe: int | None) -> None:
        if safe is None:
            return
        for fut in waiting:
            if not fut.done():
                fut.set_result(safe)
        if not self.broadcast.streams:
            self.published = None
            return
        if self.published is None or self.published > safe:
            self.published = safe  # the ring starts here; a stream behind it reads the store up to `safe`
            self.broadcast.publish_tail(safe, [], safe)

    async def _read_up_to(self, safe: int | None) -> None:
        if safe is None:
            return
        while self.published is not None and self.published < safe:
            after = self.published
            rows, reached = await self.reader.run(partial(events_between, after_id=after, until_id=safe,
                                                          limit=READ_EVENTS))
            self.reads += 1
            if self.published != after:  # the ring restarted meanwhile (streams closed and reopened)
                return
            self.broadcast.publish_tail(after, rows, reached)
            self.published = reached

    def _failed(self, what: str, exc: Exception) -> None:
        now = self.clock()
        if now - self._failed_logged >= FAIL_LOG_EVERY_SEC:
            self._failed_logged = now
            log.warning("event stream tail: %s failed (%s); retrying (streams wait, nothing is skipped)",
                        what, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
