"""A checked copy of the database before pending migrations change its schema.

Migration 012 renames a column of `events`; a schema change is the one step an operator cannot
undo by restarting the old release, so the pre-migration file is kept beside the database as
`<db>.pre-migrate-<last applied version>`. An interrupted start-up finds the copy already made
(and checked) and reuses it; each migration is one transaction, so re-running finishes the job.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from halswarm.store.db import DatabaseError
from halswarm.store.migrations import Migration


def applied_versions(conn: sqlite3.Connection) -> list[str]:
    """Versions recorded in schema_migrations ([] for a brand-new file)."""
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'").fetchone()
    if not has:
        return []
    return sorted((r[0] for r in conn.execute("SELECT version FROM schema_migrations")), key=int)


def backup_path(db_path: str | Path, applied: list[str]) -> Path:
    p = Path(db_path)
    return p.with_name(f"{p.name}.pre-migrate-{applied[-1] if applied else '000'}")


def _check_copy(path: Path, applied: list[str]) -> str | None:
    """None when `path` is a sound SQLite file with exactly the `applied` migrations, else why not."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            first = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if first != "ok":
                return f"integrity_check: {first}"
            if applied_versions(conn) != applied:
                return "its schema_migrations differ from the database's"
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None


def backup_before_migrate(conn: sqlite3.Connection, db_path: str | Path,
                          migrations: list[Migration]) -> Path | None:
    """Copy the database (SQLite online backup) before any pending migration runs, check the copy,
    and return its path; None when nothing is pending or the database is new. Raises DatabaseError
    (and nothing is migrated) when the copy cannot be made or fails its check."""
    applied = applied_versions(conn)
    if not applied or all(m.version in applied for m in migrations):
        return None
    target = backup_path(db_path, applied)
    if target.exists() and _check_copy(target, applied) is None:
        return target
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)
        dest = sqlite3.connect(tmp)
        try:
            conn.backup(dest)
            # One self-contained file: the copy inherits WAL mode from the live database.
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise DatabaseError(f"cannot back up {db_path} to {tmp} before migrating: {exc}") from None
    problem = _check_copy(tmp, applied)
    if problem is not None:
        tmp.unlink(missing_ok=True)
        raise DatabaseError(f"the pre-migration backup of {db_path} failed its check ({problem}); not migrating")
    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target
