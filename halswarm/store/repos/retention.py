"""Retention: deleting old events, audit rows, commands and expired idempotency entries, in bounded
steps, and giving the freed pages back (incremental vacuum)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from halswarm.store.dialect import is_pg, row_locator

# Each target: its table, the column compared with the cutoff, the comparison. The subquery walks the
# column's index from the oldest row, so a step costs its own rows, not a scan of the table.
TARGETS: dict[str, tuple[str, str, str]] = {
    "events": ("events", "ts", "<"),
    "audit": ("audit_log", "timestamp", "<"),
    "idempotency": ("command_idempotency", "expires_at", "<="),
    "commands": ("commands", "created_at", "<"),
    "approvals": ("approvals", "replied_at", "<"),  # answered or closed requests; pending ones have no time
}
# Rows per DELETE statement inside one step: the time budget and `yield_to` are checked between them,
# so one statement is the longest a queued event batch waits for (at 5M events, 100 rows touch ~800
# index entries over 8 indexes: a few ms on an idle machine).
CHUNK_ROWS = 100


def delete_step(conn: sqlite3.Connection, target: str, cutoff: float, max_rows: int, budget_sec: float,
                *, clock: Callable[[], float] = time.monotonic, yield_to: Callable[[], bool] | None = None) -> int:
    """Delete at most `max_rows` rows of `target` older than `cutoff`, oldest first, stopping early once
    `budget_sec` has passed or, after at least one statement, once `yield_to()` is true (other writer
    jobs are waiting); return how many went (callers repeat until it returns 0)."""
    table, column, op = TARGETS[target]
    loc = row_locator(conn)
    # PostgreSQL: `= ANY(ARRAY(...))` so the planner fetches the chosen rows by ctid (a TID scan).
    oldest = f"SELECT {loc} FROM {table} WHERE {column} {op} ? ORDER BY {column} LIMIT ?"
    sql = f"DELETE FROM {table} WHERE {loc} " + (f"= ANY(ARRAY({oldest}))" if is_pg(conn) else f"IN ({oldest})")
    start = clock()
    done = 0
    while done < max_rows:
        want = min(CHUNK_ROWS, max_rows - done)
        n = conn.execute(sql, (cutoff, want)).rowcount
        done += n
        if n < want or clock() - start >= budget_sec or (yield_to is not None and yield_to()):
            break
    return done


def purge_older_than(conn: sqlite3.Connection, events_before: float, audit_before: float, now: float
                     ) -> dict[str, int]:
    """Everything old in one transaction (tools and tests on a small file; the supervisor uses
    `delete_step` through its writer so that ingest commits between steps).

    nodes.last_seq keeps the per-node high-water mark, so deleting events never lowers the
    `resume_from_seq` an agent is told.
    """
    cutoffs = {"events": events_before, "audit": audit_before, "idempotency": now, "commands": audit_before,
               "approvals": audit_before}
    out = {}
    for target, cutoff in cutoffs.items():
        table, column, op = TARGETS[target]
        out[target] = conn.execute(f"DELETE FROM {table} WHERE {column} {op} ?", (cutoff,)).rowcount
    return out


def auto_vacuum_mode(conn: sqlite3.Connection) -> str:
    """'none', 'full' or 'incremental'; 'autovacuum' on PostgreSQL, whose own autovacuum makes the space
    of deleted rows reusable (nothing for retention to give back)."""
    if is_pg(conn):
        return "autovacuum"
    return {0: "none", 1: "full", 2: "incremental"}.get(int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]),
                                                        "none")


def free_pages(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def vacuum_step(conn: sqlite3.Connection, pages: int, budget_sec: float = 1.0,
                *, clock: Callable[[], float] = time.monotonic, yield_to: Callable[[], bool] | None = None) -> int:
    """Give back up to `pages` free pages at the end of the file (auto_vacuum=INCREMENTAL only),
    stopping early once `budget_sec` has passed or `yield_to()` is true (checked after every page: on a
    loaded disk 32 page moves once took 1.4 s at 5M events); return how many free pages remain."""
    # One page per statement: Python's sqlite3 steps a pragma that returns no rows only once, and
    # each step of incremental_vacuum frees one page, so `incremental_vacuum(N)` would free just one.
    start = clock()
    for _ in range(pages):
        conn.execute("PRAGMA incremental_vacuum(1)")
        if clock() - start >= budget_sec or (yield_to is not None and yield_to()):
            break
    return free_pages(conn)


def set_incremental_on_new(conn: sqlite3.Connection) -> bool:
    """On a file without any table yet, choose auto_vacuum=INCREMENTAL; the VACUUM that makes it take
    effect (the WAL header is already written) costs nothing on an empty file. An existing file keeps
    its mode: converting it rewrites the whole file (`convert_to_incremental`). True when set."""
    if conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None:
        return False
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("VACUUM")
    return auto_vacuum_mode(conn) == "incremental"


def convert_to_incremental(conn: sqlite3.Connection) -> bool:
    """Switch an existing file to auto_vacuum=INCREMENTAL: a full VACUUM (rewrites the file, needs as
    much free disk again and holds the database for the whole copy: offline only). True if changed."""
    if auto_vacuum_mode(conn) == "incremental":
        return False
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("VACUUM")
    return auto_vacuum_mode(conn) == "incremental"
