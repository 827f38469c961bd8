"""PostgreSQL behind the repos: a thin connection with the shape of the `sqlite3.Connection` they use.

The repos keep one SQL text for both engines, written with `?` placeholders (the SQLite form); this
connection rewrites `?` to psycopg's `%s` once per statement text (cached), answers rows that index by
position and by column name like `sqlite3.Row`, counts `total_changes`, and raises the DB-API error
classes of the `sqlite3` module, so every `except sqlite3.Error` of the supervisor holds on both
engines. What the two dialects really write differently is asked explicitly through
`halswarm.store.dialect` at the few places that need it (not rewritten here behind the repos' back).

psycopg runs in autocommit mode: like SQLite with `isolation_level=None`, the writer's explicit
BEGIN/SAVEPOINT/COMMIT are the transactions, and a reader statement is a transaction of its own.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg.rows
from psycopg import errors as pg_errors

DIALECT = "postgresql"
CONNECT_TIMEOUT_SEC = 10


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """`?` placeholders to `%s` and a literal `%` to `%%`, leaving quoted text and identifiers alone."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class Row(tuple):  # type: ignore[type-arg]
    """A result row readable as `row[0]` and `row["column"]`, like `sqlite3.Row`."""

    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                key = self._index[key]
            except KeyError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@functools.lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"_index": {n: i for i, n in enumerate(names)}})


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Any]:
    desc = cursor.description
    if desc is None:
        return tuple
    cls = _row_class(tuple(d.name for d in desc))
    return cls


_ERROR_MAP: tuple[tuple[type[Exception], type[sqlite3.Error]], ...] = (
    (psycopg.IntegrityError, sqlite3.IntegrityError),
    (psycopg.DataError, sqlite3.DataError),
    (psycopg.ProgrammingError, sqlite3.OperationalError),  # SQLite says "no such table" as OperationalError
    (psycopg.OperationalError, sqlite3.OperationalError),
    (psycopg.InterfaceError, sqlite3.InterfaceError),
    (psycopg.NotSupportedError, sqlite3.NotSupportedError),
    (psycopg.InternalError, sqlite3.InternalError),
)


def as_sqlite_error(exc: psycopg.Error) -> sqlite3.Error:
    """The sqlite3 class of the same DB-API kind, with PostgreSQL's first message line."""
    cls: type[sqlite3.Error] = sqlite3.DatabaseError
    for src, dst in _ERROR_MAP:
        if isinstance(exc, src):
            cls = dst
            break
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    err = cls(f"postgresql: {line}")
    err.sqlstate = getattr(exc, "sqlstate", None)  # type: ignore[attr-defined]
    return err


_DML = ("INSERT", "UPDATE", "DELETE")


class Cursor:
    """The psycopg cursor of one statement, its errors mapped."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def description(self) -> Any:
        return self._cur.description

    def fetchone(self) -> Any:
        try:
            return self._cur.fetchone()
        except psycopg.Error as exc:
            raise as_sqlite_error(exc) from exc

    def fetchall(self) -> list[Any]:
        try:
            return self._cur.fetchall()
        except psycopg.Error as exc:
            raise as_sqlite_error(exc) from exc

    def fetchmany(self, size: int = 1) -> list[Any]:
        return self._cur.fetchmany(size)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def close(self) -> None:
        self._cur.close()


# Transaction bookkeeping that returns nothing and, in a healthy transaction, cannot fail: held back and
# sent in one pipeline with the next statement that returns something, instead of a round trip of its own
# (the writer's BEGIN, SAVEPOINT job, RELEASE job around every job were most of its round trips; on a
# busy machine each one waits to be scheduled twice). COMMIT, ROLLBACK and ROLLBACK TO are never held.
_DEFERRABLE = re.compile(r"\s*(BEGIN|SAVEPOINT\s+\w+|RELEASE(\s+SAVEPOINT)?\s+\w+)\s*;?\s*", re.IGNORECASE)


class _Held:
    """What `execute` answers for a statement held back: no rows, as sqlite3 answers SAVEPOINT."""

    rowcount = -1
    description = None

    def fetchone(self) -> Any:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def fetchmany(self, size: int = 1) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def close(self) -> None:
        pass


class PgConnection:
    """The `sqlite3.Connection` subset the store uses, over one psycopg connection (one thread at a time)."""

    dialect = DIALECT

    def __init__(self, conn: psycopg.Connection[Any], reopen: Callable[[], psycopg.Connection[Any]] | None = None
                 ) -> None:
        self._conn = conn
        self._reopen = reopen
        self._held: list[str] = []
        self.total_changes = 0

    def reconnect_if_broken(self) -> bool:
        """After a failed batch: open a new connection if the server connection was lost (a restart of
        PostgreSQL, a failover of its address). True when a new one is in place."""
        if (not self._conn.closed and not self._conn.broken) or self._reopen is None:
            return False
        self._held = []
        try:
            self._conn = self._reopen()
        except psycopg.Error:
            return False  # still down: the next batch fails too (and nothing is acked) and tries again
        return True

    @property
    def in_transaction(self) -> bool:
        """Inside BEGIN ... COMMIT (as `sqlite3.Connection.in_transaction`), a BEGIN held back included."""
        return bool(self._held) or self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection itself (COPY, LISTEN, pg-only tooling), statements held back sent first."""
        self.flush()
        return self._conn

    def flush(self) -> None:
        """Send the statements held back now (one round trip)."""
        if self._held:
            held, self._held = self._held, []
            try:
                self._conn.execute("; ".join(held))  # no parameters: the simple protocol, several at once
            except psycopg.Error as exc:
                raise as_sqlite_error(exc) from exc

    def _run(self, sql: str, params: tuple[Any, ...]) -> psycopg.Cursor[Any]:
        """One statement, after those held back, all in one round trip (a pipeline)."""
        cur = self._conn.cursor()  # raises too once the server closed the connection
        if not self._held:
            cur.execute(sql, params)
            return cur
        held, self._held = self._held, []
        with self._conn.pipeline():
            for stmt in held:
                self._conn.execute(stmt)
            cur.execute(sql, params)
        return cur

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Cursor | _Held:
        if not params and _DEFERRABLE.fullmatch(sql):
            self._held.append(sql)
            return _Held()
        try:
            cur = self._run(translate(sql), tuple(params) if params is not None else ())
        except psycopg.Error as exc:
            raise as_sqlite_error(exc) from exc
        if sql.lstrip()[:6].upper() in _DML and cur.rowcount > 0:
            self.total_changes += cur.rowcount
        return Cursor(cur)

    def execute_native(self, sql: str, params: Sequence[Any]) -> Cursor:
        """A PostgreSQL-only statement in psycopg's own placeholders (`%b`: a parameter sent in binary,
        e.g. a large array that the text format would escape element by element)."""
        try:
            cur = self._run(sql, tuple(params))
        except psycopg.Error as exc:
            raise as_sqlite_error(exc) from exc
        if sql.lstrip()[:6].upper() in _DML and cur.rowcount > 0:
            self.total_changes += cur.rowcount
        return Cursor(cur)

    def copy_rows(self, table: str, columns: Sequence[str], types: Sequence[str],
                  rows: Iterable[Sequence[Any]]) -> int:
        """`COPY table (columns) FROM STDIN` of `rows`, in their order, inside the current transaction, in
        the binary format (`types`: the columns' PostgreSQL types): how many went in. Nothing is skipped:
        a row that breaks a constraint fails the whole COPY (the caller's savepoint decides what follows).
        `table`, `columns` and `types` are the caller's own identifiers, never data."""
        self.flush()  # COPY cannot share a pipeline
        try:
            with self._conn.cursor() as cur:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(list(types))
                    for row in rows:
                        cp.write_row(row)
                n = max(0, cur.rowcount)
        except psycopg.Error as exc:
            raise as_sqlite_error(exc) from exc
        self.total_changes += n
        return n

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> Cursor:
        rows = [tuple(p) for p in seq]
        self.flush()
        try:
            cur = self._conn.cursor()
        except psycopg.Error as exc:
            raise as_sqlite_error(exc) from exc
        if rows:
            try:
                cur.executemany(translate(sql), rows)
            except psycopg.Error as exc:
                raise as_sqlite_error(exc) from exc
            if sql.lstrip()[:6].upper() in _DML and cur.rowcount > 0:
                self.total_changes += cur.rowcount
        return Cursor(cur)

    def commit(self) -> None:
        """Nothing to do: autocommit, as SQLite with isolation_level=None (explicit BEGIN/COMMIT only)."""

    def interrupt(self) -> None:
        self._conn.cancel_safe()

    def close(self) -> None:
        self._held = []
        self._conn.close()

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)


def _kwargs(readonly: bool, password: str | None, application_name: str) -> dict[str, Any]:
    kw: dict[str, Any] = {"autocommit": True, "row_factory": _row_factory, "application_name": application_name}
    if readonly:
        kw["options"] = "-c default_transaction_read_only=on"
    if password:
        kw["password"] = password
    return kw


def connect(conninfo: str, *, readonly: bool = False, password: str | None = None,
            application_name: str = "hal-supervisor") -> PgConnection:
    """One autocommit connection; a reader's refuses writes (`default_transaction_read_only`).
    A `connect_timeout` of the URL wins over the default here."""
    kw = _kwargs(readonly, password, application_name)
    if "connect_timeout" not in conninfo:
        kw["connect_timeout"] = CONNECT_TIMEOUT_SEC

    def reopen() -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo, **kw)

    try:
        conn = reopen()
    except psycopg.Error as exc:
        raise as_sqlite_error(exc) from exc
    return PgConnection(conn, reopen)


class PgReader:
    """The `Reader` of PostgreSQL: read-only queries on a psycopg pool, run off the event loop."""

    def __init__(self, conninfo: str, *, password: str | None = None, max_size: int = 8) -> None:
        from psycopg_pool import ConnectionPool

        kw = _kwargs(True, password, "hal-supervisor-reader")
        if "connect_timeout" not in conninfo:
            kw["connect_timeout"] = CONNECT_TIMEOUT_SEC
        self._pool: ConnectionPool[Any] = ConnectionPool(conninfo, min_size=1, max_size=max_size, kwargs=kw,
                                                         open=False, name="hal-reader", timeout=30.0)
        self._pool.open(wait=False)

    def run_sync(self, fn: Callable[[Any], Any]) -> Any:
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                return fn(PgConnection(conn))
        except PoolTimeout as exc:
            raise sqlite3.OperationalError(f"postgresql: no reader connection: {exc}") from exc
        except psycopg.Error as exc:
            raise as_sqlite_error(exc) from exc

    async def run(self, fn: Callable[[Any], Any]) -> Any:
        import asyncio

        return await asyncio.to_thread(self.run_sync, fn)

    def close(self) -> None:
        self._pool.close()


def is_undefined_table(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == pg_errors.UndefinedTable.sqlstate
