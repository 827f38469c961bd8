"""Command forwarding among supervisors sharing one PostgreSQL (issue 21): the table, NOTIFY and polls.

Both sides of a forwarded command live here; what to send and how is the dispatcher's:

- **Asking** (`forward`): the dispatcher resolved a command to a node whose live lease another
  supervisor holds. The command is queued in `command_forwards` (NOTIFY at its COMMIT) and this
  supervisor waits for its result until the command's deadline, woken by NOTIFY or by the poll; the
  pure `core.forwarding.asker_outcome` reads the row at each wake-up. The row is deleted once answered.
- **Holding** (the loop): queued rows for the nodes connected here are claimed (exactly once) and run
  by `execute` (the dispatcher re-validates and sends them to the agent), and their results written
  back with secrets scrubbed by value.

NOTIFY is never the only carrier: the loop also runs every `poll_interval`, so a lost notification (the
listening connection dropped, the server restarted) costs at most that. The supervisor's one LISTEN
connection (halswarm.store.pg_listen.PgListener, shared with the event tail) reconnects by itself; while
it is down the polls carry everything.

Metrics (when given): `hal_o_swarm_forwarded_commands_total{role,outcome}` (role `asked`: this
supervisor forwarded it; `held`: it ran one for another) and `hal_o_swarm_forwarding_duration_seconds`
(asked, from queueing to the holder's answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from halswarm.core.forwarding import DONE, GONE, LOST, asker_outcome, result_status
from halswarm.core.secret_values import SECRETS
from halswarm.protocol import CommandResult
from halswarm.store.repos.forwards import (
    CHANNEL,
    claim_forwards,
    delete_forward,
    finish_forward,
    forward_states,
    has_queued,
    purge_forwards,
    queue_forward,
)
from halswarm.supervisor.metrics import Metrics

log = logging.getLogger(__name__)

POLL_INTERVAL_SEC = 0.5
PURGE_EVERY_SEC = 30.0
PURGE_GRACE_SEC = 60.0

Execute = Callable[[dict[str, Any]], Awaitable[CommandResult]]


class Forwarder:
    def __init__(self, writer: Any, reader: Any, *, owner: str, linked: Callable[[], Iterable[str]],
                 listener: Any | None, poll_interval: float = POLL_INTERVAL_SEC,
                 metrics: Metrics | None = None) -> None:
        self.writer, self.reader, self.owner, self.linked = writer, reader, owner, linked
        self.listener = listener  # the supervisor's PgListener (None: polls only)
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.run_row: Execute | None = None  # set by the dispatcher
        self._waiting: dict[str, asyncio.Future[CommandResult]] = {}
        self._node_of: dict[str, str] = {}
        self._started: dict[str, float] = {}  # monotonic time each waited-for command was queued
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._running: set[asyncio.Task[Any]] = set()
        self._last_purge = 0.0
        self._failing: str | None = None
        self.claimed = 0  # commands this supervisor took to its agents for others
        self.forwarded = 0  # commands this supervisor asked others to run

    # ----- lifecycle -----

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(), name="forward-poll")]
        if self.listener is not None:  # another supervisor's row or result: read at once (and every poll)
            self.listener.subscribe(CHANNEL, self._on_notify)

    def _on_notify(self, _payload: str) -> None:
        self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._running, return_exceptions=True)
        self._tasks = []
        if self.listener is not None:
            self.listener.unsubscribe(CHANNEL, self._on_notify)
        for cid, fut in self._waiting.items():  # answered as a local command whose supervisor stops
            if not fut.done():
                self._count("asked", "shutdown")
                fut.set_result(CommandResult(cid, "failure", None, "the supervisor is shutting down"))

    # ----- asking -----

    async def forward(self, row: dict[str, Any], remaining: float) -> CommandResult | None:
        """Queue `row` for the node's holder and wait up to `remaining` s; None when the deadline passed
        (the caller answers the timeout exactly as for a local command)."""
        cid = str(row["id"])
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        try:
            await self.writer.run(lambda c: queue_forward(c, row, remaining))
            # Waited for only once the row is committed (a poll before that would find no row). A result
            # written meanwhile is in the row: the next poll or NOTIFY reads it.
            self._waiting[cid] = fut
            self._node_of[cid] = str(row["node_id"])
            self._started[cid] = started
            self._wake.set()
            self.forwarded += 1
            remaining -= time.monotonic() - started
            try:
                return await asyncio.wait_for(asyncio.shield(fut), max(0.0, remaining))
            except TimeoutError:
                self._count("asked", "expired")
                return None
        finally:
            self._waiting.pop(cid, None)
            self._node_of.pop(cid, None)
            self._started.pop(cid, None)
            # Answered (or timed out): the row goes, so a holder that did not claim it yet never runs it.
            task = asyncio.create_task(self._delete(cid))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _delete(self, cid: str) -> None:
        with contextlib.suppress(Exception):
            await self.writer.run(lambda c: delete_forward(c, cid))

    # ----- the loop: claims (holder) and results (asker) -----

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the next poll tries again
                why = f"{type(exc).__name__}: {exc}"
                if why != self._failing:
                    log.warning("command forwarding: %s; retrying every %g s", why, self.poll_interval)
                self._failing = why
            else:
                if self._failing is not None:
                    log.info("command forwarding: the database answers again")
                self._failing = None

    async def tick(self) -> None:
        await self._claim()
        await self._collect()
        now = time.monotonic()
        if now - self._last_purge >= PURGE_EVERY_SEC:
            self._last_purge = now
            await self.writer.run(lambda c: purge_forwards(c, PURGE_GRACE_SEC))

    async def _claim(self) -> None:
        nodes = list(self.linked())
        if not nodes or self.run_row is None:
            return
        if not await self.reader.run(lambda c: has_queued(c, nodes)):
            return
        owner = self.owner
        rows = await self.writer.run(lambda c: claim_forwards(c, nodes, owner))
        for row in rows:
            self.claimed += 1
            task = asyncio.create_task(self._run_claimed(row), name=f"forwarded-{row['id']}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_claimed(self, row: dict[str, Any]) -> None:
        assert self.run_row is not None
        cid = str(row["id"])
        log.info("forwarded command %s (%s) from %s for node %s: sending it to the agent", cid, row["type"],
                 row["requested_by"], row["node_id"])
        try:
            result = await self.run_row(row)
            self._count("held", result.status)
        except Exception as exc:
            log.exception("forwarded command %s failed here", cid)
            self._count("held", "error")
            result = CommandResult(cid, "failure", None, f"the supervisor holding the node failed: {exc}")
        text = json.dumps(SECRETS.scrub_data({"status": result.status, "output": result.output,
                                              "error": result.error}), default=str)
        owner = self.owner
        try:
            stored = await self.writer.run(lambda c: finish_forward(c, cid, owner, text))
        except Exception as exc:
            log.warning("forwarded command %s: could not store its result: %s", cid, exc)
            return
        if not stored:
            log.info("forwarded command %s finished after its asker stopped waiting", cid)

    async def _collect(self) -> None:
        if not self._waiting:
            return
        ids = list(self._waiting)
        now = time.time()
        states = await self.reader.run(lambda c: forward_states(c, ids, now))
        for cid in ids:
            fut = self._waiting.get(cid)
            if fut is None or fut.done():
                continue
            status, claimed_by, result, live_owner = states.get(cid, (None, None, None, None))
            outcome = asker_outcome(status, claimed_by, live_owner)
            if outcome == DONE:
                res = _parse_result(cid, result)
                self._count("asked", res.status)
                if self.metrics is not None and cid in self._started:
                    self.metrics.forwarding_duration.observe(time.monotonic() - self._started[cid])
                fut.set_result(res)
            elif outcome == GONE:
                self._count("asked", "offline")
                fut.set_result(CommandResult(cid, "failure", None, f"node {self._node_of.get(cid)} went offline"))
            elif outcome == LOST:
                self._count("asked", "lost")
                fut.set_result(CommandResult(cid, "failure", None, "the forwarded command was lost"))

    def _count(self, role: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.forwarded(role, outcome)


def _parse_result(cid: str, text: str | None) -> CommandResult:
    """The holder's result row as the command's result; anything malformed is a failure, never code."""
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or result_status(data.get("status")) is None:
        return CommandResult(cid, "failure", None, "the supervisor holding the node stored an unreadable result")
    error = data.get("error")
    return CommandResult(cid, str(data["status"]), data.get("output"), error if isinstance(error, str) else None)
