"""The clean-shutdown marker on a real SQLite file: written after a clean close, taken (and removed) at
start, and refused whenever the file may have changed since (including a same-size write whose mtime
was put back with os.utime)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from halswarm.store.clean_marker import marker_path, take_marker, write_marker


def _db(path: Path, rows: int = 2000) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE INDEX t_v ON t(v)")
    with conn:
        conn.executemany("INSERT INTO t(v) VALUES (?)", [(f"value-{i:06d}" * 5,) for i in range(rows)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def test_clean_close_then_take_skips_once(tmp_path: Path) -> None:
    db = _db(tmp_path / "s.db")
    assert write_marker(db) is None and marker_path(db).exists()
    assert oct(marker_path(db).stat().st_mode & 0o777) == "0o600"
    verdict = take_marker(db)
    assert verdict.skip_full_check, verdict.reason
    assert not marker_path(db).exists()  # taken: a crash from now on leaves no marker
    assert not take_marker(db).skip_full_check


def test_same_size_write_with_mtime_put_back_is_caught(tmp_path: Path) -> None:
    db = _db(tmp_path / "s.db")
    assert write_marker(db) is None
    st = os.stat(db)
    with open(db, "r+b") as f:  # garbage in the middle of the file: header, first and last page intact
        f.seek(st.st_size // 2)
        f.write(os.urandom(1024))
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(db).st_size == st.st_size and os.stat(db).st_mtime_ns == st.st_mtime_ns
    verdict = take_marker(db)
    assert not verdict.skip_full_check and "ctime_ns differs" in verdict.reason


def test_a_write_through_sqlite_while_stopped_is_caught(tmp_path: Path) -> None:
    db = _db(tmp_path / "s.db")
    assert write_marker(db) is None
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE t SET v = 'x' WHERE id = 5")
    conn.close()
    assert not take_marker(db).skip_full_check


def test_a_wal_left_beside_the_file_is_caught(tmp_path: Path) -> None:
    db = _db(tmp_path / "s.db")
    assert write_marker(db) is None
    Path(f"{db}-wal").write_bytes(b"\0" * 32)
    verdict = take_marker(db)
    assert not verdict.skip_full_check and "write-ahead log" in verdict.reason
    Path(f"{db}-wal").write_bytes(b"\0" * 32)
    assert "not empty" in str(write_marker(db))


def test_a_marker_of_another_file_is_ignored(tmp_path: Path) -> None:
    db = _db(tmp_path / "s.db")
    assert write_marker(db) is None
    copy = tmp_path / "copy.db"
    shutil.copy2(db, copy)  # same bytes and mtime, another inode
    os.replace(copy, db)
    verdict = take_marker(db)
    assert not verdict.skip_full_check and "ino differs" in verdict.reason


def test_a_symlinked_or_garbage_marker_is_not_trusted(tmp_path: Path) -> None:
    db = _db(tmp_path / "s.db")
    assert write_marker(db) is None
    real = tmp_path / "elsewhere"
    os.replace(marker_path(db), real)
    marker_path(db).symlink_to(real)
    assert not take_marker(db).skip_full_check and not marker_path(db).exists()
    marker_path(db).write_text("{garbage")
    verdict = take_marker(db)
    assert not verdict.skip_full_check and "ignored" in verdict.reason


def test_no_marker_for_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    db.write_bytes(b"hello" * 1000)
    assert "magic" in str(write_marker(db)) and not marker_path(db).exists()
