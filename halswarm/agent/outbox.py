"""Durable event outbox of the agent (SPEC 4 "Delivery").

Every event is committed to ``<data_dir>/outbox.db`` (SQLite, WAL, ``synchronous=FULL``)
*before* it is sent, and deleted only when the supervisor acknowledges it. ``seq`` is assigned
here: per node, from 1, gap-free, and it survives restarts even after every row was acked and
deleted (``next_seq`` lives in the ``meta`` table, not in ``MAX(seq)``).

Invariant: the stored rows are exactly the seqs ``last_acked_seq + 1 .. next_seq - 1`` (deletes
only ever remove a prefix). The supervisor refuses events that leave a gap, so nothing may
ever be removed from the middle or the front of the pending range without an ack.

Outbox-full policy (``max_events``): *refuse new events, never drop stored ones.*
Dropping the oldest pending events would punch a permanent hole in the seq range (the
supervisor would answer ``seq_gap`` forever); refusing an event before it gets a seq keeps the
stream gap-free. To keep room for events that carry state, high-volume low-value types
(``message.part.delta`` by default) are refused first, once the outbox is
``(1 - low_priority_reserve)`` full; every type is refused at ``max_events``. A refused
``append`` returns ``None`` and increments ``refused_total`` (in memory, since start). What is
lost is recent history, not current state: ``register`` carries a fresh sessions snapshot on
every reconnect. ``stats()`` (pending, max_events, refused_total) goes out in every heartbeat, and
the supervisor exports it as ``hal_o_swarm_agent_outbox_*{node}`` series.

A corrupt or foreign ``outbox.db`` at start is moved aside to ``outbox.db.corrupt-<ts>`` (with
its -wal/-shm) and a fresh outbox is started with one error line, so a bad file never turns
into a crash loop. A fresh outbox starts at seq 1; when the supervisor then answers a
``resume_from_seq`` outside our ``last_acked_seq .. next_seq - 1`` (our outbox was reset, or
its database was restored from a backup), ``resume_from`` renumbers the pending events to
follow it: otherwise they would be discarded as duplicates, or refused as a gap forever.

``Outbox`` is the synchronous, thread-safe core; ``AsyncOutbox`` runs it on one dedicated
worker thread so the event loop never waits on fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from halswarm.protocol import MAX_FRAME_BYTES, Event
from halswarm.protocol.agent_link import clamp_ack, plan_resume
from halswarm.protocol.codec import encode_raw
from halswarm.protocol.messages import OutboxStats

log = logging.getLogger(__name__)

OUTBOX_FILENAME = "outbox.db"
DEFAULT_MAX_EVENTS = 100_000
DEFAULT_LOW_PRIORITY_TYPES: frozenset[str] = frozenset({"message.part.delta"})
# Head-room left in a frame for the envelope around an event payload.
_FRAME_MARGIN = 4096
_PREVIEW_CHARS = 16 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY,
    event_id   TEXT    NOT NULL,
    session_id TEXT,
    project    TEXT,
    type       TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    timestamp  REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('next_seq', 1), ('last_acked_seq', 0);
"""

T = TypeVar("T")


class OutboxLockedError(RuntimeError):
    """Another live process holds this outbox (two agents configured with one data_dir)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class Outbox:
    """Synchronous outbox core. Thread-safe (one lock around one SQLite connection)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        low_priority_types: Collection[str] = DEFAULT_LOW_PRIORITY_TYPES,
        low_priority_reserve: float = 0.1,
        busy_timeout_ms: int = 5000,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        if not 0.0 <= low_priority_reserve < 1.0:
            raise ValueError("low_priority_reserve must be in [0, 1)")
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / OUTBOX_FILENAME
        self.max_events = max_events
        self.low_priority_types = frozenset(low_priority_types)
        self.low_priority_limit = max(1, int(max_events * (1.0 - low_priority_reserve)))
        self.max_frame_bytes = max_frame_bytes
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.RLock()
        self._listeners: list[Callable[[Event], None]] = []
        self.refused_total = 0
        self._full_logged = False
        self._closed = False

        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = self._acquire_file_lock()
        try:
            self._conn = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ---------------------------------------------------------------- opening

    def _acquire_file_lock(self) -> int:
        fd = os.open(self.data_dir / (OUTBOX_FILENAME + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutboxLockedError(f"outbox {self.path} is in use by another process") from None
        return fd

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            # Events may carry prompts and tool output: create the file owner-only.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.DatabaseError(f"cannot enable WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=FULL")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            conn.executescript(_SCHEMA)
            # Fails on a foreign database that happens to have a table named outbox.
            conn.execute("SELECT seq, event_id, session_id, project, type, data, timestamp FROM outbox LIMIT 1")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            self._load_meta(conn)
            return conn
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            aside = self._move_aside()
            log.error("outbox %s is unreadable (%s); moved it to %s and started a fresh outbox", self.path, exc, aside)
        conn = self._connect()
        self._load_meta(conn)
        return conn

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = self.path.with_name(f"{OUTBOX_FILENAME}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{OUTBOX_FILENAME}.corrupt-{stamp}.{n}")
            n += 1
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(aside) + suffix))
        return aside

    def _load_meta(self, conn: sqlite3.Connection) -> None:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        next_seq, last_acked = meta.get("next_seq"), meta.get("last_acked_seq")
        if not isinstance(next_seq, int) or not isinstance(last_acked, int) or next_seq < 1 or last_acked < 0:
            raise sqlite3.DatabaseError(f"bad meta row (next_seq={next_seq!r}, last_acked_seq={last_acked!r})")
        count, lo, hi = conn.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM outbox").fetchone()
        # Cannot happen with transactional writes; repair rather than re-issue a stored seq.
        if hi is not None and hi >= next_seq:
            log.warning("outbox next_seq %d <= stored seq %d; repairing", next_seq, hi)
            next_seq = hi + 1
        if lo is not None and lo <= last_acked:
            last_acked = lo - 1
        if last_acked >= next_seq:
            last_acked = next_seq - 1
        self._next_seq = next_seq
        self._last_acked = last_acked
        self._count = count
        conn.execute("BEGIN IMMEDIATE")
        self._write_meta(conn)
        conn.execute("COMMIT")

    def _write_meta(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "UPDATE meta SET value = ? WHERE key = ?",
            [(self._next_seq, "next_seq"), (self._last_acked, "last_acked_seq")],
        )

    # ---------------------------------------------------------------- helpers

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction; in-memory counters are restored on failure."""
        if self._closed:
            raise RuntimeError("outbox is closed")
        saved = (self._next_seq, self._last_acked, self._count)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            self._next_seq, self._last_acked, self._count = saved
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return result

    def _fit_frame(self, payload: dict[str, Any]) -> tuple[str, Any]:
        """Return ``(stored JSON, value)`` for ``payload['data']``, shrunk if the frame would be too large.

        An event the supervisor cannot accept would stall the gap-free stream for good, so an
        oversized ``data`` is replaced by a marker with a preview instead.
        """
        data_json = _dumps(payload["data"])
        limit = self.max_frame_bytes - _FRAME_MARGIN
        size = len(encode_raw("event", payload).encode("utf-8"))
        if size <= limit:
            return data_json, payload["data"]
        payload = dict(payload)
        payload["data"] = {
            "truncated": True,
            "original_bytes": len(data_json.encode("utf-8")),
            "preview": data_json[:_PREVIEW_CHARS],
        }
        if len(encode_raw("event", payload).encode("utf-8")) > limit:
            raise ValueError("event does not fit in one frame even without its data")
        log.warning("event %s (%s) of %d bytes truncated to fit one frame", payload["event_id"], payload["type"], size)
        return _dumps(payload["data"]), payload["data"]

    @staticmethod
    def _row_to_event(row: tuple[Any, ...]) -> Event:
        seq, event_id, session_id, project, etype, data, ts = row
        try:
            value = json.loads(data)
        except ValueError:
            log.warning("outbox row seq=%d has undecodable data; sending null", seq)
            value = None
        return Event(
            seq=seq, event_id=event_id, type=etype, session_id=session_id, project=project, data=value, timestamp=ts
        )

    # ---------------------------------------------------------------- public API

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def last_acked_seq(self) -> int:
        return self._last_acked

    @property
    def dropped_total(self) -> int:
        """Old name of ``refused_total`` (nothing stored is ever dropped)."""
        return self.refused_total

    def stats(self) -> OutboxStats:
        """What the heartbeat reports (plain attribute reads: safe from any thread)."""
        return OutboxStats(pending=self._count, max_events=self.max_events, refused_total=self.refused_total)

    def add_listener(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` after every committed append (from the appending thread)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[Event], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def append(
        self,
        event_id: str | None,
        type: str,
        session_id: str | None = None,
        project: str | None = None,
        data: Any = None,
        timestamp: float | None = None,
    ) -> Event | None:
        """Store one event durably and return it with its seq; ``None`` if refused (outbox full).

        The commit (fsync) has happened when this returns, so the caller may send right away.
        """
        if not type or not isinstance(type, str):
            raise ValueError("event type must be a non-empty string")
        event_id = event_id or uuid.uuid4().hex
        ts = float(timestamp) if timestamp else time.time()
        with self._lock:
            limit = self.low_priority_limit if type in self.low_priority_types else self.max_events
            if self._count >= limit:
                self.refused_total += 1
                if not self._full_logged:
                    self._full_logged = True
                    log.warning(
                        "outbox full (%d/%d events): refusing new events, starting with %s",
                        self._count,
                        self.max_events,
                        type,
                    )
                return None
            seq = self._next_seq
            payload = {
                "seq": seq,
                "event_id": event_id,
                "session_id": session_id,
                "project": project,
                "type": type,
                "data": data,
                "timestamp": ts,
            }
            data_json, data = self._fit_frame(payload)

            def work(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "INSERT INTO outbox(seq, event_id, session_id, project, type, data, timestamp)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (seq, event_id, session_id, project, type, data_json, ts),
                )
                self._next_seq = seq + 1
                self._count += 1
                self._write_meta(conn)

            self._tx(work)
            event = Event(
                seq=seq, event_id=event_id, type=type, session_id=session_id, project=project, data=data, timestamp=ts
            )
            listeners = list(self._listeners)
        for cb in listeners:
            try:
                cb(event)
            except Exception:
                log.exception("outbox listener failed")
        return event

    def _delete_through(self, conn: sqlite3.Connection, seq: int) -> None:
        cur = conn.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
        self._count -= cur.rowcount
        self._last_acked = seq
        self._write_meta(conn)
        if self._count < self.low_priority_limit:
            self._full_logged = False

    def ack(self, seq: int) -> int:
        """Cumulative ack: the supervisor stored everything up to ``seq``. Returns rows deleted."""
        with self._lock:
            through = clamp_ack(seq, self._last_acked, self._next_seq)
            if seq >= self._next_seq and seq > self._last_acked:
                log.warning("ack for seq %d beyond the last assigned seq %d; clamping", seq, self._next_seq - 1)
            if through is None:
                return 0
            before = self._count
            self._tx(lambda conn: self._delete_through(conn, through))
            return before - self._count

    def resume_from(self, seq: int, *, same_store: bool = True) -> None:
        """Apply ``registered.resume_from_seq``: the supervisor holds every event up to ``seq``
        and will store ``seq + 1`` next.

        * ``last_acked <= seq < next_seq`` (normal): delete through ``seq``.
        * ``seq < last_acked``: the supervisor lost events it had acked (DB restored from a
          backup). They are gone here too and can never be resent; keep going with what is
          still stored, renumbered to follow ``seq`` (else every event would be a ``seq_gap``).
        * ``seq >= next_seq``: our numbering restarted (outbox lost or moved aside); renumber
          the pending events to follow ``seq`` (else they would be discarded as duplicates).
        * ``same_store=False`` (after a failover to a supervisor that did not ack our events) and
          ``seq > last_acked``: its seqs may be another store's events; renumber, never delete.
        """
        with self._lock:
            offset = plan_resume(seq, self._last_acked, self._next_seq, same_store=same_store)
            if offset is None:
                if seq > self._last_acked:
                    self._tx(lambda conn: self._delete_through(conn, seq))
                return
            if not same_store:
                log.info(
                    "failed over to a supervisor at seq %d (the previous one acked up to %d): "
                    "renumbering %d pending event(s) from %d",
                    seq,
                    self._last_acked,
                    self._count,
                    seq + 1,
                )
            elif seq < self._last_acked:
                log.warning(
                    "supervisor resumes from seq %d but had acked up to %d (restored from backup?): events %d..%d "
                    "are lost; renumbering %d pending event(s) from %d",
                    seq,
                    self._last_acked,
                    seq + 1,
                    self._last_acked,
                    self._count,
                    seq + 1,
                )
            else:
                log.warning(
                    "supervisor already holds seq %d but this outbox only issued up to %d (outbox reset?): "
                    "renumbering %d pending event(s) from %d",
                    seq,
                    self._next_seq - 1,
                    self._count,
                    seq + 1,
                )

            def work(conn: sqlite3.Connection) -> None:
                # Via negative keys: a direct shift could collide with a not-yet-moved row,
                # since SQLite checks the primary key row by row in no guaranteed order.
                conn.execute("UPDATE outbox SET seq = -seq")
                conn.execute("UPDATE outbox SET seq = ? - seq", (offset,))
                self._next_seq += offset
                self._last_acked = seq
                self._write_meta(conn)

            self._tx(work)

    def pending(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Stored events with ``seq > after_seq``, oldest first, at most ``limit``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("outbox is closed")
            rows = self._conn.execute(
                "SELECT seq, event_id, session_id, project, type, data, timestamp FROM outbox"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [self._row_to_event(r) for r in rows]

    def size(self) -> int:
        return self._count

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            finally:
                os.close(self._lock_fd)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncOutbox:
    """Async facade: every call runs on one dedicated worker thread (calls are serialized).

    Build it inside the running loop (``await AsyncOutbox.open(...)``). ``on_append`` callbacks
    run on the loop thread, also for appends made through the sync core from other threads.
    """

    def __init__(
        self,
        core: Outbox,
        loop: asyncio.AbstractEventLoop | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.core = core
        self._loop = loop or asyncio.get_running_loop()
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._callbacks: list[Callable[[Event], None]] = []
        core.add_listener(self._from_thread)

    @classmethod
    async def open(cls, data_dir: str | os.PathLike[str], **kwargs: Any) -> AsyncOutbox:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        try:
            core = await loop.run_in_executor(executor, lambda: Outbox(data_dir, **kwargs))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(core, loop, executor)

    def _from_thread(self, event: Event) -> None:
        if self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(self._dispatch, event)
        except RuntimeError:  # loop closed between the check and the call
            pass

    def _dispatch(self, event: Event) -> None:
        for cb in list(self._callbacks):
            try:
                cb(event)
            except Exception:
                log.exception("outbox on_append callback failed")

    def on_append(self, callback: Callable[[Event], None]) -> None:
        self._callbacks.append(callback)

    def remove_on_append(self, callback: Callable[[Event], None]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(self._executor, fn, *args)

    async def append(
        self,
        event_id: str | None,
        type: str,
        session_id: str | None = None,
        project: str | None = None,
        data: Any = None,
        timestamp: float | None = None,
    ) -> Event | None:
        return await self._run(self.core.append, event_id, type, session_id, project, data, timestamp)

    async def ack(self, seq: int) -> int:
        return await self._run(self.core.ack, seq)

    async def resume_from(self, seq: int, *, same_store: bool = True) -> None:
        await self._run(lambda: self.core.resume_from(seq, same_store=same_store))

    async def pending(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        return await self._run(self.core.pending, after_seq, limit)

    async def size(self) -> int:
        return self.core.size()

    @property
    def last_acked_seq(self) -> int:
        return self.core.last_acked_seq

    @property
    def next_seq(self) -> int:
        return self.core.next_seq

    @property
    def dropped_total(self) -> int:
        return self.core.refused_total

    @property
    def refused_total(self) -> int:
        return self.core.refused_total

    def stats(self) -> OutboxStats:
        return self.core.stats()

    async def close(self) -> None:
        try:
            await self._run(self.core.close)
        finally:
            self._executor.shutdown(wait=True)
