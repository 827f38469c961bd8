# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""The data remediations that change a database: rows of a backup missing from the live database
(by every key), merging them back in (INSERT OR IGNORE), and moving old rows into an archive
database.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time

from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_backup import (
    verify_backup,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (
    BUSY_TIMEOUT_MS,
    DAY_SECONDS,
    DIR_MODE,
    FILE_MODE,
    DataSafetyError,
    _columns,
    _has_column,
    _iso,
    _quote_ident,
    _sqlite_error,
    _uri,
    check_sqlite_file,
    connect_ro,
    drop_clean_marker,
    ensure_not_in_use,
    epoch_column,
    integrity_problems,
    os_error,
    tidy_wal_files,
    user_tables,
    wal_files,
)


def table_keys(conn, table, schema="main"):
    """The column sets that identify a row of `table`: its primary key (or rowid) and each UNIQUE index."""
    info = conn.execute(f"PRAGMA {schema}.table_info({_quote_ident(table)})").fetchall()
    pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    keys = [pk or ["_rowid_"]]
    for idx in conn.execute(f"PRAGMA {schema}.index_list({_quote_ident(table)})").fetchall():
        if not idx[2]:  # not unique
            continue
        cols = [r[2] for r in conn.execute(f"PRAGMA {schema}.index_info({_quote_ident(idx[1])})").fetchall()]
        if cols and None not in cols and cols not in keys:
            keys.append(cols)
    return keys


def _absent_clause(keys, live="main", alias="b"):
    """SQL: the row `alias` matches no row of `live` on any key (what INSERT OR IGNORE would insert)."""
    parts = []
    for key in keys:
        match = " AND ".join(f"l.{_quote_ident(c)} = {alias}.{_quote_ident(c)}" for c in key)
        parts.append(f"NOT EXISTS (SELECT 1 FROM {live}.{{table}} AS l WHERE {match})")
    return " AND ".join(parts)


def _open_pair(db, backup, write=False):
    """A connection to `db` (read-only unless `write`) with `backup` attached read-only as `bk`."""
    if write:
        drop_clean_marker(db)
        conn = sqlite3.connect(db, isolation_level=None, uri=True, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    else:
        conn = sqlite3.connect(_uri(db, mode="ro"), uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("ATTACH DATABASE ? AS bk", (_uri(backup, mode="ro"),))
    return conn


def _merge_tables(conn, tables):
    live = set(user_tables(conn))
    theirs = {r[0] for r in conn.execute(
        "SELECT name FROM bk.sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'").fetchall()}
    chosen = sorted(live & theirs) if not tables else list(tables)
    return [t for t in chosen if t in live and t in theirs and t != "schema_migrations"]


def _check_exclusions(exclude_older_than):
    """{table: (column, cutoff)} from {table: [column, cutoff_epoch_seconds]} (None: {})."""
    out = {}
    for table, spec in (exclude_older_than or {}).items():
        try:
            column, cutoff = spec
            cutoff = float(cutoff)
        except (TypeError, ValueError):
            raise DataSafetyError(f"exclude_older_than[{table}] must be [column, cutoff epoch seconds], "
                                  f"not {spec!r}", "invalid") from None
        if not isinstance(column, str) or not column:
            raise DataSafetyError(f"exclude_older_than[{table}]: the column must be a name", "invalid")
        out[str(table)] = (column, cutoff)
    return out


def _attach_archive(conn, archive):
    """Attach `archive` read-only as `arc` (a no-op without one)."""
    if archive:
        conn.execute("ATTACH DATABASE ? AS arc", (_uri(archive, mode="ro"),))


def _excluded_clause(conn, table, exclude, archive, alias="b"):
    """(SQL, params): AND-terms leaving out the rows of `alias` that were removed on purpose, i.e. whose
    exclusion column is older than its cutoff (retention; NULL is never old, as in its DELETE ... WHERE
    col < cutoff) or whose key is found in the archive's table of the same name (archiving)."""
    sql, params = "", []
    if table in exclude:
        column, cutoff = exclude[table]
        column = epoch_column(conn, table, column, "bk")
        if not _has_column(conn, table, column, "bk"):
            raise DataSafetyError(f"exclude_older_than: the backup's table {table} has no column {column}",
                                  "invalid")
        qc = _quote_ident(column)
        sql += f" AND ({alias}.{qc} IS NULL OR NOT ({alias}.{qc} < ?))"
        params.append(cutoff)
    if archive and conn.execute("SELECT 1 FROM arc.sqlite_master WHERE type='table' AND name=?",
                                (table,)).fetchone():
        theirs = set(_columns(conn, table, "arc"))
        keys = [k for k in table_keys(conn, table, "bk") if k != ["_rowid_"] and set(k) <= theirs]
        if keys:
            match = " OR ".join("(" + " AND ".join(f"a.{_quote_ident(c)} = {alias}.{_quote_ident(c)}" for c in key)
                                + ")" for key in keys)
            sql += f" AND NOT EXISTS (SELECT 1 FROM arc.{_quote_ident(table)} AS a WHERE {match})"
    return sql, params


def _missing_in(conn, tables, exclude=None, archive=None):
    exclude = _check_exclusions(exclude)
    out = {}
    for table in tables:
        clause = _absent_clause(table_keys(conn, table)).replace("{table}", _quote_ident(table))
        extra, params = _excluded_clause(conn, table, exclude, archive)
        out[table] = conn.execute(f"SELECT count(*) FROM bk.{_quote_ident(table)} AS b WHERE {clause}{extra}",
                                  params).fetchone()[0]
    return out


def missing_rows(db, backup, tables=None, exclude_older_than=None, archive=None):
    """{table: rows of `backup` that match no row of `db` on the primary key or any UNIQUE key}.

    Read-only on both files. `tables` defaults to every table they share (schema_migrations aside).
    Rows removed on purpose are not missing: with `exclude_older_than` ({table: [column, cutoff]},
    cutoff in epoch seconds) those whose column is older than the cutoff (what retention deletes),
    with `archive` (a side database, attached read-only) those whose key its same-named table holds.
    """
    exclude = _check_exclusions(exclude_older_than)
    paths = (db, backup, archive) if archive else (db, backup)
    for path in paths:
        check_sqlite_file(path)
    existed = {p: wal_files(p) for p in paths}
    try:
        conn = _open_pair(db, backup)
        _attach_archive(conn, archive)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, db, "open") from None
    try:
        return _missing_in(conn, _merge_tables(conn, tables), exclude, archive)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, db, "compare with " + backup) from None
    finally:
        conn.close()
        for path, was in existed.items():
            tidy_wal_files(path, was)


def _match_owner(paths, like):
    """Give files created by a root process (e.g. -wal/-shm, an archive) the owner of `like`."""
    if os.geteuid() != 0:
        return
    try:
        ref = os.stat(like)
    except OSError:
        return
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if (st.st_uid, st.st_gid) != (ref.st_uid, ref.st_gid):
                os.chown(path, ref.st_uid, ref.st_gid)


def _db_side_files(db):
    return [db + s for s in ("-wal", "-shm", "-journal") if os.path.exists(db + s)]


def merge_from_backup(backup, db, tables=None, check_mode=False, require_checksum=True, online=False,
                      exclude_older_than=None, archive=None):
    """Copy the rows of `backup` that `db` lacks back into `db` (INSERT OR IGNORE by every key: rows
    present in `db`, newer ones included, are never overwritten). One transaction.

    Rows removed on purpose are not copied back (see missing_rows): `exclude_older_than`
    ({table: [column, cutoff epoch seconds]}, retention) and `archive` (side database, read-only).

    `backup` is verified first (sha256 sidecar + integrity). Refuses a database held open by
    another process unless `online`. Returns missing (before), inserted, missing_after, skipped
    (rows whose columns do not fit), tables, quick_check, archive, exclude_older_than.
    """
    backup = os.path.abspath(backup)
    db = os.path.abspath(db)
    verification = verify_backup(backup, require_checksum=require_checksum)
    if not verification["ok"]:
        raise DataSafetyError(f"refusing to merge from {backup}: {verification['problems'][0]}",
                              verification["kind"] or "corrupt", {"verification": verification})
    check_sqlite_file(db)
    archive = os.path.abspath(archive) if archive else None
    exclude = _check_exclusions(exclude_older_than)
    if not online and not check_mode:
        ensure_not_in_use(db)
    before = missing_rows(db, backup, tables, exclude, archive)
    result = {"db": db, "backup": backup, "missing": before, "inserted": {}, "skipped": {},
              "missing_after": dict(before), "tables": sorted(before), "quick_check": None,
              "changed": any(before.values()), "archive": archive,
              "exclude_older_than": {t: [c, v] for t, (c, v) in sorted(exclude.items())}}
    if check_mode or not result["changed"]:
        return result
    existed = set(_db_side_files(db))
    arc_existed = wal_files(archive) if archive else None
    try:
        conn = _open_pair(db, backup, write=True)
        _attach_archive(conn, archive)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, db, "open") from None
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in result["tables"]:
                if not before[table]:
                    continue
                live_cols = conn.execute(f"PRAGMA main.table_info({_quote_ident(table)})").fetchall()
                theirs = set(_columns(conn, table, "bk"))
                cols = [r[1] for r in live_cols if r[1] in theirs]
                lacking = [r[1] for r in live_cols if r[1] not in theirs and r[3] and r[4] is None and not r[5]]
                if lacking:
                    result["skipped"][table] = before[table]
                    continue
                names = ", ".join(_quote_ident(c) for c in cols)
                clause = _absent_clause(table_keys(conn, table)).replace("{table}", _quote_ident(table))
                extra, params = _excluded_clause(conn, table, exclude, archive)
                cur = conn.execute(f"INSERT OR IGNORE INTO main.{_quote_ident(table)} ({names}) "
                                   f"SELECT {names} FROM bk.{_quote_ident(table)} AS b WHERE {clause}{extra}",
                                   params)
                result["inserted"][table] = cur.rowcount
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        result["missing_after"] = _missing_in(conn, result["tables"], exclude, archive)
        problems = integrity_problems(conn, quick=True)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, db, "merge from " + backup) from None
    finally:
        conn.close()
        _match_owner([p for p in _db_side_files(db) if p not in existed], db)
        if archive:
            tidy_wal_files(archive, arc_existed)
    result["quick_check"] = problems if problems else "ok"
    if problems:
        raise DataSafetyError(f"{db}: fails PRAGMA quick_check after the merge: {problems[0]}", "corrupt", result)
    return result


def _create_like(conn, table, schema):
    sql = conn.execute("SELECT sql FROM main.sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
    if not sql or not sql[0]:
        raise DataSafetyError(f"no table {table} in the database", "invalid")
    body = re.sub(r"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\"[^\"]+\"|\S+)\s*",
                  f"CREATE TABLE IF NOT EXISTS {schema}.{_quote_ident(table)} ", sql[0], count=1, flags=re.I)
    conn.execute(body)


def _in_own_transaction(conn, sql, params):
    """Run one statement in its own IMMEDIATE transaction (rolled back on any error); its rowcount."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        count = conn.execute(sql, params).rowcount
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return count


DELETE_BATCH_ROWS = 2000  # rows per delete transaction of archive_rows
BATCH_PAUSE_SEC = 0.005  # between two batches: another writer (the supervisor's) gets the lock first
VACUUM_BATCH_PAGES = 256  # free pages given back per transaction (auto_vacuum=INCREMENTAL files)


def _delete_archived(conn, qt, qc, match, cutoff, batch=None):
    """Delete the rows older than `cutoff` that the archive holds, at most `batch` rows per
    transaction, until none is left; the number deleted."""
    batch = DELETE_BATCH_ROWS if batch is None else batch
    found = f"m.{qc} < ? AND EXISTS (SELECT 1 FROM arc.{qt} AS a WHERE {match})"
    try:
        conn.execute(f"SELECT rowid FROM main.{qt} LIMIT 0")
    except sqlite3.OperationalError:  # a WITHOUT ROWID table: one statement, as before
        return _in_own_transaction(conn, f"DELETE FROM main.{qt} AS m WHERE {found}", (cutoff,))
    sql = f"DELETE FROM main.{qt} WHERE rowid IN (SELECT m.rowid FROM main.{qt} AS m WHERE {found} LIMIT ?)"
    total = 0
    while True:
        n = _in_own_transaction(conn, sql, (cutoff, batch))
        total += n
        if n < batch:
            return total
        time.sleep(BATCH_PAUSE_SEC)


def _give_back_pages(conn):
    """On an auto_vacuum=INCREMENTAL file, return the freed pages to the file system in small
    transactions (one page per statement: Python steps a row-less pragma once); pages given back."""
    if conn.execute("PRAGMA main.auto_vacuum").fetchone()[0] != 2:
        return 0
    before = left = conn.execute("PRAGMA main.freelist_count").fetchone()[0]
    while left:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for _step in range(min(left, VACUUM_BATCH_PAGES)):
                conn.execute("PRAGMA main.incremental_vacuum(1)")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        now_left = conn.execute("PRAGMA main.freelist_count").fetchone()[0]
        if now_left >= left:
            break
        left = now_left
        time.sleep(BATCH_PAUSE_SEC)
    return before - left


def archive_rows(db, archive, table="events", column="timestamp", older_than_days=30, now=None,
                 vacuum=False, analyze=False, check_mode=False, online=False):
    """Move the rows of `table` whose `column` (epoch seconds) is older than `older_than_days` into
    the side database `archive`, then optionally VACUUM / ANALYZE `db`.

    Never a blind DELETE: the rows are first copied (INSERT OR IGNORE by key) and committed in the
    archive, then only rows whose key is found in the archive are deleted from `db`. A crash between
    the two leaves rows in both places, never in neither; running it again finishes the move.
    The delete goes in transactions of DELETE_BATCH_ROWS rows, so with `online` the supervisor's
    writer commits (and acks) between two of them; on an auto_vacuum=INCREMENTAL file the freed
    pages are then given back in small transactions too (pages_freed).
    Refuses a database held open by another process unless `online`. Returns old_rows, archived,
    deleted, pages_freed, archive_rows, size_before/size_after, vacuumed, analyzed, quick_check, integrity of
    the archive, cutoff.
    """
    db = os.path.abspath(db)
    archive = os.path.abspath(archive)
    if archive == db:
        raise DataSafetyError("the archive must be another file than the database", "invalid")
    if older_than_days < 0:
        raise DataSafetyError("older_than_days must be >= 0", "invalid")
    check_sqlite_file(db)
    if not online and not check_mode:
        ensure_not_in_use(db)
    now = time.time() if now is None else now
    cutoff = now - older_than_days * DAY_SECONDS
    result = {"db": db, "archive": archive, "table": table, "column": column, "cutoff": _iso(cutoff),
              "cutoff_ts": cutoff, "old_rows": 0, "archived": 0, "deleted": 0, "archive_rows": None,
              "size_before": os.path.getsize(db), "size_after": None, "pages_freed": 0, "vacuumed": False,
              "analyzed": False,
              "quick_check": None, "archive_integrity": None, "changed": False}
    existed = wal_files(db)
    side_before = set(_db_side_files(db))
    try:
        ro = connect_ro(db)
        try:
            if table in user_tables(ro):
                column = epoch_column(ro, table, column)
                result["column"] = column
            if table not in user_tables(ro) or not _has_column(ro, table, column):
                raise DataSafetyError(f"{db}: no table {table} with a column {column}", "invalid")
            qt, qc = _quote_ident(table), _quote_ident(column)
            result["old_rows"] = ro.execute(f"SELECT count(*) FROM {qt} WHERE {qc} < ?", (cutoff,)).fetchone()[0]
        finally:
            ro.close()
            tidy_wal_files(db, existed)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, db, "read") from None
    result["changed"] = bool(result["old_rows"]) or vacuum or analyze
    if check_mode or not result["changed"]:
        result["size_after"] = result["size_before"]
        return result
    arc_dir = os.path.dirname(archive)
    try:
        if not os.path.isdir(arc_dir):
            os.makedirs(arc_dir, mode=DIR_MODE)
            _match_owner([arc_dir], os.path.dirname(db))
        new_archive = not os.path.exists(archive)
        if new_archive:
            os.close(os.open(archive, os.O_CREAT | os.O_WRONLY, FILE_MODE))
            _match_owner([archive], db)
    except OSError as exc:
        raise os_error(exc, archive, "create") from None
    try:
        drop_clean_marker(db)
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, uri=True)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, db, "open") from None
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("ATTACH DATABASE ? AS arc", (archive,))
        if result["old_rows"]:
            _create_like(conn, table, "arc")
            theirs = set(_columns(conn, table, "arc"))
            cols = [c for c in _columns(conn, table) if c in theirs]
            names = ", ".join(_quote_ident(c) for c in cols)
            key = table_keys(conn, table)[0]
            match = " AND ".join(f"a.{_quote_ident(c)} = m.{_quote_ident(c)}" for c in key)
            # 1. copy, committed in the archive on its own
            result["archived"] = _in_own_transaction(
                conn, f"INSERT OR IGNORE INTO arc.{qt} ({names}) SELECT {names} FROM main.{qt} WHERE {qc} < ?",
                (cutoff,))
            # 2. delete only what the archive holds, in bounded transactions (a live supervisor's writer
            # waits for one batch at most, not for the whole delete)
            result["deleted"] = _delete_archived(conn, qt, qc, match, cutoff)
            result["pages_freed"] = _give_back_pages(conn)
            result["archive_rows"] = conn.execute(f"SELECT count(*) FROM arc.{qt}").fetchone()[0]
            rows = [str(r[0]) for r in conn.execute("PRAGMA arc.integrity_check(20)").fetchall()]
            result["archive_integrity"] = "ok" if rows == ["ok"] else rows
        conn.execute("DETACH DATABASE arc")
        if vacuum:
            conn.execute("VACUUM")
            result["vacuumed"] = True
        if analyze:
            conn.execute("ANALYZE")
            result["analyzed"] = True
        problems = integrity_problems(conn, quick=True)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, db, "archive") from None
    finally:
        conn.close()
        _match_owner([p for p in _db_side_files(db) if p not in side_before], db)
        _match_owner(list(_db_side_files(archive)), db)
    result["size_after"] = os.path.getsize(db)
    result["quick_check"] = problems if problems else "ok"
    if problems:
        raise DataSafetyError(f"{db}: fails PRAGMA quick_check after archiving: {problems[0]}", "corrupt", result)
    return result
