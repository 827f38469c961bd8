"""The leader lock of supervisors sharing one PostgreSQL: a session-level advisory lock on a connection
of its own.

The lock lives exactly as long as that database session: when the leader process dies (kill -9, a lost
machine) its connection ends, the server drops the lock, and the next `try_acquire` of another
supervisor succeeds. TCP keepalives on both sides (client: libpq `keepalives_*` and `tcp_user_timeout`;
server: `tcp_keepalives_*` set for this session) bound how long a vanished peer goes unnoticed, about
10 s each way, instead of the kernel's two hours. Calls block: run them off the event loop.
"""

from __future__ import annotations

from typing import Any

import psycopg

PG_LEADER_LOCK = 0x4841_4C4C  # "HALL"; the migration lock is 0x4841_4C5F
CONNECT_TIMEOUT_SEC = 5
_SERVER_OPTIONS = ("-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
                   " -c statement_timeout=5000 -c idle_in_transaction_session_timeout=0")
_HELD = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
         " AND granted AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = %s)")


class PgLeaderLock:
    """`try_acquire` (a follower's turn) and `held` (a leader's turn); both answer False or raise
    psycopg.Error/OSError when the server cannot be reached, and then the connection is dropped."""

    def __init__(self, conninfo: str, *, password: str | None = None, key: int = PG_LEADER_LOCK) -> None:
        self._conninfo = conninfo
        self._password = password
        self.key = key
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        kw: dict[str, Any] = {"autocommit": True, "application_name": "hal-supervisor-leader",
                              "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                              "keepalives_count": 3, "tcp_user_timeout": 10000, "options": _SERVER_OPTIONS}
        if "connect_timeout" not in self._conninfo:
            kw["connect_timeout"] = CONNECT_TIMEOUT_SEC
        if self._password:
            kw["password"] = self._password
        return psycopg.connect(self._conninfo, **kw)

    def try_acquire(self) -> bool:
        """True when this session now holds the lock; False when another session holds it."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self.close()
                self._conn = self._connect()
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except (psycopg.Error, OSError):
            self.close()
            raise
        return bool(row and row[0])

    def held(self) -> bool:
        """Whether the lock is still ours: the session answers and still holds it."""
        if self._conn is None or self._conn.closed:
            return False
        try:
            row = self._conn.execute(_HELD, (self.key,)).fetchone()
        except (psycopg.Error, OSError):
            self.close()
            raise
        if not (row and row[0]):
            self.close()
            return False
        return True

    def close(self) -> None:
        """Drop the session (and with it the lock, if held)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
