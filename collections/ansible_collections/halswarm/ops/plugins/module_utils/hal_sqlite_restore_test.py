# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""The monthly restore test of the supervisor's database backups and the backup size anomaly check;
also the command line the supervisor role's restore-test timer runs
(`python3 hal_sqlite_restore_test.py run ...`). The size anomaly check itself lives in
hal_sqlite_backup (the backup timer records it in `backup-status.json`); the restore test repeats it
for the backup it tests.

Restore test: the newest backup that has a checksum is copied into a private scratch directory
(0700, removed afterwards) while its sha256 is computed, the copy is opened read-only, PRAGMA
integrity_check runs on it, and its row counts are compared with the live database read through a
read-only connection. The verdict is written atomically to `restore-test.json` in the backup
directory, where the supervisor reads it for its metrics. A bad backup gives a failed verdict with
one-line reasons, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

if __package__:  # imported: shipped by Ansible with a module, or loaded by halctl / the tests
    from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_backup import (
        DEFAULT_HIGH,
        DEFAULT_LOW,
        DEFAULT_MIN_HISTORY,
        DEFAULT_WINDOW,
        list_backups,
        size_anomaly,
    )
    from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (
        DataSafetyError,
        _iso,
        _sqlite_error,
        check_sqlite_file,
        connect_ro,
        database_counts,
        integrity_problems,
        read_sidecar,
        row_counts,
        write_text_atomic,
    )
else:  # run as a script by the timers: the sibling files installed beside it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from hal_sqlite_backup import (
        DEFAULT_HIGH,
        DEFAULT_LOW,
        DEFAULT_MIN_HISTORY,
        DEFAULT_WINDOW,
        list_backups,
        size_anomaly,
    )
    from hal_sqlite_common import (
        DataSafetyError,
        _iso,
        _sqlite_error,
        check_sqlite_file,
        connect_ro,
        database_counts,
        integrity_problems,
        read_sidecar,
        row_counts,
        write_text_atomic,
    )

RESULT_FILE = "restore-test.json"
RESULT_VERSION = 1
# Tables only ever appended to: a backup can never hold more of their rows than the live database.
DEFAULT_APPEND_ONLY = ("schema_migrations",)


# --------------------------------------------------------------------------------------------
# pure logic


def compare_counts(backup, live, append_only=DEFAULT_APPEND_ONLY):
    """Reasons (one line each) why the backup's row counts do not fit the live database's; [] = fine.

    The live database may have grown or been pruned since the backup, so only what cannot happen is
    a failure: an append-only table with more rows in the backup than live, a table holding rows live
    that the backup lacks, a backup with no rows at all while the live database has some, and an
    unreadable count.
    """
    reasons = []
    live = live or {}
    for table in sorted(live):
        theirs, ours = live[table], backup.get(table)
        if table not in backup:
            if theirs:
                reasons.append(f"table {table} ({theirs} rows live) is missing from the backup")
            continue
        if ours is None:
            reasons.append(f"table {table}: cannot count its rows in the backup")
        elif table in append_only and isinstance(theirs, int) and ours > theirs:
            reasons.append(f"append-only table {table} has more rows in the backup ({ours}) than live ({theirs})")
    live_rows = sum(v for v in live.values() if isinstance(v, int))
    backup_rows = sum(v for v in backup.values() if isinstance(v, int))
    if live_rows > 0 and backup_rows == 0:
        reasons.append(f"the backup holds no rows while the live database holds {live_rows}")
    return reasons


def counts_table(backup, live):
    """{table: {backup, live}} over the union of tables."""
    backup, live = backup or {}, live or {}
    return {t: {"backup": backup.get(t), "live": live.get(t)} for t in sorted(set(backup) | set(live))}


def _one_line(text):
    line = " ".join(str(text).split())
    return line[:500]


# --------------------------------------------------------------------------------------------
# the restore test


def _copy_hashing(src, dest, chunk=1 << 20):
    digest = hashlib.sha256()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(src, "rb") as reader, os.fdopen(fd, "wb") as writer:
        while True:
            block = reader.read(chunk)
            if not block:
                break
            digest.update(block)
            writer.write(block)
        writer.flush()
    return digest.hexdigest()


def _test_copy(backup_path, scratch_parent):
    """Copy, checksum, integrity and counts of one backup; (counts, reasons)."""
    reasons = []
    check_sqlite_file(backup_path)
    expected = read_sidecar(backup_path)
    scratch = tempfile.mkdtemp(prefix="hal-restore-test-", dir=scratch_parent)  # 0700
    try:
        copy = os.path.join(scratch, "restored.db")
        try:
            digest = _copy_hashing(backup_path, copy)
        except OSError as exc:
            raise DataSafetyError(f"{backup_path}: cannot copy it into {scratch}: {exc.strerror or exc}",
                                  "io") from None
        if expected is None:
            reasons.append(f"{os.path.basename(backup_path)}: no checksum file")
        elif digest != expected:
            reasons.append(f"{os.path.basename(backup_path)}: checksum mismatch (expected {expected[:12]}, "
                           f"found {digest[:12]})")
        try:
            conn = connect_ro(copy, immutable=True)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, os.path.basename(backup_path), "open") from None
        try:
            problems = integrity_problems(conn)
            if problems:
                reasons.append(f"{os.path.basename(backup_path)}: fails PRAGMA integrity_check: "
                               + "; ".join(problems[:3]))
                return None, reasons
            try:
                return row_counts(conn), reasons
            except sqlite3.DatabaseError as exc:
                reasons.append(f"{os.path.basename(backup_path)}: cannot count rows: {exc}")
                return None, reasons
        finally:
            conn.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def restore_test(backup_dir, live_db, prefix=None, scratch_parent=None, append_only=DEFAULT_APPEND_ONLY,
                 window=DEFAULT_WINDOW, low=DEFAULT_LOW, high=DEFAULT_HIGH, min_history=DEFAULT_MIN_HISTORY,
                 now=None):
    """Run the restore test on the newest checksummed backup in `backup_dir`; returns the verdict
    (never raises for a bad backup or database: every problem becomes a reason)."""
    started = time.monotonic()
    moment = time.time() if now is None else now
    result = {"version": RESULT_VERSION, "time": _iso(moment), "timestamp": round(moment, 3), "backup": None,
              "backup_size": None, "backup_created": None, "ok": False, "status": "failed", "reasons": [],
              "duration": 0.0, "counts": {}, "size_anomaly": None}
    reasons = result["reasons"]
    try:
        backups = [b for b in list_backups(backup_dir, prefix) if b["has_checksum"]]
        if not backups:
            reasons.append(f"{backup_dir}: no backup with a checksum file to test")
        else:
            newest = backups[0]
            result.update(backup=newest["name"], backup_size=newest["size"], backup_created=newest["created"])
            result["size_anomaly"] = size_anomaly(newest["size"], [b["size"] for b in backups[1:]], window, low,
                                                  high, min_history)
            counts, problems = _test_copy(newest["path"], scratch_parent)
            reasons.extend(problems)
            live, live_problem = database_counts(live_db)
            if live_problem:
                reasons.append(f"{live_db}: cannot read the live database: {live_problem}")
            if counts is not None:
                result["counts"] = counts_table(counts, live)
                if live is not None:
                    reasons.extend(compare_counts(counts, live, append_only))
    except DataSafetyError as exc:
        reasons.append(exc.message)
    except Exception as exc:  # a restore test reports, it never dies with a traceback
        reasons.append(f"{type(exc).__name__}: {exc}")
    result["reasons"] = [_one_line(r) for r in reasons]
    result["ok"] = not reasons
    result["status"] = "ok" if result["ok"] else "failed"
    result["duration"] = round(time.monotonic() - started, 3)
    return result


def write_result(directory, result):
    """Write `restore-test.json` atomically (0600) in the backup directory."""
    write_text_atomic(os.path.join(directory, RESULT_FILE), json.dumps(result, sort_keys=True, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# command line (the supervisor role's restore-test timer runs this file)


def _cli(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="hal_sqlite_restore_test.py",
                                     description="HAL-O-SWARM backup restore test")
    sub = parser.add_subparsers(dest="command")

    def limits(p):
        p.add_argument("--prefix")
        p.add_argument("--anomaly-window", type=int, default=DEFAULT_WINDOW)
        p.add_argument("--anomaly-min-history", type=int, default=DEFAULT_MIN_HISTORY)
        p.add_argument("--anomaly-low", type=float, default=DEFAULT_LOW)
        p.add_argument("--anomaly-high", type=float, default=DEFAULT_HIGH)

    r = sub.add_parser("run", help="restore-test the newest backup, write restore-test.json")
    r.add_argument("--db", required=True, help="the live database (read only)")
    r.add_argument("--backup-dir", required=True)
    r.add_argument("--scratch-dir", help="parent of the private scratch directory (default: the temp dir)")
    r.add_argument("--append-only", action="append", help="an append-only table (repeatable)")
    limits(r)
    args = parser.parse_args(argv)
    if args.command:
        try:
            size_anomaly(1, [1], args.anomaly_window, args.anomaly_low, args.anomaly_high, args.anomaly_min_history)
        except ValueError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
    if args.command == "run":
        result = restore_test(args.backup_dir, args.db, args.prefix, args.scratch_dir,
                              tuple(args.append_only) if args.append_only else DEFAULT_APPEND_ONLY,
                              args.anomaly_window, args.anomaly_low, args.anomaly_high, args.anomaly_min_history)
        try:
            write_result(args.backup_dir, result)
        except OSError as exc:
            sys.stderr.write(f"error: {args.backup_dir}: cannot write {RESULT_FILE}: {exc.strerror or exc}\n")
            return 1
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
        if not result["ok"]:
            sys.stderr.write("error: restore test failed: {}\n".format("; ".join(result["reasons"])))
            return 1
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(_cli())
