# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Online backup of the supervisor's SQLite database, verification of a backup, and retention; also
the command line that the supervisor role's backup timer runs (`python3 hal_sqlite_backup.py backup ...`).

Backup: the SQLite online backup API, in steps, on a read-only connection that first opens a read
transaction. Holding that transaction pins one WAL snapshot for all steps: the supervisor keeps
writing, the backup never restarts, and everything committed before the backup started (every
acknowledged event) is in the copy. Then journal_mode=DELETE (a single self-contained file),
PRAGMA integrity_check, fsync, no-clobber rename, sha256 sidecar (sha256sum format).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import sqlite3
import sys
import tempfile
import time

if __package__:  # imported: shipped by Ansible with a module, or loaded by halctl
    from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (
        _UTC,
        DIR_MODE,
        FILE_MODE,
        TS_FORMAT,
        DataSafetyError,
        _iso,
        _sqlite_error,
        _ts,
        _unlink_quiet,
        check_sqlite_file,
        connect_ro,
        free_bytes,
        fsync_dir,
        fsync_file,
        integrity_problems,
        os_error,
        read_sidecar,
        row_counts,
        sha256_file,
        sidecar_path,
        tidy_wal_files,
        utcnow,
        wal_files,
        write_sidecar,
        write_text_atomic,
    )
else:  # run as a script by the backup timer: the sibling file installed beside it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from hal_sqlite_common import (
        _UTC,
        DIR_MODE,
        FILE_MODE,
        TS_FORMAT,
        DataSafetyError,
        _iso,
        _sqlite_error,
        _ts,
        _unlink_quiet,
        check_sqlite_file,
        connect_ro,
        free_bytes,
        fsync_dir,
        fsync_file,
        integrity_problems,
        os_error,
        read_sidecar,
        row_counts,
        sha256_file,
        sidecar_path,
        tidy_wal_files,
        utcnow,
        wal_files,
        write_sidecar,
        write_text_atomic,
    )

BACKUP_SUFFIX = ".db"
STATUS_FILE = "backup-status.json"  # the newest backup's name, size and size check, for the supervisor
STATUS_VERSION = 1
# Size anomaly: outside low..high times the median of the `window` previous backups (needs min_history).
DEFAULT_WINDOW = 5
DEFAULT_MIN_HISTORY = 3
DEFAULT_LOW = 0.5
DEFAULT_HIGH = 2.0
# <prefix>-<UTC YYYYmmddTHHMMSSZ>[-<n>].db
BACKUP_NAME_RE = re.compile(r"^(?P<prefix>.+)-(?P<ts>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?\.db$")


# --------------------------------------------------------------------------------------------
# backups: names, listing, retention (pure selection)


def backup_name(prefix, moment=None, n=0):
    return f"{prefix}-{_ts(moment)}{f'-{n}' if n else ''}{BACKUP_SUFFIX}"


def parse_backup_name(name, pattern=BACKUP_NAME_RE):
    """(prefix, created epoch seconds) for a backup file name (`pattern`: SQLite's by default), or None."""
    match = pattern.match(name)
    if not match:
        return None
    moment = datetime.datetime.strptime(match.group("ts"), TS_FORMAT).replace(tzinfo=_UTC)
    return match.group("prefix"), moment.timestamp() + int(match.group("n") or 0) * 1e-3


def select_expired(backups, keep=0, max_age_days=0, now=None, protect=()):
    """Pure retention: which backups to delete.

    `backups`: iterable of (name, created epoch seconds). A backup expires when it is not among
    the `keep` newest (keep > 0) or is older than `max_age_days` (> 0). The newest backup and the
    names in `protect` never expire, so retention cannot delete the last good copy.
    Returns the expired names, oldest first.
    """
    if keep < 0 or max_age_days < 0:
        raise ValueError("keep and max_age_days must be >= 0")
    now = time.time() if now is None else now
    ordered = sorted(backups, key=lambda item: (item[1], item[0]), reverse=True)
    expired = []
    for index, (name, created) in enumerate(ordered):
        if index == 0 or name in protect:
            continue
        too_many = keep > 0 and index >= keep
        too_old = max_age_days > 0 and (now - created) > max_age_days * 86400.0
        if too_many or too_old:
            expired.append(name)
    return list(reversed(expired))


def list_backups(directory, prefix=None, parse=parse_backup_name):
    """Backups in `directory` (newest first): name, path, created, size, has_checksum. `parse` tells a
    backup's name (SQLite's by default; the pg_dump backups pass theirs)."""
    try:
        names = os.listdir(directory)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise os_error(exc, directory, "list") from None
    out = []
    for name in names:
        parsed = parse(name)
        if parsed is None or (prefix is not None and parsed[0] != prefix):
            continue
        path = os.path.join(directory, name)
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        out.append({"name": name, "path": path, "prefix": parsed[0], "created_ts": parsed[1],
                    "created": _iso(parsed[1]), "size": size,
                    "has_checksum": os.path.exists(sidecar_path(path))})
    out.sort(key=lambda b: (b["created_ts"], b["name"]), reverse=True)
    return out


def apply_retention(directory, prefix, keep=0, max_age_days=0, now=None, protect=(), dry_run=False,
                    parse=parse_backup_name):
    """Delete expired backups (and their sidecars); returns the paths removed (or to remove)."""
    existing = list_backups(directory, prefix, parse)
    expired = select_expired([(b["name"], b["created_ts"]) for b in existing], keep, max_age_days, now, protect)
    removed = []
    for name in expired:
        path = os.path.join(directory, name)
        if not dry_run:
            try:
                os.unlink(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise os_error(exc, path, "delete") from None
            _unlink_quiet(sidecar_path(path))
        removed.append(path)
    if removed and not dry_run:
        fsync_dir(directory)
    return removed


# --------------------------------------------------------------------------------------------
# size anomaly (pure) and the status file


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of nothing")
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def size_anomaly(size, previous, window=DEFAULT_WINDOW, low=DEFAULT_LOW, high=DEFAULT_HIGH,
                 min_history=DEFAULT_MIN_HISTORY):
    """Judge a backup's `size` against the sizes of the backups before it (`previous`, newest first).

    Returns {anomaly, size, median, ratio, compared, reason}: anomaly is True when size < low * median
    or size > high * median of the `window` newest previous sizes; with fewer than `min_history`
    previous backups there is no judgement (anomaly False, reason says so).
    """
    if not 0 < low < 1 < high:
        raise ValueError(f"need 0 < low < 1 < high (got low={low}, high={high})")
    if window < 1 or min_history < 1:
        raise ValueError("window and min_history must be >= 1")
    recent = [int(s) for s in list(previous)[:window]]
    out = {"anomaly": False, "size": int(size), "median": None, "ratio": None, "compared": len(recent),
           "low": low, "high": high, "reason": None}
    if len(recent) < min_history:
        out["reason"] = f"not enough history ({len(recent)} previous backups, need {min_history})"
        return out
    mid = median(recent)
    out["median"] = mid
    if mid <= 0:
        out["anomaly"] = size > 0
        out["reason"] = "previous backups were empty" if out["anomaly"] else None
        return out
    ratio = size / mid
    out["ratio"] = round(ratio, 4)
    if ratio < low or ratio > high:
        out["anomaly"] = True
        out["reason"] = (f"backup size {int(size)} bytes is {ratio:.2f}x the median {mid:.0f} of the "
                         f"previous {len(recent)} backups (allowed {low}x..{high}x)")
    return out


def write_status(directory, status):
    """Write `backup-status.json` atomically (0600) in the backup directory."""
    path = os.path.join(directory, STATUS_FILE)
    try:
        write_text_atomic(path, json.dumps(status, sort_keys=True, indent=1) + "\n")
    except OSError as exc:
        raise os_error(exc, path, "write") from None


def backup_status(backup, previous_sizes, window=DEFAULT_WINDOW, low=DEFAULT_LOW, high=DEFAULT_HIGH,
                  min_history=DEFAULT_MIN_HISTORY, now=None):
    """The `backup-status.json` document for a backup just written (a backup_database result)."""
    moment = time.time() if now is None else now
    return {"version": STATUS_VERSION, "time": _iso(moment), "timestamp": round(moment, 3), "backup": backup["name"],
            "size": backup["size"], "ok": True,
            "size_anomaly": size_anomaly(backup["size"], previous_sizes, window, low, high, min_history)}


# --------------------------------------------------------------------------------------------
# backup


def _begin_snapshot(conn, retries, sleep=0.2):
    """Open a read transaction (pins one WAL snapshot), retrying while the database is busy."""
    attempt = 0
    while True:
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return
        except sqlite3.OperationalError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            low = str(exc).lower()
            if ("locked" in low or "busy" in low) and attempt < retries:
                attempt += 1
                time.sleep(sleep * attempt)
                continue
            raise


def check_backup_inputs(src, dest_dir):
    """What a backup needs, checked without writing: readable SQLite source, a writable (or
    creatable) destination and enough free space. Returns {source_size, free, needed}."""
    size = check_sqlite_file(src)
    wal = src + "-wal"
    wal_size = os.path.getsize(wal) if os.path.exists(wal) else 0
    probe = dest_dir
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise DataSafetyError(f"{probe}: not a directory", "invalid")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataSafetyError(f"{probe}: permission denied (cannot write backups there as uid {os.geteuid()})",
                              "permission")
    needed = size + wal_size
    free = free_bytes(probe)
    if free < needed:
        raise DataSafetyError(
            f"{dest_dir}: not enough free space for a backup of {src} (need about {needed} bytes, {free} available)",
            "no_space", {"needed": needed, "free": free})
    return {"source_size": size, "free": free, "needed": needed}


def backup_database(src, dest_dir, prefix=None, pages_per_step=1024, busy_retries=5, progress=None,
                    now=None, dest_name=None):
    """Online backup of the SQLite database `src` into `dest_dir`, safe while another process writes.

    Returns path, name, size, sha256, checksum_file, tables (rows per table), integrity ("ok"),
    pages, page_size, duration, created. The file is 0600 and has a `.sha256` sidecar. On any
    failure nothing is left behind in `dest_dir` and `src` is untouched.
    `progress(done_pages, total_pages)` is called after each step.
    """
    started = time.monotonic()
    src = os.path.abspath(src)
    dest_dir = os.path.abspath(dest_dir)
    check_backup_inputs(src, dest_dir)
    try:
        os.makedirs(dest_dir, mode=DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, dest_dir, "create") from None
    if prefix is None:
        prefix = os.path.splitext(os.path.basename(src))[0] or "backup"
    moment = now or utcnow()
    _remove_stale_temp_files(dest_dir, f".{prefix}-", ".db.tmp")
    try:
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{prefix}-", suffix=".db.tmp")
    except OSError as exc:
        raise os_error(exc, dest_dir, "write") from None
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    final = None
    try:
        try:
            existed = wal_files(src)
            source = connect_ro(src)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, src, "open") from None
        try:
            dest = sqlite3.connect(tmp, isolation_level=None)
            try:
                _begin_snapshot(source, busy_retries)

                def step(_status, remaining, total):
                    if progress is not None:
                        progress(total - remaining, total)

                attempt = 0
                while True:
                    try:
                        source.backup(dest, pages=max(1, int(pages_per_step)), progress=step, sleep=0.05)
                        break
                    except sqlite3.OperationalError as exc:
                        low = str(exc).lower()
                        if ("locked" in low or "busy" in low) and attempt < busy_retries:
                            attempt += 1
                            time.sleep(0.2 * attempt)
                            continue
                        raise
                with contextlib.suppress(sqlite3.Error):
                    source.execute("COMMIT")
                page_size = dest.execute("PRAGMA page_size").fetchone()[0]
                pages = dest.execute("PRAGMA page_count").fetchone()[0]
                # A backup of a WAL database is marked WAL; make it one self-contained file.
                dest.execute("PRAGMA journal_mode=DELETE").fetchone()
                problems = integrity_problems(dest)
                if problems:
                    raise DataSafetyError(
                        "{}: the backup copy fails PRAGMA integrity_check ({}); the source database is damaged: "
                        "restore an older backup or recover it (hal_sqlite_recover / runbook "
                        "supervisor-db-corruption)".format(src, "; ".join(problems[:3])), "corrupt",
                        {"integrity": problems})
                tables = row_counts(dest)
            except sqlite3.Error as exc:
                err = _sqlite_error(exc, src, "backup")
                if err.kind == "no_space":
                    err = DataSafetyError(
                        f"{dest_dir}: no space left on device while writing the backup of {src}", "no_space")
                raise err from None
            finally:
                dest.close()
        finally:
            source.close()
            tidy_wal_files(src, existed)
        try:
            fsync_file(tmp)
        except OSError as exc:
            raise os_error(exc, tmp, "write") from None
        final = _link_no_clobber(tmp, dest_dir, prefix, moment, dest_name)
        _unlink_quiet(tmp)
        fsync_dir(dest_dir)
        digest = write_sidecar(final)
        size = os.path.getsize(final)
    except OSError as exc:
        _discard(tmp, final)
        raise os_error(exc, dest_dir, "write") from None
    except BaseException:
        _discard(tmp, final)
        raise
    return {
        "path": final, "name": os.path.basename(final), "prefix": prefix, "source": src, "size": size,
        "sha256": digest,
        "checksum_file": sidecar_path(final), "tables": tables, "integrity": "ok", "pages": pages,
        "page_size": page_size, "duration": round(time.monotonic() - started, 3),
        "created": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _discard(tmp, final):
    for path in (tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm"):
        _unlink_quiet(path)
    if final:
        _unlink_quiet(final)
        _unlink_quiet(sidecar_path(final))


def _remove_stale_temp_files(directory, prefix, suffix, older_than=6 * 3600):
    """Temp files of backups killed midway (SIGKILL, power loss) are removed on the next run."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    limit = time.time() - older_than
    for name in names:
        if name.startswith(prefix) and (name.endswith(suffix) or name.endswith(suffix + "-journal")):
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                if os.stat(path).st_mtime < limit:
                    os.unlink(path)


def _link_no_clobber(tmp, directory, prefix, moment, dest_name=None):
    """Hard-link `tmp` under the first free backup name (an existing file is never replaced)."""
    for n in range(0, 1000):
        name = (dest_name if n == 0 else f"{dest_name}.{n}") if dest_name else backup_name(prefix, moment, n)
        final = os.path.join(directory, name)
        try:
            os.link(tmp, final)
            return final
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    raise DataSafetyError(f"{directory}: no free backup name for {prefix}", "exists")


# --------------------------------------------------------------------------------------------
# verify


def verify_backup(path, require_checksum=True, quick=False):
    """Check a backup file: SQLite header, sha256 against its sidecar, integrity, row counts.

    Never raises for a bad backup: returns ok False and `problems` (and `kind` of the first one).
    """
    result = {"path": os.path.abspath(path), "ok": False, "problems": [], "kind": None,
              "checksum": "missing", "sha256": None, "expected_sha256": None, "integrity": None,
              "tables": None, "size": None}

    def fail(message, kind):
        result["problems"].append(message)
        if result["kind"] is None:
            result["kind"] = kind

    try:
        result["size"] = check_sqlite_file(path)
    except DataSafetyError as exc:
        fail(exc.message, exc.kind)
        return result
    try:
        expected = read_sidecar(path)
    except DataSafetyError as exc:
        expected = None
        result["checksum"] = "unreadable"
        fail(exc.message, "checksum")
    result["sha256"] = sha256_file(path)
    if expected is not None:
        result["expected_sha256"] = expected
        if expected == result["sha256"]:
            result["checksum"] = "ok"
        else:
            result["checksum"] = "mismatch"
            fail(f"{path}: checksum mismatch (expected {expected[:12]}, found {result['sha256'][:12]}): "
                 "the file changed after the backup was taken", "checksum")
    elif result["checksum"] == "missing" and require_checksum:
        fail(f"{path}: no checksum file {os.path.basename(sidecar_path(path))}; "
             "cannot tell whether the backup is intact", "checksum")
    existed = wal_files(path)
    try:
        conn = connect_ro(path)
    except sqlite3.Error as exc:
        tidy_wal_files(path, existed)
        err = _sqlite_error(exc, path, "open")
        fail(err.message, err.kind)
        return result
    try:
        problems = integrity_problems(conn, quick=quick)
        result["integrity"] = problems if problems else "ok"
        if problems:
            pragma = "quick_check" if quick else "integrity_check"
            fail(f"{path}: fails PRAGMA {pragma}: {'; '.join(problems[:3])}", "corrupt")
        else:
            try:
                result["tables"] = row_counts(conn)
            except sqlite3.DatabaseError as exc:
                fail(f"{path}: cannot count rows: {exc}", "corrupt")
    finally:
        conn.close()
        tidy_wal_files(path, existed)
    result["ok"] = not result["problems"]
    return result


# --------------------------------------------------------------------------------------------
# command line (the supervisor role's backup timer runs this file with the host's python3)


def _cli(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="hal_sqlite_backup.py", description="HAL-O-SWARM SQLite backup / verify")
    sub = parser.add_subparsers(dest="command")
    b = sub.add_parser("backup", help="online backup with integrity check, checksum and retention")
    b.add_argument("--db", required=True)
    b.add_argument("--dest-dir", required=True)
    b.add_argument("--prefix")
    b.add_argument("--keep", type=int, default=0)
    b.add_argument("--max-age-days", type=float, default=0)
    b.add_argument("--anomaly-window", type=int, default=DEFAULT_WINDOW)
    b.add_argument("--anomaly-min-history", type=int, default=DEFAULT_MIN_HISTORY)
    b.add_argument("--anomaly-low", type=float, default=DEFAULT_LOW)
    b.add_argument("--anomaly-high", type=float, default=DEFAULT_HIGH)
    v = sub.add_parser("verify", help="verify backups (checksum + integrity)")
    v.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "backup":
            try:
                size_anomaly(1, [1], args.anomaly_window, args.anomaly_low, args.anomaly_high, args.anomaly_min_history)
            except ValueError as exc:
                sys.stderr.write(f"error: {exc}\n")
                return 2
            previous = list_backups(args.dest_dir, args.prefix)
            result = backup_database(args.db, args.dest_dir, prefix=args.prefix)
            status = backup_status(result, [b["size"] for b in previous if b["has_checksum"]], args.anomaly_window,
                                   args.anomaly_low, args.anomaly_high, args.anomaly_min_history)
            write_status(args.dest_dir, status)
            result["size_anomaly"] = status["size_anomaly"]
            result["removed"] = apply_retention(args.dest_dir, result["prefix"], args.keep, args.max_age_days,
                                                protect=(result["name"],))
            if status["size_anomaly"]["anomaly"]:
                sys.stderr.write(f"warning: {status['size_anomaly']['reason']}\n")
            sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
            return 0
        if args.command == "verify":
            results = [verify_backup(p) for p in args.paths]
            sys.stdout.write(json.dumps(results, sort_keys=True) + "\n")
            return 0 if all(r["ok"] for r in results) else 1
    except DataSafetyError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(_cli())
