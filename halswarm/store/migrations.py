"""Forward-only schema migrations with sha256 checksums of the applied files."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources

from halswarm.store.db import DatabaseError
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


def bundled_migrations() -> list[Migration]:
    """Migrations shipped in the package, ordered by their numeric prefix."""
    found = []
    for entry in resources.files("halswarm.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = entry.name.split("_", 1)[0]
            found.append(Migration(version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: int(m.version))


def migrate(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the names applied.

    An applied migration whose file changed since is refused: the schema would no longer match
    what the code expects, and silently continuing is how data gets lost.
    """
    if set_incremental_on_new(conn):  # before the first table: freed pages can be given back later
        log.info("new database: auto_vacuum=INCREMENTAL")
    migrations = bundled_migrations() if migrations is None else migrations
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version TEXT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    applied = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT version, name, checksum FROM schema_migrations")}
    known = {m.version for m in migrations}
    newer = sorted(v for v in applied if v not in known)
    if newer:
        raise DatabaseError(
            f"database has migrations this version does not know ({', '.join(newer)}); "
            "it was written by a newer hal-supervisor"
        )
    done = []
    for m in migrations:
        if m.version in applied:
            name, checksum = applied[m.version]
            if checksum != m.checksum:
                raise DatabaseError(f"migration {name} checksum mismatch: the applied file was changed")
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
