"""The writer watches its database file: deleted, replaced or read-only means no commit (so no ack)."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest

from halswarm.store.db import connect
from halswarm.store.guard import DELETED, READ_ONLY, REPLACED, StorageFault, StorageGuard, startup_problem
from halswarm.store.migrations import migrate
from halswarm.store.rescue import rescue_copy
from halswarm.store.writer import Writer


def _insert(n: int):  # type: ignore[no-untyped-def]
    return lambda c: c.execute("INSERT INTO t(v) VALUES (?)", (float(n),))


async def _with_writer(path, body):  # type: ignore[no-untyped-def]
    conn = connect(path)
    migrate(conn)
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v REAL)")
    faults: list[StorageFault] = []
    w = Writer(conn, guard=StorageGuard(path), on_fault=faults.append)
    w.start(asyncio.get_running_loop())
    try:
        return await body(w, conn, faults)
    finally:
        await w.stop()
        conn.close()


def _count(path) -> int:  # type: ignore[no-untyped-def]
    c = sqlite3.connect(path)
    try:
        return c.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        c.close()


def test_deleted_file_fails_every_commit_and_the_open_data_can_be_rescued(tmp_path):
    path = tmp_path / "s.db"

    async def body(w, conn, faults):  # type: ignore[no-untyped-def]
        await w.run(_insert(1))
        await w.run(_insert(2))
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"s.db{suffix}").unlink(missing_ok=True)
        with pytest.raises(StorageFault) as e:
            await w.run(_insert(3))
        assert e.value.kind == DELETED and "deleted" in str(e.value)
        assert "deleted" in (w.health() or "")
        with pytest.raises(StorageFault):  # sticky: nothing commits any more
            await w.run(_insert(4))
        assert [f.kind for f in faults] == [DELETED]  # reported once
        return await w.run_raw(lambda c: rescue_copy(c, path, DELETED))

    saved = asyncio.run(asyncio.wait_for(_with_writer(path, body), 20))
    assert saved == path and _count(path) == 2  # both committed rows, nothing after the deletion


def test_replaced_file_is_a_fault_and_the_rescue_stays_beside_it(tmp_path):
    path = tmp_path / "s.db"

    async def body(w, conn, faults):  # type: ignore[no-untyped-def]
        await w.run(_insert(1))
        other = tmp_path / "other.db"
        sqlite3.connect(other).close()
        os.replace(other, path)
        with pytest.raises(StorageFault) as e:
            await w.run(_insert(2))
        assert e.value.kind == REPLACED
        return await w.run_raw(lambda c: rescue_copy(c, path, REPLACED))

    saved = asyncio.run(asyncio.wait_for(_with_writer(path, body), 20))
    assert saved != path and saved.parent == path.parent and _count(saved) == 1


def test_read_only_file_stops_commits_until_writable_again(tmp_path):
    path = tmp_path / "s.db"

    async def body(w, conn, faults):  # type: ignore[no-untyped-def]
        await w.run(_insert(1))
        path.chmod(0o444)
        try:
            with pytest.raises(StorageFault) as e:
                await w.run(_insert(2))
            assert e.value.kind == READ_ONLY and "read-only" in (w.health() or "")
        finally:
            path.chmod(0o644)
        assert w.health() is None  # cleared by itself
        await w.run(_insert(3))

    asyncio.run(asyncio.wait_for(_with_writer(path, body), 20))
    c = sqlite3.connect(path)
    assert [r[0] for r in c.execute("SELECT v FROM t ORDER BY id")] == [1.0, 3.0]
    c.close()


def test_a_failing_job_is_reported_by_health(tmp_path):
    path = tmp_path / "s.db"

    async def body(w, conn, faults):  # type: ignore[no-untyped-def]
        assert w.health() is None

        def bad(c):  # type: ignore[no-untyped-def]
            raise sqlite3.OperationalError("disk I/O error")

        with pytest.raises(sqlite3.OperationalError):
            await w.run(bad)
        await w.run(_insert(1))  # a later good batch does not hide it at once
        assert "disk I/O error" in (w.health() or "")

    asyncio.run(asyncio.wait_for(_with_writer(path, body), 20))


def test_startup_problem_names_what_is_unusable(tmp_path):
    db = tmp_path / "d" / "s.db"
    assert startup_problem(db) is None  # missing directory: created later
    db.parent.mkdir()
    sqlite3.connect(db).close()
    assert startup_problem(db) is None
    db.chmod(0o444)
    assert "read-only" in (startup_problem(db) or "")
    db.chmod(0o644)
    db.parent.chmod(0o000)
    try:
        assert "cannot be searched" in (startup_problem(db) or "")
    finally:
        db.parent.chmod(0o755)
    db.parent.chmod(0o555)
    try:
        assert "not writable" in (startup_problem(db) or "")
    finally:
        db.parent.chmod(0o755)


def test_a_python_error_in_a_job_is_that_jobs_own(tmp_path):
    path = tmp_path / "s.db"

    async def body(w, conn, faults):  # type: ignore[no-untyped-def]
        def bad(c):  # type: ignore[no-untyped-def]
            raise KeyError("not found")

        with pytest.raises(KeyError):
            await w.run(bad)
        assert w.health() is None

    asyncio.run(asyncio.wait_for(_with_writer(path, body), 20))
