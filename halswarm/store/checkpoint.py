"""WAL checkpoints off the writer's commit path (SQLite).

By default SQLite checkpoints inside the COMMIT that takes the WAL past 1,000 pages: that commit copies
~4 MiB into the database file and fsyncs it before it returns, and every event batch queued behind it
waits (and is acked that much later). Retention makes this frequent: each purge step dirties hundreds
of index pages. Here a thread with a connection of its own runs `wal_checkpoint(PASSIVE)` every
`interval` seconds instead. A PASSIVE checkpoint takes no lock a writer needs (the writer keeps
appending to the WAL meanwhile); the WAL restarts from its start at the writer's next transaction once
a checkpoint copied every frame. The writer connection keeps a backstop: its own automatic checkpoint
at `backstop_pages` (the WAL stays bounded should this thread fall behind or stop).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from halswarm.store.db import BUSY_TIMEOUT_MS

log = logging.getLogger(__name__)

INTERVAL_SEC = 0.5
BACKSTOP_PAGES = 10_000  # the writer's own wal_autocheckpoint: ~40 MiB of WAL at 4 KiB pages


def open_for_checkpoints(path: str | Path) -> sqlite3.Connection:
    """A second connection to a file the writer already has open, through SQLite only. Not `db.connect`:
    it opens and closes a descriptor of its own on the file first, and closing any descriptor of a file
    drops every POSIX lock this process holds on it (the writer's too), after which another process
    closing its last connection takes the database as unused and deletes the WAL under us."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # this connection never commits; be explicit
    return conn


class WalCheckpointer:
    def __init__(self, path: str | Path, *, interval: float = INTERVAL_SEC,
                 backstop_pages: int = BACKSTOP_PAGES) -> None:
        self.path = path
        self.interval = interval
        self.backstop_pages = backstop_pages
        self.runs = 0  # checkpoints run
        # the last one's (busy, frames in the WAL, frames of it now in the database file); SQLite counts
        # the frames of the current WAL, so a checkpoint with nothing new repeats the same figures
        self.last: tuple[int, int, int] | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    def start(self, writer_conn: sqlite3.Connection) -> None:
        """Raise the writer's automatic checkpoint to the backstop and start the thread."""
        writer_conn.execute(f"PRAGMA wal_autocheckpoint={int(self.backstop_pages)}")
        self._conn = open_for_checkpoints(self.path)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="db-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        while not self._stop.wait(self.interval):
            self.checkpoint_once(conn)

    def checkpoint_once(self, conn: sqlite3.Connection | None = None) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint: (busy, frames in the WAL, frames copied), or None when it failed."""
        conn = conn or self._conn
        if conn is None:
            return None
        try:
            busy, wal_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            if str(exc) != self.last_error:  # once per distinct cause; the backstop still bounds the WAL
                log.warning("background WAL checkpoint failed: %s", exc)
            self.last_error = str(exc)
            return None
        self.last_error = None
        self.runs += 1
        self.last = (int(busy), int(wal_frames), int(copied))
        return self.last

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread (a checkpoint in progress is interrupted) and close its connection. Never the
        last connection to the file (the writer's is closed after this, or not at all when the process
        abandons a replaced file), so closing it neither checkpoints nor removes the WAL."""
        thread, conn = self._thread, self._conn
        self._stop.set()
        if thread is not None:
            deadline = time.monotonic() + timeout
            while thread.is_alive() and time.monotonic() < deadline:
                if conn is not None:
                    conn.interrupt()
                thread.join(0.1)
        self._thread = None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
