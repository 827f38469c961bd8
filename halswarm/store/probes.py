"""Cheap questions to the database: does it answer, does it take writes."""

from __future__ import annotations

import sqlite3

from halswarm.store.dialect import is_pg


def ping(conn: sqlite3.Connection) -> None:
    """One trivial read: raises if the database does not answer (readiness)."""
    conn.execute("SELECT 1").fetchone()


def write_probe(conn: sqlite3.Connection) -> None:
    """Fail now, not at the first registration, if the database takes no writes (read-only, locked; on
    PostgreSQL a standby or a role without CREATE)."""
    conn.execute("BEGIN" if is_pg(conn) else "BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE _hal_write_probe(x INTEGER)")
    finally:
        conn.execute("ROLLBACK")
