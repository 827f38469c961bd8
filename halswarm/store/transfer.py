"""Copying a SQLite database into an empty PostgreSQL one, every row, and proving it (issue 21).

The copy reads one snapshot of the SQLite file (a read transaction over every table), writes every table
with COPY inside one PostgreSQL transaction (all or nothing), moves the id sequences to where SQLite's
AUTOINCREMENT stood (an id is never handed out twice, also after the move), and then compares, per
table, the row count and a content hash computed the same way on both sides. Columns are those both
schemas store (generated columns are computed again by the target).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from halswarm.store.db import DatabaseError
from halswarm.store.migrations import bundled_migrations, migrate

# Parents before children (sessions reference nodes); every other table after them.
FIRST = ("nodes", "sessions")
# PostgreSQL sequences behind SQLite's AUTOINCREMENT ids: (table, column).
SERIALS = (("events", "id"), ("audit_log", "id"), ("dependency_starts", "id"), ("env_manifests", "version"),
           ("env_runs", "id"))
_HASH_MOD = 1 << 256


@dataclass(frozen=True)
class TableCheck:
    table: str
    source_rows: int
    target_rows: int
    source_hash: str
    target_hash: str

    @property
    def equal(self) -> bool:
        return self.source_rows == self.target_rows and self.source_hash == self.target_hash


def _value(v: Any) -> str:
    if v is None:
        return "N"
    if isinstance(v, float):
        return "f" + repr(v)
    if isinstance(v, int):
        return "i" + str(v)
    if isinstance(v, bytes):
        return "b" + v.hex()
    return "s" + str(v)


def content_hash(rows: Iterable[Sequence[Any]]) -> tuple[int, str]:
    """(row count, hash of the rows as a multiset): the sum of each row's sha256, so the order in which an
    engine returns the rows (collations differ) does not matter, and no sort is needed."""
    total = 0
    n = 0
    for row in rows:
        digest = hashlib.sha256("\x1f".join(_value(v) for v in row).encode("utf-8", "surrogatepass")).digest()
        total = (total + int.from_bytes(digest, "big")) % _HASH_MOD
        n += 1
    return n, f"{total:064x}"


def sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    names = [str(r[0]) for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        " AND name != 'schema_migrations' ORDER BY name")]
    return [t for t in FIRST if t in names] + [t for t in names if t not in FIRST]


def sqlite_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """Stored columns (PRAGMA table_info leaves generated ones out)."""
    return [str(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")')]


def pg_columns(conn: Any, table: str) -> list[str]:
    """Stored columns (generated ones are computed by PostgreSQL itself)."""
    return [str(r[0]) for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = ? AND is_generated = 'NEVER' ORDER BY ordinal_position", (table,))]


def _check_source(src: sqlite3.Connection) -> None:
    has = src.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'").fetchone()
    applied = sorted(str(r[0]) for r in src.execute("SELECT version FROM schema_migrations")) if has else []
    want = sorted(m.version for m in bundled_migrations())
    if applied != want:
        raise DatabaseError("the SQLite database is not at this version's schema (start this hal-supervisor on it "
                            "once, or run the matching halctl): its migrations are "
                            f"{', '.join(applied) or 'none'}")


def _check_target_empty(dst: Any, tables: Iterable[str]) -> None:
    for t in tables:
        if dst.execute(f'SELECT EXISTS (SELECT 1 FROM "{t}")').fetchone()[0]:
            raise DatabaseError(f"the PostgreSQL database is not empty (table {t} has rows); "
                                "copy into a new database")


def copy_sqlite_to_pg(src: sqlite3.Connection, dst: Any, *, progress: Callable[[str, int], None] | None = None
                      ) -> list[TableCheck]:
    """Copy every table of `src` (SQLite, read-only is enough) into `dst` (an empty or new PostgreSQL
    database, migrated here), then verify; DatabaseError when the copy cannot be made or differs."""
    _check_source(src)
    migrate(dst)
    src.execute("BEGIN")  # one snapshot of every table, even if something still writes the file
    try:
        tables = sqlite_tables(src)
        target_tables = set(_pg_table_names(dst))
        missing = [t for t in tables if t not in target_tables]
        if missing:
            raise DatabaseError(f"the PostgreSQL schema has no table {', '.join(missing)}")
        _check_target_empty(dst, tables)
        plan = {t: _common_columns(src, dst, t) for t in tables}
        raw = dst.raw
        try:
            with raw.transaction():
                for t in tables:
                    cols = plan[t]
                    n = _copy_table(src, raw, t, cols)
                    if progress is not None:
                        progress(t, n)
                _move_sequences(src, dst)
        except DatabaseError:
            raise
        except Exception as exc:
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DatabaseError(f"copy failed, nothing was written: {line}") from None
        checks = [verify_table(src, dst, t, plan[t]) for t in tables]
    finally:
        src.execute("ROLLBACK")
    return checks


def _pg_table_names(dst: Any) -> list[str]:
    return [str(r[0]) for r in dst.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]


def _common_columns(src: sqlite3.Connection, dst: Any, table: str) -> list[str]:
    theirs = set(pg_columns(dst, table))
    cols = [c for c in sqlite_columns(src, table) if c in theirs]
    extra = [c for c in sqlite_columns(src, table) if c not in theirs]
    if extra:
        raise DatabaseError(f"table {table}: the PostgreSQL schema has no column {', '.join(extra)}")
    return cols


def _copy_table(src: sqlite3.Connection, raw: Any, table: str, cols: list[str]) -> int:
    names = ", ".join(f'"{c}"' for c in cols)
    n = 0
    # rowid order: the order rows were written, which PostgreSQL-only columns such as
    # remediations.received_seq (SQLite's rowid order of arrival) take from their sequence.
    cursor = src.execute(f'SELECT {names} FROM "{table}" ORDER BY rowid')
    with raw.cursor() as cur, cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as cp:
        for row in cursor:
            cp.write_row(tuple(row))
            n += 1
    return n


def _move_sequences(src: sqlite3.Connection, dst: Any) -> None:
    """Each BIGSERIAL continues after the last id SQLite handed out (sqlite_sequence), not after MAX(id):
    retention may have deleted the newest rows, and an id must never come back."""
    handed = {str(r[0]): int(r[1]) for r in src.execute("SELECT name, seq FROM sqlite_sequence")}
    for table, col in SERIALS:
        top = dst.execute(f'SELECT COALESCE(MAX("{col}"), 0) FROM "{table}"').fetchone()[0]
        last = max(int(top), handed.get(table, 0))
        if last > 0:
            dst.execute("SELECT setval(pg_get_serial_sequence(?, ?), ?)", (table, col, last))


def verify_table(src: sqlite3.Connection, dst: Any, table: str, cols: list[str]) -> TableCheck:
    names = ", ".join(f'"{c}"' for c in cols)
    sn, sh = content_hash(src.execute(f'SELECT {names} FROM "{table}"'))
    tn, th = content_hash(dst.execute(f'SELECT {names} FROM "{table}"'))
    return TableCheck(table, sn, tn, sh, th)
