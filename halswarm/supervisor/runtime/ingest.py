"""Event ingestion: per-node seq bookkeeping, batched durable commits, then acks.

The ordering rule: an `ack` for seq N is sent only after the transaction holding N committed.
Events accepted while a commit is in flight wait for the next one, so each commit carries every
event that arrived during the previous fsync (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from operator import itemgetter
from typing import Any

import orjson

from halswarm.core.metric_labels import event_type_label
from halswarm.core.model import Session
from halswarm.core.secret_values import SECRETS
from halswarm.core.timestamps import MILLISECONDS, event_time
from halswarm.protocol import Event
from halswarm.protocol.hub_link import ACCEPTED, HubLinkCore, SeqState
from halswarm.store.dialect import is_pg
from halswarm.store.repos.events import (
    EventRow,
    events_after,
    insert_events,
    insert_events_stored,
    last_assigned_event_id,
)
from halswarm.store.repos.nodes import set_nodes_last_seq
from halswarm.store.repos.sessions import upsert_sessions
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.broadcast import EventBroadcast
from halswarm.supervisor.runtime.tracker import SessionTracker

log = logging.getLogger(__name__)

# (node_id, type, session_id, project, data, received) of each event in a batch -> SQL to run with them;
# `received` is the supervisor's clock when the event arrived (not the agent's, which may be skewed)
Stage = Callable[[list[tuple[str | None, str, str | None, str | None, Any, float]]], Callable[[Any], None] | None]

STORED_WAIT_SEC = 10.0  # how long an API answer waits for its event to be committed
# Event data (stored JSON text) accepted but not yet in a commit, above which the hub stops reading agents'
# frames until the next commit takes it (TCP then holds the agents back; they keep the events in their
# outboxes). Without it the in-flight events were bounded only by every agent's window: 20 agents sending
# 16 KB events kept ~4,000 of them (and their parsed copies) in memory, ~250 MB, and glibc kept that peak.
PENDING_BYTES_HIGH = 8 * 2**20
ROOM_WAIT_SEC = 1.0  # a reader waits at most this long for room, then takes one more frame (a stalled
# writer must not stop heartbeats and registrations from being read)

_std_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
_ORJSON_OPTS = orjson.OPT_NON_STR_KEYS


def _dumps(value: Any) -> str:
    """The `data` column's JSON text (secret values are redacted per batch, in `_scrubbed`). orjson
    (about 10x the stdlib's speed on event data, which is re-encoded once per stored event); what it
    refuses (an int beyond 64 bits from supervisor-made data) goes through the stdlib, so nothing that
    serialized before fails now."""
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTS).decode()
    except TypeError:
        return _std_dumps(value)


def _scrubbed(rows: list[EventRow]) -> list[EventRow]:
    """`rows` with every configured secret value redacted from their data text (an agent that echoes a
    token or a provider key in its event data must not put it in the database, the API or the stream,
    which all read this text). Checked once per batch, not once per event: see `scrub_texts`."""
    texts = [r[6] for r in rows]
    clean = SECRETS.scrub_texts(texts)
    if clean is texts:
        return rows
    return [r if t is r[6] else (r[0], r[1], r[2], r[3], r[4], r[5], t, r[7], r[8])
            for r, t in zip(rows, clean, strict=True)]


class Ingestor:
    def __init__(
        self,
        writer: Writer,
        tracker: SessionTracker,
        metrics: Metrics,
        send_ack: Callable[[str, int], Awaitable[None] | None],
        send_rewind: Callable[[str, int], None] | None = None,
    ) -> None:
        self._writer = writer
        self._tracker = tracker
        self._metrics = metrics
        self._send_ack = send_ack
        self._send_rewind = send_rewind
        self.link = HubLinkCore()  # per-node seq expectations (sans-I/O)
        self._pending: list[tuple[EventRow, float, tuple[str, str, str | None, str | None, Any, float]]] = []
        self._pending_bytes = 0
        self._room = asyncio.Event()  # set while _pending_bytes <= PENDING_BYTES_HIGH
        self._room.set()
        self._flushing: asyncio.Task[None] | None = None
        self.broadcast = EventBroadcast(metrics.registry)
        self._idle = asyncio.Event()
        self._idle.set()
        self.stored_total = 0
        self._stored_waiters: dict[str, asyncio.Future[bool]] = {}
        self._metric_cache: dict[str, tuple[Any, Any]] = {}
        self._odd_logged: set[tuple[str, str]] = set()
        self._stages: list[Stage] = []
        # Told after each commit of events (PostgreSQL: the event tail NOTIFYs the other supervisors).
        self.on_commit: Callable[[], None] | None = None

    def _children(self, ev_type: str) -> tuple[Any, Any]:
        """Metric children per event type, cached: labels() lookups cost more than the increments.
        The label is bounded (known types plus `other`): agents choose event types."""
        pair = self._metric_cache.get(ev_type)
        if pair is None:
            label = event_type_label(ev_type)
            pair = (self._metrics.events_total.labels(label), self._metrics.event_processing.labels(label))
            if len(self._metric_cache) < 1000:
                self._metric_cache[ev_type] = pair
        return pair

    def add_stage(self, stage: Stage) -> None:
        """Derived state written in the same transaction as the events that cause it (the approvals).

        A stage gets each batch's (node_id, type, session_id, project, data, received) tuples before the
        commit and returns the SQL to run with the events (or None); a stage that raises is logged and
        skipped, so it never costs the batch its storage."""
        self._stages.append(stage)

    def _stage_jobs(self, batch: list) -> list[Callable[[Any], None]]:
        jobs = []
        items = [(*item[2][:5], item[0][8]) for item in batch]
        for stage in self._stages:
            try:
                job = stage(items)
            except Exception:
                log.exception("ingest stage %r failed on a batch of %d events", stage, len(items))
                self._metrics.errors_total.labels("ingest", "stage").inc()
                continue
            if job is not None:
                jobs.append(job)
        return jobs

    # ----- per-node seq -----

    def seq_state(self, node_id: str) -> SeqState:
        return self.link.state(node_id)

    def reset_node(self, node_id: str, stored: int) -> SeqState:
        """Called at registration: what is durably stored is the new base; anything queued stays queued."""
        return self.link.registered(node_id, stored)

    def offer(self, node_id: str, ev: Event, received_mono: float) -> tuple[str, int]:
        """Decide what to do with an agent event: (ACCEPTED, seq) | (DUPLICATE, committed) | (GAP, expected)."""
        verdict = self.link.offer(node_id, ev.seq)
        if verdict[0] != ACCEPTED:
            return verdict
        now = time.time()
        ts, odd = event_time(ev.timestamp, now)
        if odd is not None:
            self._note_odd_time(node_id, ev, odd)
        row = (node_id, ev.seq, ev.event_id, ev.session_id, ev.project, ev.type, _dumps(ev.data), ts, now)
        self._pending.append((row, received_mono, (node_id, ev.type, ev.session_id, ev.project, ev.data, ts)))
        self._count_pending(len(row[6]))
        self._kick()
        return verdict

    def _count_pending(self, size: int) -> None:
        self._pending_bytes += size
        if self._pending_bytes > PENDING_BYTES_HIGH:
            self._room.clear()

    def _pending_taken(self) -> None:
        self._pending_bytes = sum(len(item[0][6]) for item in self._pending)
        if self._pending_bytes <= PENDING_BYTES_HIGH:
            self._room.set()

    async def room(self) -> None:
        """Return when accepted events wait for a commit within PENDING_BYTES_HIGH, or after
        ROOM_WAIT_SEC (the hub calls it before reading each agent frame)."""
        if self._room.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ROOM_WAIT_SEC):
                await self._room.wait()

    def _note_odd_time(self, node_id: str, ev: Event, reason: str) -> None:
        """Count a converted or replaced event time; log the first of each kind per node."""
        self._metrics.values_normalised.labels("event.timestamp", reason).inc()
        key = (node_id, reason)
        if key not in self._odd_logged and len(self._odd_logged) < 1000:
            self._odd_logged.add(key)
            what = "read as milliseconds" if reason == MILLISECONDS else "replaced by the time received"
            log.warning("node %s: event seq %d has timestamp %r, %s (further ones are only counted in "
                        "hal_o_swarm_ingest_values_normalised_total)", node_id, ev.seq, ev.timestamp, what)

    def emit(self, node_id: str | None, ev_type: str, data: Any = None, *, session_id: str | None = None,
             project: str | None = None, track: bool = False) -> str:
        """Queue an event the supervisor makes itself (seq NULL), e.g. node.offline; returns its event_id.

        With ``track``, `stored()` can then wait for its commit.
        """
        ts = time.time()
        event_id = f"sup-{uuid.uuid4().hex}"
        if track:
            self._stored_waiters[event_id] = asyncio.get_running_loop().create_future()
        row = (node_id, None, event_id, session_id, project, ev_type, _dumps(data), ts, ts)
        self._pending.append((row, time.monotonic(), ("", ev_type, None, None, None, ts)))
        self._count_pending(len(row[6]))
        self._kick()
        return event_id

    async def stored(self, event_ids: list[str], timeout: float = STORED_WAIT_SEC) -> bool:
        """Wait until tracked events are committed: True, or False if a commit failed or it timed out.

        API handlers wait so that what they answer is already readable: after `halctl env check`
        returns, GET /api/v1/events has the env.check.fail it caused.
        """
        futs = [self._stored_waiters[e] for e in event_ids]
        try:
            async with asyncio.timeout(timeout):
                return all(await asyncio.gather(*futs))
        except TimeoutError:
            log.warning("%d supervisor event(s) not committed after %g s", len(event_ids), timeout)
            return False
        finally:
            for e in event_ids:
                self._stored_waiters.pop(e, None)

    async def emit_stored(self, node_id: str | None, ev_type: str, data: Any = None, *,
                          session_id: str | None = None, project: str | None = None) -> bool:
        """`emit` and wait for the commit (see `stored`)."""
        return await self.stored([self.emit(node_id, ev_type, data, session_id=session_id, project=project,
                                            track=True)])

    async def drain(self) -> None:
        """Wait until everything offered so far is committed (used at shutdown and in tests)."""
        while self._pending or (self._flushing and not self._flushing.done()):
            await self._idle.wait()
            await asyncio.sleep(0)

    def _forget_uncommitted(self, nodes: set[str]) -> None:
        """After a failed commit: nothing of those nodes above `committed` may be stored or acked.

        Events of the same nodes that arrived while the commit ran are still queued; storing them
        would put a hole in the node's seq and the cumulative ack that followed would tell the agent
        to delete the lost events. So they are dropped too, the accepted marks roll back, and the
        agents are told where to resend from (the same `seq_gap` they get for any hole).
        """
        if not nodes:
            return
        link = self.link
        self._pending = [item for item in self._pending
                         if item[0][1] is None or item[0][0] not in nodes
                         or link.is_committed(item[0][0], item[0][1])]
        self._pending_taken()
        for node_id in nodes:
            resend_from = link.rollback(node_id)
            if self._send_rewind is not None:
                try:
                    self._send_rewind(node_id, resend_from)
                except Exception as exc:  # a closed socket: the agent resends after reconnecting
                    log.debug("rewind to %s not sent: %s", node_id, exc)

    # ----- live subscribers (SSE streams and the routing feed; see runtime/broadcast.py) -----

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[dict[str, Any]]:
        """A queue of committed event dicts; dropped (see `is_subscribed`) when it overflows."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=maxsize)
        self.broadcast.queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.broadcast.queues.discard(q)

    def is_subscribed(self, q: asyncio.Queue[dict[str, Any]]) -> bool:
        return q in self.broadcast.queues

    # ----- flushing -----

    def _kick(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._idle.clear()
            self._flushing = asyncio.get_running_loop().create_task(self._flush_loop())

    def _wake_stored(self, rows: list[EventRow], ok: bool) -> None:
        if not self._stored_waiters:
            return
        for row in rows:
            fut = self._stored_waiters.get(row[2])
            if fut is not None and not fut.done():
                fut.set_result(ok)

    async def _flush_loop(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self._pending_taken()
                await self._flush(batch)
        finally:
            self._idle.set()

    async def _flush(self, batch: list) -> None:
        """Store one batch, then ack and publish it.

        Only SQL runs inside the writer's job: a Python error there would roll back the whole batch and
        rewind every node in it, so per-event work (the tracker before, rendering for subscribers after
        the commit) is guarded event by event and one odd event cannot fail the others.
        """
        rows = _scrubbed([item[0] for item in batch])
        changed: dict[str, Session] = {}
        for _, _, (node_id, ev_type, session_id, project, data, ts) in batch:
            if node_id:
                try:
                    s = self._tracker.apply_event(node_id, ev_type, session_id, project, data, ts)
                except Exception:  # a tracker bug must not cost the batch its storage
                    log.exception("session tracking failed for a %s event of %s", ev_type, node_id)
                    self._metrics.errors_total.labels("ingest", "track").inc()
                    continue
                if s is not None:
                    changed[s.id] = s
        # Node high-water marks to persist with the events (same transaction).
        highs: dict[str, int] = {}
        for r in rows:
            if r[1] is not None and r[0] is not None:
                highs[r[0]] = max(highs.get(r[0], 0), r[1])
        sessions = list(changed.values())
        want_rows = self.broadcast.wanted
        staged = self._stage_jobs(batch) if self._stages else []

        def job(conn: Any) -> tuple[int, list[Any] | None]:
            if want_rows and is_pg(conn):  # a shared sequence: the stored rows say which ids are this batch's
                stored = insert_events_stored(conn, rows)
                set_nodes_last_seq(conn, highs)
                if sessions:
                    upsert_sessions(conn, sessions)
                for stage_job in staged:
                    stage_job(conn)
                return 0, stored
            last_id = last_assigned_event_id(conn) if want_rows else 0
            inserted = insert_events(conn, rows)
            set_nodes_last_seq(conn, highs)
            if sessions:
                upsert_sessions(conn, sessions)
            for stage_job in staged:
                stage_job(conn)
            if not want_rows or inserted == len(rows):
                return last_id, None
            return last_id, events_after(conn, last_id)

        try:
            last_id, stored_rows = await self._writer.run(job)
        except Exception as exc:
            log.error("storing %d events failed: %s", len(rows), exc)
            self._metrics.errors_total.labels("ingest", "db_write").inc()
            self._forget_uncommitted(set(highs))
            self._wake_stored(rows, False)
            return
        self._wake_stored(rows, True)
        if self.on_commit is not None:
            self.on_commit()
        now = time.monotonic()
        for row, received, _ in batch:
            self._children(row[5])[1].observe(now - received)
        for ev_type, n in Counter(map(itemgetter(5), rows)).items():  # once per type: each inc() takes a lock
            self._children(ev_type)[0].inc(n)
        self.stored_total += len(rows)
        for node_id, seq in highs.items():
            ack = self.link.committed(node_id, seq)
            try:
                res = self._send_ack(node_id, ack)
                if asyncio.iscoroutine(res):
                    await res
            except Exception as exc:  # a closed socket must not stop the others' acks
                log.debug("ack to %s not sent: %s", node_id, exc)
        if want_rows:  # an append: rendering and fan-out run in the broadcast's own task
            self.broadcast.publish(last_id, rows, stored_rows)
