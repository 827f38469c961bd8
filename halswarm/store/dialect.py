"""What the two storage engines write differently, asked by the repos at the few places that need it.

Everything else in the repos is one SQL text for both (`INSERT ... ON CONFLICT`, row values, keyset
paging, `?` placeholders: the PostgreSQL connection translates them). A connection says its engine
in `dialect` ("postgresql"); a plain `sqlite3.Connection` has none and is SQLite.
"""

from __future__ import annotations

from typing import Any

SQLITE, POSTGRESQL = "sqlite", "postgresql"


def dialect(conn: Any) -> str:
    return str(getattr(conn, "dialect", SQLITE))


def is_pg(conn: Any) -> bool:
    return dialect(conn) == POSTGRESQL


def greatest(conn: Any, a: str, b: str) -> str:
    """The larger of two values: SQLite's scalar MAX(a, b), PostgreSQL's GREATEST(a, b)."""
    return f"GREATEST({a}, {b})" if is_pg(conn) else f"MAX({a}, {b})"


def epoch_to_text(conn: Any, expr: str) -> str:
    """'YYYY-MM-DD HH:MM:SS' UTC of an epoch expression (the runbook's `timestamp` text, schema 013)."""
    if is_pg(conn):
        return f"to_char(to_timestamp({expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
    return f"datetime({expr}, 'unixepoch')"


def json_array_has(conn: Any, column: str) -> str:
    """A condition: the JSON array text in `column` holds the text bound to the one `?` it contains."""
    if is_pg(conn):
        return f"({column})::jsonb @> jsonb_build_array(?::text)"
    return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE json_each.value = ?)"


def row_locator(conn: Any) -> str:
    """The physical row handle used to delete bounded batches: SQLite's rowid, PostgreSQL's ctid."""
    return "ctid" if is_pg(conn) else "rowid"
