# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Verified restore of a backup over the supervisor's SQLite database.

Verify checksum and integrity first, refuse a database still held open by a process, copy to a
temp file beside the target (fsync, hash re-checked), keep the replaced file as
`<db>.replaced-<ts>` (its -wal travels with it, -shm is dropped) and rename the copy into place.
The old -wal is moved away *before* the new file appears, so SQLite can never replay a WAL that
belongs to another database.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile

from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_backup import (
    verify_backup,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (
    FILE_MODE,
    DataSafetyError,
    _sqlite_error,
    _ts,
    _unlink_quiet,
    connect_ro,
    count_changes,
    database_counts,
    database_in_use,
    drop_clean_marker,
    ensure_not_in_use,
    free_bytes,
    fsync_dir,
    fsync_file,
    integrity_problems,
    os_error,
    sha256_file,
    utcnow,
)

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
        drop_clean_marker(db)
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
