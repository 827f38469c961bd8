# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Read-only facts about a supervisor database for the data remediations: size, integrity, row
counts, rows older than a cutoff, timed queries of the events page, and the newest backup that
passes verification. Nothing here writes to the database.
"""

from __future__ import annotations

import os
import sqlite3
import time

from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_backup import (
    list_backups,
    verify_backup,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (
    DAY_SECONDS,
    DataSafetyError,
    _iso,
    _quote_ident,
    _sqlite_error,
    check_sqlite_file,
    connect_ro,
    epoch_column,
    integrity_problems,
    row_counts,
    tidy_wal_files,
    wal_files,
)

# The page the supervisor's API serves by default (GET /api/v1/events: total + first 100, oldest first).
EVENTS_PAGE_QUERIES = (
    "SELECT COUNT(*) FROM events",
    "SELECT * FROM events ORDER BY ts ASC, id ASC LIMIT 100",
)


def _median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def time_query(conn, sql, args=(), samples=3):
    """Median wall time (ms) of running `sql` and fetching every row, over `samples` runs."""
    times = []
    for _run in range(max(1, int(samples))):
        started = time.perf_counter()
        conn.execute(sql, args).fetchall()
        times.append((time.perf_counter() - started) * 1000.0)
    return round(_median(times), 3)


def newest_valid_backup(directory, prefix=None, quick=False, limit=10):
    """The newest backup in `directory` that passes verify_backup (sha256 sidecar + integrity).

    Returns (path or None, checked) where checked lists {path, ok, problems} newest first; stops at
    the first valid one and after `limit` files.
    """
    checked = []
    for entry in list_backups(directory, prefix)[:max(1, int(limit))]:
        res = verify_backup(entry["path"], require_checksum=True, quick=quick)
        checked.append({"path": entry["path"], "created": entry["created"], "ok": res["ok"],
                        "problems": res["problems"]})
        if res["ok"]:
            return entry["path"], checked
    return None, checked


def database_facts(path, quick=False, table="events", column="timestamp", older_than_days=None, queries=(),
                   samples=3, now=None):
    """Read-only facts about the database at `path`; never raises for a damaged or missing file.

    Returns exists, size, wal_size, integrity ("ok" or the first complaints joined), problems,
    tables {name: rows or None}, old_rows (rows of `table` whose `column` is older than
    `older_than_days`, when given), queries [{sql, ms}] (median of `samples` runs each), query_ms
    (their sum) and error (why something could not be read).
    """
    path = os.path.abspath(path)
    out = {"path": path, "exists": os.path.exists(path), "size": None, "wal_size": None, "integrity": None,
           "problems": [], "tables": None, "old_rows": None, "cutoff": None, "queries": [], "query_ms": None,
           "error": None}
    if not out["exists"]:
        out["error"] = f"{path}: no such file"
        return out
    out["size"] = os.path.getsize(path)
    if os.path.exists(path + "-wal"):
        out["wal_size"] = os.path.getsize(path + "-wal")
    try:
        check_sqlite_file(path)
    except DataSafetyError as exc:
        out["integrity"] = exc.message
        out["problems"] = [exc.message]
        out["error"] = exc.message
        return out
    existed = wal_files(path)
    try:
        conn = connect_ro(path)
    except sqlite3.Error as exc:
        tidy_wal_files(path, existed)
        out["error"] = _sqlite_error(exc, path, "open").message
        out["integrity"] = out["error"]
        out["problems"] = [out["error"]]
        return out
    try:
        problems = integrity_problems(conn, quick=quick)
        out["problems"] = problems
        out["integrity"] = "ok" if not problems else "; ".join(problems[:3])
        try:
            out["tables"] = row_counts(conn, tolerant=True)
        except sqlite3.DatabaseError as exc:
            out["error"] = f"cannot list tables: {exc}"
        if older_than_days is not None and out["tables"] and table in out["tables"]:
            cutoff = (time.time() if now is None else now) - float(older_than_days) * DAY_SECONDS
            out["cutoff"] = _iso(cutoff)
            try:
                column = epoch_column(conn, table, column)
                out["old_rows"] = conn.execute(f"SELECT count(*) FROM {_quote_ident(table)} "
                                               f"WHERE {_quote_ident(column)} < ?", (cutoff,)).fetchone()[0]
            except sqlite3.DatabaseError as exc:
                out["error"] = f"cannot count old rows of {table}: {exc}"
        if queries and not problems:
            total = 0.0
            for sql in queries:
                try:
                    ms = time_query(conn, sql, samples=samples)
                except sqlite3.Error as exc:
                    out["queries"].append({"sql": sql, "ms": None, "error": str(exc)})
                    continue
                out["queries"].append({"sql": sql, "ms": ms})
                total += ms
            out["query_ms"] = round(total, 3)
    finally:
        conn.close()
        tidy_wal_files(path, existed)
    return out
