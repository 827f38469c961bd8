"""SQL for ``console_sessions``: the web console's login sessions (stored by digest, never the cookie)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class ConsoleSessionRow:
    id_hash: str
    actor: str
    token_hash: str
    created_at: float
    last_seen: float
    expires_at: float


def insert_console_session(conn: sqlite3.Connection, row: ConsoleSessionRow, *, keep: int, now: float) -> None:
    """Store a new session; expired ones are pruned and at most `keep` (the newest) stay."""
    conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))
    conn.execute("INSERT INTO console_sessions(id_hash, actor, token_hash, created_at, last_seen, expires_at)"
                 " VALUES (?,?,?,?,?,?) ON CONFLICT(id_hash) DO UPDATE SET actor = excluded.actor,"
                 " token_hash = excluded.token_hash, created_at = excluded.created_at,"
                 " last_seen = excluded.last_seen, expires_at = excluded.expires_at",
                 (row.id_hash, row.actor, row.token_hash, row.created_at, row.last_seen, row.expires_at))
    conn.execute("DELETE FROM console_sessions WHERE id_hash NOT IN"
                 " (SELECT id_hash FROM console_sessions ORDER BY last_seen DESC LIMIT ?)", (keep,))


def get_console_session(conn: sqlite3.Connection, id_hash: str) -> ConsoleSessionRow | None:
    r = conn.execute("SELECT id_hash, actor, token_hash, created_at, last_seen, expires_at FROM console_sessions"
                     " WHERE id_hash = ?", (id_hash,)).fetchone()
    if r is None:
        return None
    return ConsoleSessionRow(str(r[0]), str(r[1]), str(r[2]), float(r[3]), float(r[4]), float(r[5]))


def touch_console_session(conn: sqlite3.Connection, id_hash: str, last_seen: float) -> None:
    conn.execute("UPDATE console_sessions SET last_seen = ? WHERE id_hash = ?", (last_seen, id_hash))


def delete_console_session(conn: sqlite3.Connection, id_hash: str) -> None:
    conn.execute("DELETE FROM console_sessions WHERE id_hash = ?", (id_hash,))
