"""WAL checkpoints off the writer's commit path (store/checkpoint.py), and the writer's "jobs are
waiting" signal that retention steps give way to."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from typing import Any

from halswarm.store.checkpoint import WalCheckpointer
from halswarm.store.db import connect, final_checkpoint
from halswarm.store.migrations import migrate
from halswarm.store.repos.events import insert_events
from halswarm.store.writer import Writer
from tests.support.waiting import on_loop, until

PAYLOAD = '{"text": "' + "x" * 400 + '"}'


def _rows(start: int, n: int) -> list[tuple[Any, ...]]:
    return [("n", i, f"e{i}", "s", "p", "t", PAYLOAD, 1.0 * i, 1.0 * i) for i in range(start, start + n)]


async def test_checkpoints_run_in_their_own_thread_and_the_writer_keeps_a_backstop(tmp_path):
    path = tmp_path / "c.db"
    conn = connect(path)
    migrate(conn)
    ckpt = WalCheckpointer(path, interval=0.05, backstop_pages=5000)
    writer = Writer(conn, checkpointer=ckpt)
    writer.start(asyncio.get_running_loop())
    try:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 5000
        assert any(t.name == "db-checkpoint" for t in threading.enumerate())
        for k in range(5):
            await writer.run(lambda c, k=k: insert_events(c, _rows(1 + 200 * k, 200)))
        await until(lambda: ckpt.last is not None and ckpt.last[2] > 0,
                    "a background checkpoint copied the committed frames", 30, interval=0.02)
        assert ckpt.last_error is None
    finally:
        await writer.stop()
    assert not any(t.name == "db-checkpoint" for t in threading.enumerate())
    # stopped with the writer: nothing holds the WAL back from the clean stop's TRUNCATE checkpoint
    assert final_checkpoint(conn)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1000
    conn.close()


def test_checkpoint_once_reports_what_it_copied(tmp_path):
    path = tmp_path / "o.db"
    conn = connect(path)
    migrate(conn)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("BEGIN")
    insert_events(conn, _rows(1, 300))
    conn.execute("COMMIT")
    ckpt = WalCheckpointer(path)
    other = connect(path)
    try:
        busy, frames, copied = ckpt.checkpoint_once(other) or (1, 0, 0)
        assert busy == 0 and frames > 0 and copied == frames
        assert ckpt.runs == 1 and ckpt.last == (0, frames, copied)
        assert ckpt.checkpoint_once(other) == (0, frames, frames)  # nothing new: the same figures
        assert ckpt.runs == 2
    finally:
        other.close()
        conn.close()


def test_a_failing_checkpoint_is_reported_not_raised(tmp_path):
    path = tmp_path / "f.db"
    conn = connect(path)
    ckpt = WalCheckpointer(path)
    conn.close()  # a closed connection: every statement fails
    assert ckpt.checkpoint_once(conn) is None
    assert ckpt.last_error


async def test_has_waiting_sees_a_job_queued_behind_the_running_one(tmp_path):
    conn = connect(tmp_path / "w.db")
    writer = Writer(conn)
    loop = asyncio.get_running_loop()
    writer.start(loop)
    running, queued = threading.Event(), threading.Event()

    def first(c: sqlite3.Connection) -> tuple[bool, bool]:
        alone = writer.has_waiting()
        running.set()
        queued.wait(30)
        return alone, writer.has_waiting()

    try:
        assert await writer.run(lambda c: writer.has_waiting()) is False
        fut = writer.submit(first)
        await on_loop(running.is_set, "the first job to run", 30)
        second = writer.submit(lambda c: 2)
        queued.set()
        assert await fut == (False, True)
        assert await second == 2
    finally:
        queued.set()
        await writer.stop()
        conn.close()


async def test_starting_the_checkpointer_keeps_the_writers_locks(tmp_path):
    """Opening the checkpoint connection must not drop this process's POSIX locks on the file: without
    them, another process closing its last connection takes the database as unused and deletes the WAL."""
    path = tmp_path / "l.db"
    conn = connect(path)
    migrate(conn)
    writer = Writer(conn, checkpointer=WalCheckpointer(path, interval=60))
    writer.start(asyncio.get_running_loop())
    try:
        await writer.run(lambda c: insert_events(c, _rows(1, 10)))
        other = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                 "c.execute('SELECT count(*) FROM events').fetchone(); c.close()")
        await asyncio.to_thread(subprocess.run, [sys.executable, "-c", other, str(path)], check=True, timeout=60)
        assert (tmp_path / "l.db-wal").exists(), "another process's close deleted the WAL under the writer"
        assert await writer.run(lambda c: insert_events(c, _rows(11, 1))) == 1
    finally:
        await writer.stop()
        conn.close()
