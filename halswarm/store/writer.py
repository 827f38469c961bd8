"""The single database writer: a thread that groups queued jobs into one transaction.

Every write of the supervisor goes through here, so the event loop never waits on SQLite and
many small writes (events from hundreds of agents) share one fsync. A job's future resolves
only after the COMMIT that contains it, which is what lets the hub send `ack` safely.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Job = Callable[[sqlite3.Connection], Any]
_STOP = object()


class WriterStopped(RuntimeError):
    pass


class Writer:
    def __init__(self, conn: sqlite3.Connection, *, max_batch: int = 512) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.batches = 0
        self.jobs = 0
        self.last_error: str | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="db-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue `job(conn)`; the future resolves after the commit that includes it."""
        if self._loop is None or self._stopping:
            raise WriterStopped("database writer is not running")
        fut = self._loop.create_future()
        self._queue.put((job, fut))
        return fut

    async def run(self, job: Job) -> Any:
        return await self.submit(job)

    async def stop(self) -> None:
        """Finish every queued job, then stop the thread (graceful shutdown flush)."""
        if self._thread is None:
            return
        self._stopping = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = []
            stop = item is _STOP
            if not stop:
                batch.append(item)
            while len(batch) < self._max_batch and not stop:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                else:
                    batch.append(nxt)
            if batch:
                self._execute(batch)
            if stop:
                # Drain anything queued after the stop marker so no caller waits forever.
                rest = []
                while True:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is not _STOP:
                        rest.append(nxt)
                if rest:
                    self._execute(rest)
                return

    def _execute(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        conn = self._conn
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job, fut in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((fut, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((fut, result, None))
            conn.execute("COMMIT")
            self.last_error = None
        except sqlite3.Error as exc:
            log.error("database write failed: %s", exc)
            self.last_error = str(exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            outcomes = [(fut, None, exc) for _, fut in batch]
        self.batches += 1
        self.jobs += len(batch)
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_resolve, outcomes)
        except RuntimeError:  # loop closed during shutdown
            pass


def _resolve(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, exc in outcomes:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
