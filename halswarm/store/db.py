"""Opening SQLite connections with the pragmas every supervisor connection needs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

BUSY_TIMEOUT_MS = 5000


class DatabaseError(RuntimeError):
    """The database cannot be opened or used; the message is one line for the operator."""


class CorruptDatabase(DatabaseError):
    """The file is there but SQLite cannot read it as a sound database."""


_CORRUPT_MARKERS = ("not a database", "malformed", "corrupt")


def restrict_modes(path: Path) -> None:
    """The database and its -wal/-shm files readable by the owner only (an older version, or another
    umask, may have left them world-readable: they hold the events, sessions and audit log)."""
    for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if f.exists() and f.stat().st_mode & 0o077:
                f.chmod(0o600)
        except OSError:  # not ours (e.g. a read-only copy): the open that follows reports real problems
            pass


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open `path` with WAL, foreign keys and a busy timeout.

    synchronous=FULL: an `ack` promises the event survives a crash of the whole machine, so
    every commit of the (batched) writer is fsynced.
    """
    p = Path(path)
    if not readonly:
        try:
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise DatabaseError(f"cannot create database directory {p.parent}: {exc.strerror}") from None
        try:
            # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the same mode.
            os.close(os.open(p, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise DatabaseError(f"cannot open database {p}: {exc.strerror}") from None
        restrict_modes(p)
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        else:
            conn = sqlite3.connect(p, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DatabaseError(f"{p}: could not enable WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as exc:
        kind = CorruptDatabase if any(m in str(exc) for m in _CORRUPT_MARKERS) else DatabaseError
        raise kind(f"{p}: {exc}") from None
    conn.row_factory = sqlite3.Row
    return conn


def quick_check(conn: sqlite3.Connection) -> str | None:
    """Return None when `PRAGMA quick_check` passes, else its first complaint."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    first = rows[0][0] if rows else "no result"
    return None if first == "ok" else str(first)


class FileCheck:
    """`quick_check` of the file at `path` on a read-only connection of its own (a background check
    beside the writer); `interrupt()` from another thread ends a check in progress (shutdown)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def __call__(self) -> str | None:
        try:
            conn = connect(self.path, readonly=True)
        except DatabaseError as exc:
            return str(exc).split(": ", 1)[-1]
        self._conn = conn
        try:
            return quick_check(conn)
        finally:
            self._conn = None
            conn.close()

    def interrupt(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.interrupt()


def schema_problem(conn: sqlite3.Connection) -> str | None:
    """The cheap start-up check, independent of the file's size: the header and the schema read.
    Damage inside a table is the background `quick_check`'s to find."""
    try:
        conn.execute("PRAGMA schema_version").fetchone()
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None


def final_checkpoint(conn: sqlite3.Connection) -> bool:
    """At a clean shutdown: fold the whole WAL into the file and truncate it. True when every frame
    was checkpointed (no other connection held it back), the precondition of a clean-shutdown marker."""
    try:
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error:
        return False
    return bool(busy == 0 and frames == done)
