# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Data safety for the supervisor's SQLite database: online backup, verification, verified restore
and salvage of a corrupt file.

This file is the single implementation. The modules hal_sqlite_backup, hal_sqlite_restore and
hal_sqlite_recover import it (Ansible ships it to the target with them); halctl's local mode
(halswarm/ops/datasafety.py) loads this same file; the supervisor role installs it on the host for
the scheduled backup timer, which runs it as a script (`python3 hal_sqlite.py backup ...`).
So it uses the Python standard library only and stays compatible with Python 3.8 (module targets).

Design notes
- Backup: the SQLite online backup API, in steps, on a read-only connection that first opens a
  read transaction. Holding that transaction pins one WAL snapshot for all steps: the supervisor
  keeps writing, the backup never restarts, and everything committed before the backup started
  (every acknowledged event) is in the copy. Then journal_mode=DELETE (a single self-contained
  file), PRAGMA integrity_check, fsync, no-clobber rename, sha256 sidecar (sha256sum format).
- Restore: verify checksum and integrity first, refuse a database still held open by a process,
  copy to a temp file beside the target (fsync, hash re-checked), keep the replaced file as
  `<db>.replaced-<ts>` (its -wal travels with it, -shm is dropped) and rename the copy into place.
  The old -wal is moved away *before* the new file appears, so SQLite can never replay a WAL that
  belongs to another database.
- Recover (no `.recover`, no sqlite_dbpage on this platform): work on a private copy, never the
  original. Pass 1 reads each table through SQL by rowid ranges, skipping what does not read
  (exponential skip-ahead + bisection). Pass 2 parses the raw b-tree pages of the copy and takes
  rows from intact leaf pages the SQL pass could not reach (e.g. under a damaged interior page,
  or everything when sqlite_master itself is unreadable, with the schema taken from the migration
  files). Each table reports what was saved and what was lost.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import struct
import sys
import tempfile
import time

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system
    fcntl = None  # type: ignore[assignment]

_UTC = datetime.timezone.utc  # noqa: UP017 - datetime.UTC needs Python 3.11; module targets run 3.8+
SQLITE_MAGIC = b"SQLite format 3\x00"
SIDECAR_SUFFIX = ".sha256"
FILE_MODE = 0o600
DIR_MODE = 0o700
BACKUP_SUFFIX = ".db"
# <prefix>-<UTC YYYYmmddTHHMMSSZ>[-<n>].db
BACKUP_NAME_RE = re.compile(r"^(?P<prefix>.+)-(?P<ts>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?\.db$")
TS_FORMAT = "%Y%m%dT%H%M%SZ"
BUSY_TIMEOUT_MS = 5000
MIN_INT64 = -(1 << 63)
MAX_INT64 = (1 << 63) - 1
# Byte ranges of SQLite's POSIX locks (os_unix.c): a connection holding the database open in WAL
# mode keeps a read lock in the SHARED range.
_PENDING_BYTE = 0x40000000
_SHARED_FIRST = _PENDING_BYTE + 2
_SHARED_SIZE = 510
_CORRUPT_WORDS = ("malformed", "not a database", "corrupt", "file is encrypted")
# The bookkeeping table of halswarm.store.migrations (kept identical; a unit test compares them).
SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version TEXT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at REAL NOT NULL)"
)


class DataSafetyError(Exception):
    """A failure with a one-line, operator-facing message.

    `kind` is a short code: missing, permission, not_sqlite, corrupt, checksum, no_space, in_use,
    busy, exists, invalid, io.
    """

    def __init__(self, message, kind="io", details=None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.details = details or {}

    def __str__(self):
        return self.message


# --------------------------------------------------------------------------------------------
# small helpers


def utcnow():
    return datetime.datetime.now(_UTC)


def _ts(moment=None):
    return (moment or utcnow()).strftime(TS_FORMAT)


def _iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, _UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def _uri(path, **params):
    from urllib.parse import quote

    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return "file:{}{}".format(quote(os.path.abspath(path)), "?" + query if query else "")


def os_error(exc, path, action="access"):
    """DataSafetyError for an OSError, with a message naming the path and the cause."""
    code = getattr(exc, "errno", None)
    reason = exc.strerror or str(exc)
    if code == errno.ENOENT:
        return DataSafetyError(f"{path}: no such file or directory", "missing")
    if code in (errno.EACCES, errno.EPERM):
        return DataSafetyError(f"{path}: permission denied (cannot {action} it as uid {os.geteuid()})",
                               "permission")
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return DataSafetyError(f"{path}: no space left on device", "no_space")
    if code == errno.EROFS:
        return DataSafetyError(f"{path}: read-only file system", "permission")
    return DataSafetyError(f"{path}: cannot {action}: {reason}", "io")


def _sqlite_error(exc, path, action):
    text = str(exc)
    low = text.lower()
    if "disk is full" in low or "database or disk is full" in low:
        return DataSafetyError(f"{path}: no space left on device ({action})", "no_space")
    if "locked" in low or "busy" in low:
        return DataSafetyError(f"{path}: database is busy ({action}): {text}", "busy")
    if any(w in low for w in _CORRUPT_WORDS):
        return DataSafetyError(f"{path}: database is damaged ({action}): {text}", "corrupt")
    if "unable to open" in low or "readonly" in low or "read-only" in low:
        return DataSafetyError(f"{path}: cannot {action}: {text}", "permission")
    return DataSafetyError(f"{path}: {action} failed: {text}", "io")


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quiet(path):
    with contextlib.suppress(OSError):
        os.unlink(path)


def free_bytes(directory):
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def check_sqlite_file(path):
    """Raise DataSafetyError unless `path` is a readable regular file with the SQLite header.

    Returns the file size. Reads 16 bytes; never opens the file with SQLite.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataSafetyError(f"{path}: not a regular file", "invalid")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    if st.st_size == 0:
        raise DataSafetyError(f"{path}: empty file, not an SQLite database", "not_sqlite")
    if head != SQLITE_MAGIC:
        raise DataSafetyError(f"{path}: not an SQLite database (no SQLite header)", "not_sqlite")
    return st.st_size


# --------------------------------------------------------------------------------------------
# checksums


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while True:
                block = handle.read(chunk)
                if not block:
                    break
                digest.update(block)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    return digest.hexdigest()


def sidecar_path(path):
    return str(path) + SIDECAR_SUFFIX


def write_text_atomic(path, text, mode=FILE_MODE):
    """Write `text` to `path` atomically: temp file in the same directory, fsync, rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    fsync_dir(directory)


def write_sidecar(path, digest=None):
    """Write `<path>.sha256` in sha256sum format (`sha256sum -c` works in the backup directory)."""
    digest = digest or sha256_file(path)
    try:
        write_text_atomic(sidecar_path(path), f"{digest}  {os.path.basename(path)}\n")
    except OSError as exc:
        raise os_error(exc, sidecar_path(path), "write") from None
    return digest


def read_sidecar(path):
    """The sha256 recorded beside `path`, or None when there is no sidecar. Bad content raises."""
    side = sidecar_path(path)
    try:
        with open(side) as handle:
            text = handle.read(4096)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise os_error(exc, side, "read") from None
    match = re.match(r"^\s*([0-9a-fA-F]{64})\b", text)
    if not match:
        raise DataSafetyError(f"{side}: not a sha256 checksum file", "checksum")
    return match.group(1).lower()


# --------------------------------------------------------------------------------------------
# connections, integrity, row counts


def connect_ro(path, immutable=False):
    """Read-only connection (never creates or changes the file's content)."""
    params = {"mode": "ro"}
    if immutable:
        params["immutable"] = "1"
    conn = sqlite3.connect(_uri(path, **params), uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def wal_files(path):
    """Which of the database's -wal/-shm files exist now (to tidy up after a read-only look)."""
    return {suffix: os.path.exists(str(path) + suffix) for suffix in ("-wal", "-shm")}


def tidy_wal_files(path, existed):
    """Remove the empty -wal and the -shm that a read-only connection created beside a WAL-mode
    database nobody else has open, so that looking at a file leaves nothing behind.
    Call it after closing the connection (POSIX locks are per process)."""
    path = str(path)
    created = [s for s, was in existed.items() if not was and os.path.exists(path + s)]
    if not created or database_in_use(path):
        return
    wal = path + "-wal"
    if "-wal" in created and os.path.getsize(wal) == 0:
        _unlink_quiet(wal)
    if "-shm" in created and not os.path.exists(wal):
        _unlink_quiet(path + "-shm")


def integrity_problems(conn, quick=False, max_errors=20):
    """[] when PRAGMA integrity_check (or quick_check) says ok, else its complaints."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}({int(max_errors)})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    found = [str(r[0]) for r in rows]
    return [] if found == ["ok"] else (found or ["no result"])


def user_tables(conn):
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def row_counts(conn, tolerant=False):
    """{table: rows}. With `tolerant`, an unreadable table counts as None instead of raising."""
    out = {}
    for table in user_tables(conn):
        try:
            out[table] = conn.execute(f"SELECT count(*) FROM {_quote_ident(table)}").fetchone()[0]
        except sqlite3.DatabaseError:
            if not tolerant:
                raise
            out[table] = None
    return out


def database_counts(path):
    """Row counts of the database at `path` for a before/after report; never raises.

    Returns (counts or None, problem or None).
    """
    if not os.path.exists(path):
        return None, "no database"
    existed = wal_files(path)
    try:
        check_sqlite_file(path)
        conn = connect_ro(path)
    except (DataSafetyError, sqlite3.Error) as exc:
        tidy_wal_files(path, existed)
        return None, str(exc)
    try:
        return row_counts(conn, tolerant=True), None
    except sqlite3.DatabaseError as exc:
        return None, f"unreadable: {exc}"
    finally:
        conn.close()
        tidy_wal_files(path, existed)


def count_changes(before, after):
    """{table: {before, after, change}} over the union of tables (None where unknown)."""
    before = before or {}
    after = after or {}
    out = {}
    for table in sorted(set(before) | set(after)):
        b, a = before.get(table), after.get(table)
        out[table] = {"before": b, "after": a,
                      "change": (a - b) if isinstance(a, int) and isinstance(b, int) else None}
    return out


def counts_text(counts, header=None):
    lines = [header] if header else []
    if counts is None:
        lines.append("(no readable database)")
    else:
        width = max([len(t) for t in counts] + [5])
        for table in sorted(counts):
            value = counts[table]
            lines.append("{}  {}".format(table.ljust(width), "unreadable" if value is None else value))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# who holds a database open


def database_in_use(path):
    """True when another process holds `path` open through SQLite (it keeps a POSIX read lock in
    SQLite's SHARED byte range). Takes and drops a lock; never changes the file."""
    if fcntl is None or not os.path.exists(path):
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        lock = fcntl.LOCK_SH
    else:
        lock = fcntl.LOCK_EX
    try:
        fcntl.lockf(fd, lock | fcntl.LOCK_NB, _SHARED_SIZE, _SHARED_FIRST)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, _SHARED_SIZE, _SHARED_FIRST)
        return False
    finally:
        os.close(fd)


def holders(path):
    """[(pid, command name)] of processes with `path` open (Linux /proc; best effort)."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    found = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if int(pid) == os.getpid():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if st.st_ino == target.st_ino and st.st_dev == target.st_dev:
                try:
                    with open(f"/proc/{pid}/comm") as handle:
                        name = handle.read().strip()
                except OSError:
                    name = "?"
                found.append((int(pid), name))
                break
    return found


def ensure_not_in_use(path):
    if database_in_use(path):
        who = holders(path)
        named = ", ".join(f"pid {pid} ({name})" for pid, name in who)
        raise DataSafetyError(
            f"{path} is in use by {named or 'another process'}; stop the supervisor first",
            "in_use", {"holders": who},
        )


# --------------------------------------------------------------------------------------------
# backups: names, listing, retention (pure selection)


def backup_name(prefix, moment=None, n=0):
    return f"{prefix}-{_ts(moment)}{f'-{n}' if n else ''}{BACKUP_SUFFIX}"


def parse_backup_name(name):
    """(prefix, created epoch seconds) for a backup file name, or None."""
    match = BACKUP_NAME_RE.match(name)
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


def list_backups(directory, prefix=None):
    """Backups in `directory` (newest first): name, path, created, size, has_checksum."""
    try:
        names = os.listdir(directory)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise os_error(exc, directory, "list") from None
    out = []
    for name in names:
        parsed = parse_backup_name(name)
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


def apply_retention(directory, prefix, keep=0, max_age_days=0, now=None, protect=(), dry_run=False):
    """Delete expired backups (and their sidecars); returns the paths removed (or to remove)."""
    existing = list_backups(directory, prefix)
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
# restore


def _copy_hashing(src, dst_fd):
    digest = hashlib.sha256()
    with open(src, "rb") as handle:
        while True:
            block = handle.read(1 << 20)
            if not block:
                break
            digest.update(block)
            view = memoryview(block)
            while view:
                written = os.write(dst_fd, view)
                view = view[written:]
    os.fsync(dst_fd)
    return digest.hexdigest()


def _copy_with_backup_api(src, dst_path):
    """Self-contained copy of `src` (its WAL included) into the existing empty file `dst_path`."""
    source = connect_ro(src)
    try:
        dest = sqlite3.connect(dst_path, isolation_level=None)
        try:
            source.backup(dest)
            dest.execute("PRAGMA journal_mode=DELETE").fetchone()
            problems = integrity_problems(dest)
        finally:
            dest.close()
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, src, "copy") from None
    finally:
        source.close()
    if problems:
        raise DataSafetyError(f"{src}: the copy fails integrity_check: {problems[0]}", "corrupt")
    fsync_file(dst_path)


def _free_name(base):
    if not os.path.lexists(base):
        return base
    for n in range(1, 1000):
        candidate = f"{base}-{n}"
        if not os.path.lexists(candidate):
            return candidate
    raise DataSafetyError(f"no free name for {base}", "exists")


def restore_database(backup, db, require_checksum=True, keep_replaced=True, check_mode=False, force=False,
                     now=None):
    """Replace the database `db` with the verified `backup`, atomically.

    Refuses (DataSafetyError) a backup failing its checksum or integrity check, and a database
    still open in another process (unless `force`). The replaced file is kept as
    `<db>.replaced-<UTC ts>` (with its -wal); the restored file gets the replaced file's owner and
    mode 0600. Returns changed, before/after row counts, replaced path, quick_check.

    A `backup` with a non-empty `-wal` beside it (e.g. a kept `.replaced-*` file, to undo a restore)
    is copied with the backup API, so the transactions in its WAL come along.
    """
    backup = os.path.abspath(backup)
    db = os.path.abspath(db)
    verification = verify_backup(backup, require_checksum=require_checksum)
    if not verification["ok"]:
        raise DataSafetyError("refusing to restore {}: {}".format(backup, verification["problems"][0]),
                              verification["kind"] or "corrupt", {"verification": verification})
    db_dir = os.path.dirname(db)
    if not os.path.isdir(db_dir):
        raise DataSafetyError(f"{db_dir}: database directory does not exist", "missing")
    in_use = database_in_use(db)
    if in_use and not force and not check_mode:
        ensure_not_in_use(db)
    exists = os.path.exists(db)
    before, before_problem = database_counts(db) if exists else (None, "no database")
    after = verification["tables"]
    sidecar_files = [p for p in (db + "-wal", db + "-journal") if os.path.exists(p)]
    via_sqlite = os.path.exists(backup + "-wal") and os.path.getsize(backup + "-wal") > 0
    same = (exists and not sidecar_files and not via_sqlite and os.path.getsize(db) == verification["size"]
            and sha256_file(db) == verification["sha256"])
    result = {
        "changed": not same, "db": db, "backup": backup, "sha256": verification["sha256"],
        "before": before, "before_problem": before_problem, "after": after,
        "changes": count_changes(before, after), "replaced": None, "quick_check": None,
        "verification": verification, "in_use": in_use,
    }
    if same or check_mode:
        return result
    moment = now or utcnow()
    try:
        owner = os.stat(db) if exists else os.stat(db_dir)
    except OSError as exc:
        raise os_error(exc, db, "read") from None
    need = verification["size"]
    if free_bytes(db_dir) < need:
        raise DataSafetyError(f"{db_dir}: not enough free space to restore {backup} (need {need} bytes)",
                              "no_space")
    try:
        fd, tmp = tempfile.mkstemp(dir=db_dir, prefix="." + os.path.basename(db) + ".restore-", suffix=".tmp")
    except OSError as exc:
        raise os_error(exc, db_dir, "write") from None
    replaced = None
    moved = []
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            if os.geteuid() == 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)
            copied = None if via_sqlite else _copy_hashing(backup, fd)
        finally:
            os.close(fd)
        if via_sqlite:
            _copy_with_backup_api(backup, tmp)
            result["sha256"] = sha256_file(tmp)
        elif copied != verification["sha256"]:
            raise DataSafetyError(f"{tmp}: the copy of {backup} does not match its checksum (I/O error?)", "io")
        if exists:
            if keep_replaced:
                replaced = _free_name(f"{db}.replaced-{_ts(moment)}")
                os.link(db, replaced)
            # Move the old database's WAL/journal away *before* the new file appears at `db`.
            for suffix in ("-wal", "-journal"):
                old = db + suffix
                if os.path.exists(old):
                    if replaced:
                        os.rename(old, replaced + suffix)
                        moved.append((replaced + suffix, old))
                    else:
                        os.unlink(old)
            _unlink_quiet(db + "-shm")
        os.replace(tmp, db)
        fsync_dir(db_dir)
    except OSError as exc:
        _unlink_quiet(tmp)
        for new, old in moved:  # put the old WAL back beside the (unchanged) old database
            with contextlib.suppress(OSError):
                os.rename(new, old)
        if replaced:
            _unlink_quiet(replaced)
        raise os_error(exc, db, "restore") from None
    except BaseException:
        _unlink_quiet(tmp)
        for new, old in moved:
            with contextlib.suppress(OSError):
                os.rename(new, old)
        if replaced:
            _unlink_quiet(replaced)
        raise
    conn = connect_ro(db)
    try:
        problems = integrity_problems(conn, quick=True)
    finally:
        conn.close()
    result["replaced"] = replaced
    result["replaced_files"] = [new for new, _old in moved]
    result["quick_check"] = problems if problems else "ok"
    if problems:
        raise DataSafetyError(f"{db}: restored file fails PRAGMA quick_check: {'; '.join(problems[:3])} "
                              f"(the replaced file is {replaced})", "corrupt", result)
    return result


# --------------------------------------------------------------------------------------------
# recover: raw page reader (pass 2)


class _BadPage(Exception):
    pass


def _varint(buf, pos):
    value = 0
    for i in range(8):
        byte = buf[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos + i + 1
    value = (value << 8) | buf[pos + 8]
    return value, pos + 9


def _signed64(value):
    return value - (1 << 64) if value >= (1 << 63) else value


class RawPages:
    """Reads pages of a database file by number, with the header's page size (or a guessed one)."""

    def __init__(self, path):
        self.path = path
        self.size = os.path.getsize(path)
        self.fd = os.open(path, os.O_RDONLY)
        head = os.pread(self.fd, 100, 0)
        self.header_ok = len(head) == 100 and head[:16] == SQLITE_MAGIC
        page_size = reserved = 0
        if self.header_ok:
            page_size = struct.unpack(">H", head[16:18])[0]
            page_size = 65536 if page_size == 1 else page_size
            reserved = head[20]
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
            self.header_ok = False
            page_size, reserved = self._guess_page_size(), 0
        self.page_size = page_size
        self.usable = page_size - reserved
        self.encoding = "utf-8"
        if self.header_ok:
            enc = struct.unpack(">I", head[56:60])[0]
            self.encoding = {2: "utf-16-le", 3: "utf-16-be"}.get(enc, "utf-8")
        self.page_count = self.size // page_size

    def close(self):
        os.close(self.fd)

    def page(self, pgno):
        if pgno < 1 or pgno > self.page_count:
            raise _BadPage(f"page {pgno} outside the file")
        data = os.pread(self.fd, self.page_size, (pgno - 1) * self.page_size)
        if len(data) != self.page_size:
            raise _BadPage(f"short page {pgno}")
        return data

    def _guess_page_size(self):
        """The page size of a file whose header is gone: at the right size every page starts with a
        b-tree page header. Every multiple of it scores as well, so take the smallest size that
        scores close to the best."""
        scores = {}
        for size in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
            count = min(self.size // size, 4000)
            if count < 2:
                continue
            good = 0
            for n in range(2, count + 1):
                data = os.pread(self.fd, 12, (n - 1) * size)
                if len(data) == 12 and data[0] in (2, 5, 10, 13):
                    cells = struct.unpack(">H", data[3:5])[0]
                    start = struct.unpack(">H", data[5:7])[0] or 65536
                    if cells * 2 < size and start <= size:
                        good += 1
            scores[size] = good / float(count - 1)
        if not scores or max(scores.values()) == 0:
            return 4096
        best = max(scores.values())
        return min(size for size, score in scores.items() if score >= 0.8 * best)

    def header_of(self, pgno):
        data = self.page(pgno)
        offset = 100 if pgno == 1 else 0
        return data, offset, data[offset]

    def interior_children(self, pgno):
        data, off, kind = self.header_of(pgno)
        if kind != 0x05:
            raise _BadPage(f"page {pgno} is not an interior table page")
        cells = struct.unpack(">H", data[off + 3:off + 5])[0]
        right = struct.unpack(">I", data[off + 8:off + 12])[0]
        children = []
        base = off + 12
        if base + cells * 2 > self.usable:
            raise _BadPage(f"page {pgno}: cell count out of range")
        for i in range(cells):
            ptr = struct.unpack(">H", data[base + 2 * i:base + 2 * i + 2])[0]
            if ptr < base + 2 * cells or ptr + 4 > self.usable:
                raise _BadPage(f"page {pgno}: cell pointer out of range")
            children.append(struct.unpack(">I", data[ptr:ptr + 4])[0])
        children.append(right)
        for child in children:
            if child < 2 or child > self.page_count:
                raise _BadPage(f"page {pgno}: child page {child} out of range")
        return children

    def leaf_cells(self, pgno):
        """[(rowid, payload bytes or None when unreadable)] of a table leaf page."""
        data, off, kind = self.header_of(pgno)
        if kind != 0x0D:
            raise _BadPage(f"page {pgno} is not a table leaf page")
        cells = struct.unpack(">H", data[off + 3:off + 5])[0]
        base = off + 8
        if base + cells * 2 > self.usable:
            raise _BadPage(f"page {pgno}: cell count out of range")
        out = []
        usable = self.usable
        max_local = usable - 35
        min_local = ((usable - 12) * 32 // 255) - 23
        for i in range(cells):
            ptr = struct.unpack(">H", data[base + 2 * i:base + 2 * i + 2])[0]
            if ptr < base + 2 * cells or ptr >= usable:
                raise _BadPage(f"page {pgno}: cell pointer out of range")
            try:
                size, pos = _varint(data, ptr)
                rowid, pos = _varint(data, pos)
            except IndexError:
                raise _BadPage(f"page {pgno}: truncated cell") from None
            rowid = _signed64(rowid)
            if size <= max_local:
                local = size
            else:
                k = min_local + ((size - min_local) % (usable - 4))
                local = k if k <= max_local else min_local
            if pos + local > usable:
                raise _BadPage(f"page {pgno}: cell overflows the page")
            payload = data[pos:pos + local]
            if local < size:
                payload = self._overflow(data, pos + local, payload, size)
            out.append((rowid, payload))
        return out

    def _overflow(self, data, at, payload, size):
        if at + 4 > len(data):
            return None
        nxt = struct.unpack(">I", data[at:at + 4])[0]
        parts = [payload]
        have = len(payload)
        seen = set()
        while have < size:
            if nxt < 2 or nxt > self.page_count or nxt in seen:
                return None
            seen.add(nxt)
            try:
                page = self.page(nxt)
            except _BadPage:
                return None
            take = min(size - have, self.usable - 4)
            parts.append(page[4:4 + take])
            have += take
            nxt = struct.unpack(">I", page[:4])[0]
        return b"".join(parts)

    def freelist(self):
        """Page numbers on the freelist (empty when the header is unreadable)."""
        if not self.header_ok:
            return set()
        head = os.pread(self.fd, 100, 0)
        trunk = struct.unpack(">I", head[32:36])[0]
        pages = set()
        while trunk and trunk not in pages and len(pages) <= self.page_count:
            pages.add(trunk)
            try:
                data = self.page(trunk)
            except _BadPage:
                break
            nxt, count = struct.unpack(">II", data[:8])
            count = min(count, (self.usable - 8) // 4)
            for i in range(count):
                pages.add(struct.unpack(">I", data[8 + 4 * i:12 + 4 * i])[0])
            trunk = nxt
        return pages

    def walk_table(self, root):
        """(leaf pages, complete) of the table b-tree at `root`."""
        leaves, stack, seen, complete = [], [root], set(), True
        while stack:
            pgno = stack.pop()
            if pgno in seen:
                complete = False
                continue
            seen.add(pgno)
            try:
                _data, _off, kind = self.header_of(pgno)
                if kind == 0x0D:
                    leaves.append(pgno)
                elif kind == 0x05:
                    stack.extend(reversed(self.interior_children(pgno)))
                else:
                    complete = False
            except _BadPage:
                complete = False
        return leaves, complete


def decode_record(payload, encoding="utf-8"):
    """Values of an SQLite record; raises ValueError when the bytes do not form a valid record."""
    if payload is None:
        raise ValueError("unreadable payload")
    try:
        header_size, pos = _varint(payload, 0)
        if header_size < 1 or header_size > len(payload):
            raise ValueError("bad record header size")
        types = []
        while pos < header_size:
            serial, pos = _varint(payload, pos)
            types.append(serial)
    except IndexError:
        raise ValueError("truncated record header") from None
    if pos != header_size:
        raise ValueError("record header overrun")
    values = []
    body = header_size
    for serial in types:
        if serial == 0:
            values.append(None)
        elif 1 <= serial <= 6:
            width = (1, 2, 3, 4, 6, 8)[serial - 1]
            raw = payload[body:body + width]
            if len(raw) != width:
                raise ValueError("truncated integer")
            values.append(int.from_bytes(raw, "big", signed=True))
            body += width
        elif serial == 7:
            raw = payload[body:body + 8]
            if len(raw) != 8:
                raise ValueError("truncated real")
            values.append(struct.unpack(">d", raw)[0])
            body += 8
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial in (10, 11):
            raise ValueError("reserved serial type")
        else:
            length = (serial - 12) // 2 if serial % 2 == 0 else (serial - 13) // 2
            raw = payload[body:body + length]
            if len(raw) != length:
                raise ValueError("truncated text/blob")
            if serial % 2 == 0:
                values.append(bytes(raw))
            else:
                values.append(raw.decode(encoding))
            body += length
    if body != len(payload):
        raise ValueError("record length mismatch")
    return values


class _TableShape:
    """Columns of a table in the new database, to judge whether a raw record belongs to it."""

    def __init__(self, conn, name, info=None, exact=False):
        self.name = name
        self.exact = exact
        if info is None:
            info = conn.execute(f"PRAGMA table_info({_quote_ident(name)})").fetchall()
        self.columns = [r[1] for r in info]
        self.types = [(r[2] or "").upper() for r in info]
        self.notnull = [bool(r[3]) for r in info]
        self.has_default = [r[4] is not None for r in info]
        pks = [r for r in info if r[5]]
        self.alias = None
        if len(pks) == 1 and (pks[0][2] or "").upper() == "INTEGER":
            self.alias = self.columns.index(pks[0][1])

    def accepts(self, values):
        if not values or len(values) > len(self.columns) or (self.exact and len(values) != len(self.columns)):
            return False
        for i, col_type in enumerate(self.types):
            if i >= len(values):  # a column added later (ALTER TABLE ADD COLUMN): its default applies
                if self.notnull[i] and not self.has_default[i]:
                    return False
                continue
            value = values[i]
            if i == self.alias:
                if value is not None:
                    return False
                continue
            if value is None:
                if self.notnull[i]:
                    return False
                continue
            if "INT" in col_type:
                ok = isinstance(value, (int, float))
            elif "CHAR" in col_type or "CLOB" in col_type or "TEXT" in col_type:
                ok = isinstance(value, (str, bytes))
            elif "REAL" in col_type or "FLOA" in col_type or "DOUB" in col_type:
                ok = isinstance(value, (int, float))
            else:
                ok = True
            if not ok:
                return False
        return True

    def row(self, rowid, values):
        """Full row (padded), the rowid alias filled in."""
        full = list(values) + [None] * (len(self.columns) - len(values))
        if self.alias is not None:
            full[self.alias] = rowid
        return full


# --------------------------------------------------------------------------------------------
# recover


def copy_salvage(src, dst, chunk=1 << 16):
    """Byte copy of `src` that survives read errors: unreadable blocks become zeros.

    Returns the number of bytes that could not be read. `src` is opened read-only.
    """
    bad = 0
    try:
        src_fd = os.open(src, os.O_RDONLY)
    except OSError as exc:
        raise os_error(exc, src, "read") from None
    try:
        size = os.fstat(src_fd).st_size
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            offset = 0
            while offset < size:
                want = min(chunk, size - offset)
                try:
                    data = os.pread(src_fd, want, offset)
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    data = b"\x00" * want
                    bad += want
                if not data:
                    break
                os.write(dst_fd, data)
                offset += len(data)
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return bad


def load_migrations(directory):
    """[(name, sql)] of the `NNN_*.sql` files in `directory`, in order."""
    try:
        names = sorted((n for n in os.listdir(directory) if re.match(r"^\d+_.*\.sql$", n)),
                       key=lambda n: int(n.split("_", 1)[0]))
    except OSError as exc:
        raise os_error(exc, directory, "read") from None
    out = []
    for name in names:
        with open(os.path.join(directory, name)) as handle:
            out.append((name, handle.read()))
    if not out:
        raise DataSafetyError(f"{directory}: no migration files (NNN_name.sql)", "missing")
    return out


def _read_master(conn):
    rows = conn.execute("SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master").fetchall()
    return [{"type": r[0], "name": r[1], "tbl_name": r[2], "rootpage": r[3], "sql": r[4]} for r in rows]


def _expected_count(conn, table, indexes):
    """Rows the table had, read through the table b-tree or any index that still reads."""
    counts = []
    for clause in ["NOT INDEXED"] + [f"INDEXED BY {_quote_ident(i)}" for i in indexes]:
        try:
            counts.append(conn.execute(f"SELECT count(*) FROM {_quote_ident(table)} {clause}").fetchone()[0])
        except sqlite3.Error:
            continue
    return max(counts) if counts else None


class _Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds if seconds else None

    def passed(self):
        return self.end is not None and time.monotonic() > self.end


def _salvage_sql(src, dst, table, shape, report, batch, deadline):
    """Pass 1: copy the rows of `table` that read through SQL, rowid range by rowid range."""
    cols = ", ".join(_quote_ident(c) for c in shape.columns)
    qt = _quote_ident(table)
    select = f"SELECT _rowid_, {cols} FROM {qt} NOT INDEXED WHERE _rowid_ >= ? ORDER BY _rowid_ LIMIT ?"
    probe = f"SELECT _rowid_ FROM {qt} NOT INDEXED WHERE _rowid_ >= ? ORDER BY _rowid_ LIMIT 1"
    if shape.alias is not None:
        insert = "INSERT OR IGNORE INTO {} ({}) VALUES ({})".format(qt, cols, ", ".join("?" * len(shape.columns)))
    else:
        insert = "INSERT OR IGNORE INTO {} (_rowid_, {}) VALUES ({})".format(
            qt, cols, ", ".join("?" * (len(shape.columns) + 1)))

    def fetch(start, limit):
        try:
            return src.execute(select, (start, limit)).fetchall()
        except sqlite3.DatabaseError as exc:
            if len(report["errors"]) < 5:
                report["errors"].append(str(exc))
            return None

    def first_rowid(start):
        """(True, rowid or None at end) when navigation from `start` works, else (False, None)."""
        try:
            row = src.execute(probe, (start,)).fetchone()
        except sqlite3.DatabaseError:
            return False, None
        return True, (row[0] if row else None)

    def store(rows):
        for row in rows:
            values = list(row[1:]) if shape.alias is not None else list(row)
            cur = dst.execute(insert, values)
            if cur.rowcount == 1:
                report["saved_sql"] += 1
                report["_rowids"].add(row[0])
            else:
                report["rejected"] += 1

    cursor = MIN_INT64
    slow = 0
    while cursor <= MAX_INT64:
        if deadline.passed():
            report["complete"] = False
            report["errors"].append("stopped: time limit reached")
            return
        rows = fetch(cursor, 1 if slow else batch)
        if rows is not None:
            if not rows:
                return
            store(rows)
            slow = max(0, slow - len(rows))
            cursor = rows[-1][0] + 1
            continue
        report["complete"] = False
        if not slow:
            slow = batch  # read the next rows one by one to save those before the bad spot
            continue
        works, rowid = first_rowid(cursor)
        if works:
            if rowid is None:
                return
            report["lost_rows"].append(rowid)  # this row's content does not read
            cursor = rowid + 1
            continue
        # Navigation fails from here: skip ahead exponentially, then bisect back to the first start
        # that reads again. Everything in between is an unreadable range.
        step, good = 1, None
        while True:
            target = min(MAX_INT64, cursor + step)
            if first_rowid(target)[0]:
                good = target
                break
            if target == MAX_INT64:
                break
            step *= 2
        if good is None:
            report["skipped_ranges"].append([cursor, MAX_INT64])
            return
        lo, hi = cursor, good
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if first_rowid(mid)[0]:
                hi = mid
            else:
                lo = mid
        report["skipped_ranges"].append([cursor, hi - 1])
        cursor = hi


def _create_schema_from_master(dst, master):
    created = []
    for entry in master:
        if entry["type"] != "table" or not entry["sql"] or entry["name"].startswith("sqlite_"):
            continue
        dst.execute(entry["sql"])
        created.append(entry["name"])
    return created


def _create_schema_from_migrations(dst, migrations):
    for _name, sql in migrations:
        dst.executescript(sql)
    dst.execute(SCHEMA_MIGRATIONS_DDL)
    stamp = time.time()
    for name, sql in migrations:
        dst.execute(
            "INSERT OR REPLACE INTO schema_migrations(version, name, checksum, applied_at) VALUES (?,?,?,?)",
            (name.split("_", 1)[0], name, hashlib.sha256(sql.encode("utf-8")).hexdigest(), stamp))
    return user_tables(dst)


def recover_database(src, dest, migrations=None, batch=500, max_seconds=None, force=False, progress=None):
    """Salvage what still reads from the (corrupt) database `src` into a new database `dest`.

    `src` is never opened for writing: the work happens on a private copy. The schema comes from
    the copy's sqlite_master, or from `migrations` ([(name, sql)]) when that is unreadable (then
    `schema_migrations` is filled in as halswarm's migrator would). The result is 0600, passes
    integrity_check and gets a `.sha256` sidecar, so `restore_database(dest, db)` accepts it.

    Returns schema_source, tables {name: saved, saved_sql, saved_pages, expected, lost,
    lost_rows, skipped_ranges, complete, errors}, totals, integrity and notes.
    """
    started = time.monotonic()
    src = os.path.abspath(src)
    dest = os.path.abspath(dest)
    deadline = _Deadline(max_seconds)
    try:
        st = os.stat(src)
    except OSError as exc:
        raise os_error(exc, src, "read") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataSafetyError(f"{src}: not a regular file", "invalid")
    if st.st_size == 0:
        raise DataSafetyError(f"{src}: empty file, not an SQLite database", "not_sqlite")
    if os.path.exists(dest) and not force:
        raise DataSafetyError(f"{dest} already exists (choose another destination)", "exists")
    dest_dir = os.path.dirname(dest)
    if not os.path.isdir(dest_dir):
        raise DataSafetyError(f"{dest_dir}: destination directory does not exist", "missing")
    notes = []
    try:
        work = tempfile.mkdtemp(prefix=".hal-recover-", dir=dest_dir)
    except OSError as exc:
        raise os_error(exc, dest_dir, "write") from None
    tmp = None
    source = None
    linked = False
    try:
        os.chmod(work, DIR_MODE)
        copy = os.path.join(work, "work.db")
        unread = copy_salvage(src, copy)
        if unread:
            notes.append(f"{unread} bytes of {src} could not be read (I/O errors) and were zero-filled")
        for suffix in ("-wal", "-journal"):
            if os.path.exists(src + suffix) and os.path.getsize(src + suffix) > 0:
                copy_salvage(src + suffix, copy + suffix)
        wal_applied = _fold_journal(copy, notes)
        with open(copy, "rb") as handle:
            header_ok = handle.read(16) == SQLITE_MAGIC
        if not header_ok:
            if not _has_table_pages(copy):
                raise DataSafetyError(f"{src}: not an SQLite database (no SQLite header and no table pages)",
                                      "not_sqlite")
            notes.append("the file header is damaged (no SQLite magic); rows come from raw pages only")
        source, master, master_source = _open_schema(copy, header_ok, notes)
        tmp_fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix="." + os.path.basename(dest) + ".", suffix=".tmp")
        os.fchmod(tmp_fd, FILE_MODE)
        os.close(tmp_fd)
        result = _recover_into(copy, source, master, master_source, tmp, migrations, batch, deadline, notes,
                               progress)
        result["wal_applied"] = wal_applied
        fsync_file(tmp)
        if force and os.path.exists(dest):
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    raise DataSafetyError(f"{dest} already exists (choose another destination)", "exists") from None
                raise
        linked = True
        fsync_dir(dest_dir)
        result["sha256"] = write_sidecar(dest)
    except sqlite3.Error as exc:
        if linked:
            _unlink_quiet(dest)
        raise _sqlite_error(exc, dest, "write the recovered database") from None
    except OSError as exc:
        if linked:
            _unlink_quiet(dest)
        raise os_error(exc, dest_dir, "write the recovered database") from None
    except DataSafetyError:
        if linked:
            _unlink_quiet(dest)
        raise
    finally:
        if tmp:
            _unlink_quiet(tmp)
        if source is not None:
            source.close()
        shutil.rmtree(work, ignore_errors=True)
    result.update({"src": src, "dest": dest, "notes": notes, "duration": round(time.monotonic() - started, 3),
                   "checksum_file": sidecar_path(dest)})
    return result


def _has_table_pages(path):
    """Whether a file without the SQLite header still holds table pages with readable records."""
    try:
        pager = RawPages(path)
    except OSError:
        return False
    try:
        return any(_decoded(pager, pgno) for pgno in range(2, min(pager.page_count, 4000) + 1))
    finally:
        pager.close()


def _fold_journal(copy, notes):
    """Apply the copy's WAL (or roll back its hot journal) and make it a DELETE-mode file."""
    if not (os.path.exists(copy + "-wal") or os.path.exists(copy + "-journal")):
        return None
    try:
        conn = sqlite3.connect(copy, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            conn.execute("PRAGMA journal_mode=DELETE").fetchall()
        finally:
            conn.close()
        return True
    except sqlite3.Error as exc:
        notes.append(f"the write-ahead log could not be applied ({exc}); its changes are not recovered")
        return False


def _open_schema(copy, header_ok, notes):
    """(SQL connection or None, sqlite_master entries or None, how they were read).

    Tried in turn: plain SQL; SQL with writable_schema (tolerates a schema that points at missing
    pages, e.g. a truncated file); the raw b-tree of page 1 (no SQL access to the tables then).
    """
    if header_ok:
        for writable in (False, True):
            conn = None
            try:
                conn = connect_ro(copy)
                conn.execute("PRAGMA cell_size_check=ON")
                if writable:
                    conn.execute("PRAGMA writable_schema=ON")
                master = _read_master(conn)
                conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()
                if writable:
                    notes.append("the schema only reads with writable_schema (it points at damaged or missing pages)")
                return conn, master, "sqlite_master"
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                if not writable:
                    notes.append(f"sqlite_master is unreadable through SQL ({exc})")
    try:
        pager = RawPages(copy)
    except OSError:
        return None, None, None
    try:
        entries = []
        leaves, _complete = pager.walk_table(1) if pager.header_ok else ([], False)
        for pgno in leaves:
            for _rowid, values in _decoded(pager, pgno):
                if (len(values) == 5 and values[0] in ("table", "index", "view", "trigger")
                        and isinstance(values[1], str) and isinstance(values[2], str)
                        and isinstance(values[3], int) and (values[4] is None or isinstance(values[4], str))):
                    entries.append({"type": values[0], "name": values[1], "tbl_name": values[2],
                                    "rootpage": values[3], "sql": values[4]})
    finally:
        pager.close()
    if any(e["type"] == "table" and e["sql"] for e in entries):
        notes.append("the schema was read from the raw pages of sqlite_master")
        return None, entries, "sqlite_master (raw pages)"
    return None, None, None


def _recover_into(copy, source, master, master_source, tmp, migrations, batch, deadline, notes, progress):
    dst = sqlite3.connect(tmp, isolation_level=None)
    try:
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.execute("PRAGMA synchronous=OFF")
        if master is not None:
            schema_source = master_source
            tables = _create_schema_from_master(dst, master)
        elif migrations:
            schema_source = "migrations"
            tables = _create_schema_from_migrations(dst, migrations)
        else:
            raise DataSafetyError(f"{copy}: sqlite_master is unreadable and no schema (migration files) was given",
                                  "corrupt")
        shapes = dict((t, _TableShape(dst, t)) for t in tables)
        reports = {}
        for table in tables:
            reports[table] = {"saved": 0, "saved_sql": 0, "saved_pages": 0, "expected": None, "lost": None,
                              "lost_rows": [], "skipped_ranges": [], "complete": True, "errors": [],
                              "rejected": 0, "_rowids": set()}
        # Pass 1: SQL, table by table.
        if master is not None and source is not None:
            index_names = {}
            for entry in master:
                if entry["type"] == "index":
                    index_names.setdefault(entry["tbl_name"], []).append(entry["name"])
            for n, table in enumerate(tables):
                rep = reports[table]
                rep["expected"] = _expected_count(source, table, index_names.get(table, []))
                dst.execute("BEGIN")
                try:
                    _salvage_sql(source, dst, table, shapes[table], rep, batch, deadline)
                finally:
                    dst.execute("COMMIT")
                if progress is not None:
                    progress("sql", n + 1, len(tables))
        else:
            for rep in reports.values():
                rep["complete"] = False
        # Pass 2: raw pages, for the tables the SQL pass could not read completely.
        incomplete = [t for t in tables if not reports[t]["complete"]]
        if schema_source == "migrations" and "schema_migrations" in incomplete:
            incomplete.remove("schema_migrations")  # rebuilt from the migration files
            reports["schema_migrations"]["complete"] = True
            reports["schema_migrations"]["saved_sql"] = dst.execute(
                "SELECT count(*) FROM schema_migrations").fetchone()[0]
        pages_report = {"scanned": 0, "orphan_leaves": 0, "assigned": 0, "unassigned": 0, "empty": 0}
        if incomplete:
            _salvage_pages(copy, master, dst, shapes, reports, incomplete, pages_report, deadline, notes)
        # Sequences, indexes, views, triggers.
        if source is not None and master is not None:
            _copy_sequences(source, dst, notes)
            for entry in master:
                if entry["type"] in ("index", "view", "trigger") and entry["sql"]:
                    try:
                        dst.execute(entry["sql"])
                    except sqlite3.Error as exc:
                        notes.append("could not recreate {} {}: {}".format(entry["type"], entry["name"], exc))
        problems = integrity_problems(dst)
        if problems:
            raise DataSafetyError(f"{tmp}: the recovered database fails integrity_check: {problems[0]}",
                                  "corrupt")
        try:
            fk = len(dst.execute("PRAGMA foreign_key_check").fetchall())
        except sqlite3.Error:
            fk = None
        totals = {"saved": 0, "lost": 0, "lost_unknown_tables": []}
        out_tables = {}
        for table in tables:
            rep = reports[table]
            rowids = rep.pop("_rowids")
            rep["saved"] = dst.execute(f"SELECT count(*) FROM {_quote_ident(table)}").fetchone()[0]
            if rep["expected"] is not None and rep["expected"] >= rep["saved"]:
                rep["lost"] = rep["expected"] - rep["saved"]
            elif rep["complete"] and not rep["lost_rows"] and not rep["skipped_ranges"]:
                rep["lost"] = 0
            elif shapes[table].alias is not None and rowids:
                # AUTOINCREMENT-style ids: ids missing between the lowest and highest saved one.
                rep["lost_estimate_from_id_gaps"] = (max(rowids) - min(rowids) + 1) - len(rowids)
            rep["lost_rows"] = rep["lost_rows"][:100]
            rep["skipped_ranges"] = [[None if lo == MIN_INT64 else lo, None if hi == MAX_INT64 else hi]
                                     for lo, hi in rep["skipped_ranges"][:100]]  # None: open end
            totals["saved"] += rep["saved"]
            if rep["lost"] is None:
                totals["lost_unknown_tables"].append(table)
            else:
                totals["lost"] += rep["lost"]
            out_tables[table] = rep
        dst.execute("PRAGMA journal_mode=DELETE")
        return {"schema_source": schema_source, "tables": out_tables, "totals": totals, "pages": pages_report,
                "integrity": "ok", "foreign_key_violations": fk, "changed": True}
    finally:
        dst.close()


def _copy_sequences(source, dst, notes):
    try:
        rows = source.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    except sqlite3.Error as exc:
        if "no such table" not in str(exc):
            notes.append(f"sqlite_sequence is unreadable ({exc}); AUTOINCREMENT counters restart from the saved rows")
        return
    for name, seq in rows:
        try:
            cur = dst.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name))
            if cur.rowcount == 0:
                dst.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (name, seq))
        except sqlite3.Error:
            continue


def _salvage_pages(copy, master, dst, shapes, reports, incomplete, pages_report, deadline, notes):
    """Pass 2: rows from intact table leaf pages (walked from each table's root, or orphans
    attributed by the shape of their records)."""
    try:
        pager = RawPages(copy)
    except OSError as exc:
        notes.append(f"raw page scan impossible: {exc}")
        return
    try:
        roots = {}
        if master is not None:
            for entry in master:
                if entry["type"] == "table" and entry["rootpage"]:
                    roots[entry["name"]] = entry["rootpage"]
            roots.setdefault("sqlite_master", 1)
        owned = {}
        for name, root in roots.items():
            leaves, _complete = pager.walk_table(root)
            for leaf in leaves:
                owned[leaf] = name
        free = pager.freelist()
        orphans = []
        for pgno in range(1, pager.page_count + 1):
            if deadline.passed():
                notes.append("raw page scan stopped: time limit reached")
                break
            if pgno in owned or pgno in free:
                continue
            try:
                data = pager.page(pgno)
            except _BadPage:
                continue
            if data[100 if pgno == 1 else 0] == 0x0D:
                orphans.append(pgno)
        pages_report["scanned"] = pager.page_count
        pages_report["orphan_leaves"] = len(orphans)
        # An orphan page goes to a table only when its records fit that table and no other one
        # (complete tables and sqlite_master's own shape included), so rows never land in the wrong table.
        everyone = [*shapes.values(), _MASTER_SHAPE]
        work = [(pgno, owned[pgno]) for pgno in sorted(owned) if owned[pgno] in incomplete]
        ambiguous = set()
        for pgno in orphans:
            rows = _decoded(pager, pgno)
            if not rows:
                pages_report["empty"] += 1
                continue
            fits = [s for s in everyone if all(s.accepts(values) for _rowid, values in rows)]
            if len(fits) == 1 and fits[0].name in incomplete:
                pages_report["assigned"] += 1
                work.append((pgno, fits[0].name))
            else:
                pages_report["unassigned"] += 1
                if len(fits) > 1:
                    ambiguous.add(" / ".join(sorted(s.name for s in fits)))
        for names in sorted(ambiguous):
            notes.append(f"leaf pages whose rows fit several tables were left out ({names})")
        dst.execute("BEGIN")
        try:
            for pgno, table in work:
                shape = shapes[table]
                rep = reports[table]
                qt = _quote_ident(table)
                cols = ", ".join(_quote_ident(c) for c in shape.columns)
                marks = ", ".join("?" * len(shape.columns))
                for rowid, values in _decoded(pager, pgno, keep_bad=True):
                    if values is None or not shape.accepts(values):
                        continue
                    if rowid in rep["_rowids"]:
                        continue
                    if shape.alias is not None:
                        sql = f"INSERT OR IGNORE INTO {qt} ({cols}) VALUES ({marks})"
                        params = shape.row(rowid, values)
                    else:
                        sql = f"INSERT OR IGNORE INTO {qt} (_rowid_, {cols}) VALUES (?, {marks})"
                        params = [rowid, *shape.row(rowid, values)]
                    try:
                        cur = dst.execute(sql, params)
                    except sqlite3.Error:
                        continue
                    if cur.rowcount == 1:
                        rep["saved_pages"] += 1
                        rep["_rowids"].add(rowid)
                    else:
                        rep["rejected"] += 1
        finally:
            dst.execute("COMMIT")
    finally:
        pager.close()


# The shape of sqlite_master's records (type, name, tbl_name, rootpage, sql), so that its pages are
# never mistaken for a table's.
_MASTER_SHAPE = _TableShape(None, "sqlite_master", info=[
    (0, "type", "TEXT", 1, None, 0), (1, "name", "TEXT", 1, None, 0), (2, "tbl_name", "TEXT", 1, None, 0),
    (3, "rootpage", "INTEGER", 0, None, 0), (4, "sql", "TEXT", 0, None, 0)], exact=True)


def _decoded(pager, pgno, keep_bad=False):
    try:
        cells = pager.leaf_cells(pgno)
    except _BadPage:
        return []
    out = []
    for rowid, payload in cells:
        try:
            out.append((rowid, decode_record(payload, pager.encoding)))
        except (ValueError, UnicodeDecodeError):
            if keep_bad:
                out.append((rowid, None))
    return out


# --------------------------------------------------------------------------------------------
# data remediations: read-only facts, newest valid backup, rows missing by key, merge, archive

DAY_SECONDS = 86400.0
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


def _columns(conn, table, schema="main"):
    return [r[1] for r in conn.execute(f"PRAGMA {schema}.table_info({_quote_ident(table)})").fetchall()]


def _has_column(conn, table, column, schema="main"):
    return column in _columns(conn, table, schema)


def epoch_column(conn, table, column, schema="main"):
    """The epoch-seconds column behind `column`: since schema 012 `events.timestamp` is a generated
    'YYYY-MM-DD HH:MM:SS' text column (hidden from table_info) over the REAL epoch `ts`, so a
    numeric cutoff must be compared with `ts`. Older databases keep the REAL `timestamp`."""
    if column == "timestamp":
        cols = _columns(conn, table, schema)
        if "timestamp" not in cols and "ts" in cols:
            return "ts"
    return column


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


def _open_pair(db, backup, write=False):
    """A connection to `db` (read-only unless `write`) with `backup` attached read-only as `bk`."""
    if write:
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


def archive_rows(db, archive, table="events", column="timestamp", older_than_days=30, now=None,
                 vacuum=False, analyze=False, check_mode=False, online=False):
    """Move the rows of `table` whose `column` (epoch seconds) is older than `older_than_days` into
    the side database `archive`, then optionally VACUUM / ANALYZE `db`.

    Never a blind DELETE: the rows are first copied (INSERT OR IGNORE by key) and committed in the
    archive, then only rows whose key is found in the archive are deleted from `db`. A crash between
    the two leaves rows in both places, never in neither; running it again finishes the move.
    Refuses a database held open by another process unless `online`. Returns old_rows, archived,
    deleted, archive_rows, size_before/size_after, vacuumed, analyzed, quick_check, integrity of
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
              "size_before": os.path.getsize(db), "size_after": None, "vacuumed": False, "analyzed": False,
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
            # 2. delete only what the archive holds
            result["deleted"] = _in_own_transaction(
                conn, f"DELETE FROM main.{qt} AS m WHERE m.{qc} < ? AND EXISTS "
                      f"(SELECT 1 FROM arc.{qt} AS a WHERE {match})", (cutoff,))
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


# --------------------------------------------------------------------------------------------
# command line (the supervisor role's backup timer runs this file with the host's python3)


def _cli(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="hal_sqlite.py", description="HAL-O-SWARM SQLite backup / verify")
    sub = parser.add_subparsers(dest="command")
    b = sub.add_parser("backup", help="online backup with integrity check, checksum and retention")
    b.add_argument("--db", required=True)
    b.add_argument("--dest-dir", required=True)
    b.add_argument("--prefix")
    b.add_argument("--keep", type=int, default=0)
    b.add_argument("--max-age-days", type=float, default=0)
    v = sub.add_parser("verify", help="verify backups (checksum + integrity)")
    v.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "backup":
            result = backup_database(args.db, args.dest_dir, prefix=args.prefix)
            result["removed"] = apply_retention(args.dest_dir, result["prefix"], args.keep, args.max_age_days,
                                                protect=(result["name"],))
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
