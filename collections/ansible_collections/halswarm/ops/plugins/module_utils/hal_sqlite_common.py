# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""What the hal_sqlite_* module_utils share: the error type, file and fsync helpers, sha256 sidecars,
read-only connections, integrity checks and row counts, and who holds a database open.

The hal_sqlite_* files are the single implementation of the supervisor database's data safety, one
job per file: hal_sqlite_backup (backup, verify, retention, the backup timer's command line),
hal_sqlite_restore, hal_sqlite_recover (salvage of a corrupt file), hal_sqlite_facts (read-only
facts) and hal_sqlite_archive (merge from a backup, archive old rows). The hal_sqlite_* modules
import them (Ansible ships them to the target with the module); halctl's local mode
(halswarm/ops/datasafety.py) loads the same files by path under the same module names; the
supervisor role installs them on the host for the scheduled backup timer, which runs
hal_sqlite_backup.py as a script. So they use the Python standard library only and stay
compatible with Python 3.8 (module targets).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import os
import re
import sqlite3
import stat
import tempfile

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system
    fcntl = None  # type: ignore[assignment]

_UTC = datetime.timezone.utc  # noqa: UP017 - datetime.UTC needs Python 3.11; module targets run 3.8+
SQLITE_MAGIC = b"SQLite format 3\x00"
SIDECAR_SUFFIX = ".sha256"
FILE_MODE = 0o600
DIR_MODE = 0o700
TS_FORMAT = "%Y%m%dT%H%M%SZ"
BUSY_TIMEOUT_MS = 5000
# Byte ranges of SQLite's POSIX locks (os_unix.c): a connection holding the database open in WAL
# mode keeps a read lock in the SHARED range.
_PENDING_BYTE = 0x40000000
_SHARED_FIRST = _PENDING_BYTE + 2
_SHARED_SIZE = 510
_CORRUPT_WORDS = ("malformed", "not a database", "corrupt", "file is encrypted")


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


CLEAN_MARKER_SUFFIX = ".clean"


def drop_clean_marker(db):
    """Remove the supervisor's clean-shutdown marker `<db>.clean` (and fsync the removal) before
    writing `db`: the next start then runs its full integrity check on the file written here.
    Returns True when a marker was removed."""
    marker = db + CLEAN_MARKER_SUFFIX
    try:
        os.unlink(marker)
    except OSError:  # none, or not ours to remove: the write changes the file's identity anyway
        return False
    fsync_dir(os.path.dirname(os.path.abspath(marker)))
    return True


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
# table columns (for the data remediations: facts, merge, archive)

DAY_SECONDS = 86400.0


def _columns(conn, table, schema="main"):
    return [r[1] for r in conn.execute(f"PRAGMA {schema}.table_info({_quote_ident(table)})").fetchall()]


def _has_column(conn, table, column, schema="main"):
    return column in _columns(conn, table, schema)


def epoch_column(conn, table, column, schema="main"):
    """The epoch-seconds column behind `column`: since schema 012 `events.timestamp` is the runbook's
    'YYYY-MM-DD HH:MM:SS' text (generated in 012, hidden from table_info; a written column since 013)
    and the REAL epoch is `ts`, so a numeric cutoff must be compared with `ts`. Older databases keep
    the REAL `timestamp` and have no `ts`."""
    if column == "timestamp" and "ts" in _columns(conn, table, schema):
        return "ts"
    return column
