"""Forward-only schema migrations with sha256 checksums of the applied files, one history per engine:
`migrations/` for SQLite, `migrations_pg/` for PostgreSQL (same runner rules: checksums, refuse a
changed or unknown migration, each one in its own transaction)."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from halswarm.store.db import DatabaseError
from halswarm.store.dialect import POSTGRESQL, SQLITE, dialect
from halswarm.store.repos.retention import set_incremental_on_new

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


MIGRATION_DIRS = {SQLITE: "migrations", POSTGRESQL: "migrations_pg"}
# Any fixed number: supervisors starting together on one PostgreSQL migrate one after the other.
PG_MIGRATE_LOCK = 0x4841_4C5F  # "HAL_"


def bundled_migrations(engine: str = SQLITE) -> list[Migration]:
    """Migrations of `engine` shipped in the package, ordered by their numeric prefix."""
    found = []
    for entry in resources.files("halswarm.store").joinpath(MIGRATION_DIRS[engine]).iterdir():
        if entry.name.endswith(".sql"):
            version = entry.name.split("_", 1)[0]
            found.append(Migration(version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: int(m.version))


def migrate(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the names applied.

    An applied migration whose file changed since is refused: the schema would no longer match
    what the code expects, and silently continuing is how data gets lost.
    """
    if dialect(conn) == POSTGRESQL:
        return _migrate_pg(conn, bundled_migrations(POSTGRESQL) if migrations is None else migrations)
    if set_incremental_on_new(conn):  # before the first table: freed pages can be given back later
        log.info("new database: auto_vacuum=INCREMENTAL")
    migrations = bundled_migrations() if migrations is None else migrations
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version TEXT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    applied = _applied(conn, migrations)
    done = []
    for m in migrations:
        if m.version in applied:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            _run_script_in_tx(conn, m.sql)
            conn.execute(
                "INSERT INTO schema_migrations(version, name, checksum, applied_at) VALUES (?,?,?,?)",
                (m.version, m.name, m.checksum, time.time()),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise DatabaseError(f"migration {m.name} failed: {exc}") from None
        done.append(m.name)
    return done


def _applied(conn: Any, migrations: list[Migration]) -> dict[str, tuple[str, str]]:
    """The recorded migrations, after refusing unknown (newer) and changed ones."""
    applied = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT version, name, checksum FROM schema_migrations")}
    known = {m.version: m for m in migrations}
    newer = sorted(v for v in applied if v not in known)
    if newer:
        raise DatabaseError(
            f"database has migrations this version does not know ({', '.join(newer)}); "
            "it was written by a newer hal-supervisor"
        )
    for version, (name, checksum) in applied.items():
        if checksum != known[version].checksum:
            raise DatabaseError(f"migration {name} checksum mismatch: the applied file was changed")
    return applied


def _migrate_pg(conn: Any, migrations: list[Migration]) -> list[str]:
    """PostgreSQL: the same rules; a session advisory lock serialises supervisors starting together, and
    a migration script runs whole (DDL is transactional in PostgreSQL)."""
    raw = conn.raw
    try:
        raw.execute("SELECT pg_advisory_lock(%s)", (PG_MIGRATE_LOCK,))
    except Exception as exc:
        raise DatabaseError(f"cannot lock the database for migrating: {str(exc).splitlines()[0]}") from None
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version TEXT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
            " applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied = _applied(conn, migrations)
        done = []
        for m in migrations:
            if m.version in applied:
                continue
            try:
                with raw.transaction():
                    raw.execute(m.sql.encode())  # no parameters: the whole script, several statements
                    raw.execute("INSERT INTO schema_migrations(version, name, checksum, applied_at)"
                                " VALUES (%s,%s,%s,%s)", (m.version, m.name, m.checksum, time.time()))
            except Exception as exc:
                line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise DatabaseError(f"migration {m.name} failed: {line}") from None
            done.append(m.name)
        return done
    finally:
        raw.execute("SELECT pg_advisory_unlock(%s)", (PG_MIGRATE_LOCK,))


def _run_script_in_tx(conn: sqlite3.Connection, sql: str) -> None:
    # executescript() would COMMIT first; split on complete statements instead.
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            if stmt and not all(ln.strip().startswith("--") or not ln.strip() for ln in stmt.splitlines()):
                conn.execute(stmt)
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") for ln in buf.strip().splitlines()):
        raise sqlite3.OperationalError(f"incomplete SQL statement at end of migration: {buf.strip()[:60]}")
