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
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from halswarm.store.dialect import is_pg
from halswarm.store.guard import RECOVERABLE, StorageFault, StorageGuard

if TYPE_CHECKING:
    from halswarm.store.checkpoint import WalCheckpointer

log = logging.getLogger(__name__)

Job = Callable[[sqlite3.Connection], Any]
_STOP = object()
JOB_FAULT_HOLD_SEC = 10.0  # how long a failed job keeps the writer reported unhealthy


class WriterStopped(RuntimeError):
    pass


class Writer:
    def __init__(self, conn: sqlite3.Connection, *, max_batch: int = 512, guard: StorageGuard | None = None,
                 on_fault: Callable[[StorageFault], None] | None = None,
                 checkpointer: WalCheckpointer | None = None) -> None:
        self._conn = conn
        # SQLite: WAL checkpoints in a thread of their own, not inside a commit (store/checkpoint.py).
        self.checkpointer = checkpointer
        self.guard = guard
        self.on_fault = on_fault  # called (in the writer thread) when a storage fault is first seen
        self.fault: StorageFault | None = None  # set: nothing commits until it clears (if it can)
        self.job_error: str | None = None
        self._job_error_at = 0.0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.batches = 0
        self.jobs = 0
        self.last_error: str | None = None
        # SQLite: take the write lock at BEGIN (no deadlock upgrade later). PostgreSQL: row locks as
        # statements go; the single writer per supervisor never waits on itself.
        self._begin = "BEGIN" if is_pg(conn) else "BEGIN IMMEDIATE"

    def health(self) -> str | None:
        """None when commits can be trusted, else the cause in one line (for /readyz).

        Re-checks the file, so a read-only file made writable again clears here too.
        """
        fault = self.fault
        if fault is not None and fault.kind in RECOVERABLE:
            self._recheck()
            fault = self.fault
        elif fault is None and self.guard is not None:
            now = self.guard.check()
            if now is not None:
                self._set_fault(now)
                fault = now
        if fault is not None:
            return str(fault)
        if self.job_error is not None and time.monotonic() - self._job_error_at < JOB_FAULT_HOLD_SEC:
            return self.job_error
        return self.last_error

    def report_fault(self, fault: StorageFault) -> None:
        """A fault found outside the writer (e.g. the background integrity check): commit nothing more."""
        self._set_fault(fault)

    def _set_fault(self, fault: StorageFault) -> None:
        first = self.fault is None or self.fault.kind != fault.kind
        self.fault = fault
        if first:
            log.error("storage fault: %s; not committing (nor acking) until it clears", fault)
            if self.on_fault is not None:
                self.on_fault(fault)

    def _recheck(self) -> None:
        """Clear a recoverable fault whose cause went away."""
        fault = self.fault
        if fault is None or fault.kind not in RECOVERABLE:
            return
        now = self.guard.check() if self.guard is not None else None
        if now is None:
            log.warning("storage fault cleared (%s); committing again", fault)
            self.fault = None
        elif now.kind != fault.kind:
            self._set_fault(now)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self.checkpointer is not None:
            self.checkpointer.start(self._conn)
        self._thread = threading.Thread(target=self._run, name="db-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue `job(conn)`; the future resolves after the commit that includes it."""
        return self._put(job)

    def _put(self, job: Job | _Raw) -> asyncio.Future[Any]:
        if self._loop is None or self._stopping:
            raise WriterStopped("database writer is not running")
        fut = self._loop.create_future()
        self._queue.put((job, fut))
        return fut

    async def run(self, job: Job) -> Any:
        return await self.submit(job)

    def has_waiting(self) -> bool:
        """True when jobs are queued behind the one running (a long job may end its step early:
        retention gives the writer back to the ingest this way)."""
        return not self._queue.empty()

    async def stop(self) -> None:
        """Finish every queued job, then stop the thread (graceful shutdown flush)."""
        if self._thread is None:
            return
        self._stopping = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)

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
                self._execute_items(batch)
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
                    self._execute_items(rest)
                return

    def _execute_items(self, items: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        """Transactions for runs of plain jobs; raw items run alone, in queue order."""
        run: list[tuple[Job, asyncio.Future[Any]]] = []
        for job, fut in items:
            if not isinstance(job, _Raw):
                run.append((job, fut))
                continue
            if run:
                self._execute(run)
                run = []
            try:
                outcome: tuple[asyncio.Future[Any], Any, BaseException | None] = (fut, job.fn(self._conn), None)
            except Exception as exc:
                outcome = (fut, None, exc)
            self._finish([job], [outcome])
        if run:
            self._execute(run)

    def _execute(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        conn = self._conn
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._recheck()
        if self.fault is not None:
            # Faulted: commit nothing (a commit now could be acked and then lost); callers get the cause.
            outcomes = [(fut, None, self.fault) for _, fut in batch]
            self._finish(batch, outcomes)
            return
        failed_job: BaseException | None = None
        try:
            conn.execute(self._begin)
            for job, fut in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((fut, None, exc))
                    if isinstance(exc, sqlite3.Error):  # the database refused; a Python error is the job's own
                        failed_job = exc
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((fut, result, None))
            # Last look at the file before COMMIT: once committed, callers ack.
            fault = self.guard.check() if self.guard is not None else None
            if fault is not None:
                raise fault
            conn.execute("COMMIT")
            self.last_error = None
        except (sqlite3.Error, StorageFault) as exc:
            if isinstance(exc, StorageFault):
                self._set_fault(exc)
            else:
                log.error("database write failed: %s", exc)
                self.last_error = str(exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            reconnect = getattr(conn, "reconnect_if_broken", None)
            if reconnect is not None:  # PostgreSQL: a lost server connection is opened again for the next batch
                reconnect()
            outcomes = [(fut, None, exc) for _, fut in batch]
        else:
            if failed_job is not None:
                # A job that fails inside the writer is reported too (readiness used to see COMMIT only).
                self.job_error = f"a database write job failed: {type(failed_job).__name__}: {failed_job}"
                self._job_error_at = time.monotonic()
                log.error("%s", self.job_error)
        self._finish(batch, outcomes)

    def _finish(self, batch: list[Any], outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
                ) -> None:
        self.batches += 1
        self.jobs += len(batch)
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_resolve, outcomes)
        except RuntimeError:  # loop closed during shutdown
            pass

    def run_raw(self, fn: Job) -> asyncio.Future[Any]:
        """Run `fn(conn)` in the writer thread outside any transaction (e.g. a backup of the open file)."""
        return self._put(_Raw(fn))


class _Raw:
    """A writer item run on its own, outside BEGIN/COMMIT."""

    def __init__(self, fn: Job) -> None:
        self.fn = fn


def _resolve(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, exc in outcomes:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
