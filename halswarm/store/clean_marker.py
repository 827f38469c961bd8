"""The clean-shutdown marker on disk: `<db>.clean`, written atomically after a clean shutdown and taken
(read, then removed and the removal fsynced) by the next start before the database is opened for
writing. The rules are in `halswarm.core.clean_shutdown`."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from halswarm.core.clean_shutdown import (
    HEADER_BYTES,
    MARKER_SUFFIX,
    MAX_MARKER_BYTES,
    FileIdentity,
    HeaderFacts,
    decode_marker,
    encode_marker,
    header_problem,
    mismatch,
    parse_header,
)


@dataclass(frozen=True)
class StartVerdict:
    """Whether the start may skip the full quick_check, and why (one line for the log)."""

    skip_full_check: bool
    reason: str


def marker_path(db: str | Path) -> Path:
    p = Path(db)
    return p.with_name(p.name + MARKER_SUFFIX)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wal_empty(db: Path) -> bool:
    try:
        return os.stat(db.with_name(db.name + "-wal")).st_size == 0
    except FileNotFoundError:
        return True


def identify(db: str | Path) -> FileIdentity | str:
    """The identity of the database file now, or why it has none (missing, not an SQLite file...).
    Reads the header and the first and last page: O(1) in the file's size."""
    try:
        fd = os.open(db, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        return f"database file cannot be read ({exc.strerror})"
    try:
        st = os.fstat(fd)
        facts = parse_header(os.pread(fd, HEADER_BYTES, 0))
        if not isinstance(facts, HeaderFacts):
            return facts
        problem = header_problem(facts, st.st_size)
        if problem is not None:
            return problem
        first = os.pread(fd, facts.page_size, 0)
        last = os.pread(fd, facts.page_size, max(st.st_size - facts.page_size, 0))
    finally:
        os.close(fd)
    return FileIdentity(
        dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
        page_size=facts.page_size, change_counter=facts.change_counter, page_count=facts.page_count,
        schema_cookie=facts.schema_cookie, first_page_sha256=hashlib.sha256(first).hexdigest(),
        last_page_sha256=hashlib.sha256(last).hexdigest())


def write_marker(db: str | Path) -> str | None:
    """After a clean close: record the file's identity beside it (atomic: temp file, fsync, rename,
    fsync of the directory). Returns why no marker was written (a non-empty WAL, no file...), else None."""
    p = Path(db)
    if not _wal_empty(p):
        return "the write-ahead log is not empty"
    identity = identify(p)
    if isinstance(identity, str):
        return identity
    target = marker_path(p)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, encode_marker(identity))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        _fsync_dir(p.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return f"cannot write {target}: {exc.strerror}"
    return None


def remove_marker(db: str | Path) -> None:
    """Remove the marker (and fsync the removal): from now on the file may change."""
    target = marker_path(db)
    try:
        os.unlink(target)
    except FileNotFoundError:
        return
    _fsync_dir(target.parent)


def take_marker(db: str | Path) -> StartVerdict:
    """At start, before the database is opened for writing: judge the marker against the file, then
    remove it (a crash from here on leaves no marker, so the next start runs the full check)."""
    p = Path(db)
    target = marker_path(p)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return StartVerdict(False, "no clean-shutdown marker (first start, crash or kill)")
    except OSError as exc:
        remove_marker(p)
        return StartVerdict(False, f"clean-shutdown marker unreadable ({exc.strerror})")
    try:
        raw = os.read(fd, MAX_MARKER_BYTES + 1)
    finally:
        os.close(fd)
    remove_marker(p)
    try:
        recorded = decode_marker(raw)
    except ValueError as exc:
        return StartVerdict(False, f"clean-shutdown marker ignored: {exc}")
    if not _wal_empty(p):
        return StartVerdict(False, "the write-ahead log was written after the clean shutdown")
    current = identify(p)
    if isinstance(current, str):
        return StartVerdict(False, current)
    why = mismatch(recorded, current)
    if why is not None:
        return StartVerdict(False, f"database file changed since the clean shutdown ({why})")
    return StartVerdict(True, "database file unchanged since the clean shutdown")
