"""Durable outbox: seq assignment, durability, acks, resume, bounds, corruption, async wrapper."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from halswarm.agent.outbox import AsyncOutbox, Outbox, OutboxLockedError
from halswarm.protocol import MAX_FRAME_BYTES, Event, decode, encode

pytestmark = pytest.mark.timeout(30)


def add(ob: Outbox, n: int, etype: str = "session.status") -> list[Event]:
    out = []
    for i in range(n):
        ev = ob.append(f"evt-{ob.next_seq}-{i}", etype, "ses_1", "alpha", {"i": i}, 1_700_000_000.0 + i)
        assert ev is not None
        out.append(ev)
    return out


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


def rows_on_disk(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
    finally:
        conn.close()


def aside_files(d: Path) -> list[Path]:
    return [p for p in d.glob("outbox.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]


@pytest.fixture
def ob(tmp_path: Path):
    box = Outbox(tmp_path)
    yield box
    box.close()


# ------------------------------------------------------------------ basics


def test_append_assigns_gap_free_seq_from_one(ob: Outbox) -> None:
    events = add(ob, 5)
    assert seqs(events) == [1, 2, 3, 4, 5]
    ev = events[0]
    assert (ev.event_id, ev.type, ev.session_id, ev.project, ev.data) == (
        "evt-1-0",
        "session.status",
        "ses_1",
        "alpha",
        {"i": 0},
    )
    assert ev.timestamp == 1_700_000_000.0
    assert ob.size() == 5 and ob.next_seq == 6 and ob.last_acked_seq == 0


def test_append_is_committed_before_it_returns(ob: Outbox) -> None:
    add(ob, 3)
    # A separate connection sees the rows at once: nothing is waiting in an open transaction.
    assert rows_on_disk(ob.path) == [1, 2, 3]


def test_pending_order_after_and_limit(ob: Outbox) -> None:
    add(ob, 10)
    assert seqs(ob.pending()) == list(range(1, 11))
    assert seqs(ob.pending(after_seq=4, limit=3)) == [5, 6, 7]
    assert ob.pending(after_seq=10) == []
    ev = ob.pending(after_seq=0, limit=1)[0]
    assert ev.data == {"i": 0} and ev.session_id == "ses_1"


def test_pending_events_are_valid_protocol_events(ob: Outbox) -> None:
    add(ob, 2)
    for ev in ob.pending():
        assert decode(encode(ev)).payload == ev


def test_defaults_event_id_and_timestamp(ob: Outbox) -> None:
    before = time.time()
    ev = ob.append(None, "x.y")
    assert ev is not None and len(ev.event_id) == 32 and ev.timestamp >= before
    assert ev.session_id is None and ev.project is None and ev.data is None


@pytest.mark.parametrize("bad", ["", None, 5])
def test_event_type_required(ob: Outbox, bad: object) -> None:
    with pytest.raises(ValueError):
        ob.append("e", bad)  # type: ignore[arg-type]
    assert ob.next_seq == 1


def test_pragmas_and_file_mode(ob: Outbox) -> None:
    conn = ob._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert stat.S_IMODE(ob.path.stat().st_mode) == 0o600


# ------------------------------------------------------------------ restarts


def test_seq_survives_reopen(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        add(ob, 3)
    with Outbox(tmp_path) as ob:
        assert ob.next_seq == 4 and ob.size() == 3
        assert seqs(ob.pending()) == [1, 2, 3]
        assert seqs(add(ob, 2)) == [4, 5]


def test_gap_free_after_everything_was_acked_and_deleted(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        add(ob, 7)
        assert ob.ack(7) == 7
        assert ob.size() == 0
    assert rows_on_disk(tmp_path / "outbox.db") == []
    with Outbox(tmp_path) as ob:
        assert ob.last_acked_seq == 7
        assert seqs(add(ob, 1)) == [8]  # not 1: MAX(seq) alone would have restarted numbering


def test_crash_without_close_keeps_committed_events(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    add(ob, 4)
    ob.ack(2)
    # Simulate a crash: drop the connection and the lock without the orderly close path.
    ob._conn.close()
    import os

    os.close(ob._lock_fd)
    with Outbox(tmp_path) as again:
        assert (again.last_acked_seq, again.next_seq, seqs(again.pending())) == (2, 5, [3, 4])


def test_second_process_on_same_outbox_is_refused(tmp_path: Path) -> None:
    with Outbox(tmp_path), pytest.raises(OutboxLockedError):
        Outbox(tmp_path)
    Outbox(tmp_path).close()  # released after close


# ------------------------------------------------------------------ acks and resume


def test_ack_is_cumulative_and_idempotent(ob: Outbox) -> None:
    add(ob, 10)
    assert ob.ack(4) == 4
    assert seqs(ob.pending()) == [5, 6, 7, 8, 9, 10]
    assert ob.last_acked_seq == 4 and ob.size() == 6
    assert ob.ack(3) == 0 and ob.ack(4) == 0
    assert ob.ack(10) == 6
    assert ob.size() == 0 and rows_on_disk(ob.path) == []


def test_ack_beyond_issued_seq_is_clamped(ob: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    add(ob, 3)
    assert ob.ack(99) == 3
    assert ob.last_acked_seq == 3
    assert seqs(add(ob, 1)) == [4]
    assert "beyond" in caplog.text


def test_resume_from_normal_deletes_through_seq(ob: Outbox) -> None:
    add(ob, 6)
    ob.resume_from(4)
    assert seqs(ob.pending()) == [5, 6] and ob.last_acked_seq == 4
    ob.resume_from(4)
    ob.resume_from(0 + 4)
    assert ob.size() == 2
    ob.resume_from(6)
    assert ob.size() == 0 and ob.next_seq == 7


def test_resume_from_lower_than_acked_keeps_going_with_what_is_left(
    ob: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Supervisor DB restored from a backup: it has less than we had acked."""
    events = add(ob, 10)
    ob.ack(8)
    with caplog.at_level(logging.WARNING):
        ob.resume_from(3)
    assert "restored" in caplog.text
    pending = ob.pending()
    # What we still hold (old 9, 10) follows the supervisor's state, contents unchanged.
    assert seqs(pending) == [4, 5]
    assert [e.event_id for e in pending] == [events[8].event_id, events[9].event_id]
    assert (ob.last_acked_seq, ob.next_seq) == (3, 6)
    assert seqs(add(ob, 1)) == [6]


def test_resume_from_beyond_our_numbering_renumbers_upwards(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Outbox lost (fresh file) while the supervisor holds seqs up to 500."""
    with Outbox(tmp_path) as ob:
        events = add(ob, 3)
        with caplog.at_level(logging.WARNING):
            ob.resume_from(500)
        assert "renumbering 3" in caplog.text
        assert seqs(ob.pending()) == [501, 502, 503]
        assert [e.event_id for e in ob.pending()] == [e.event_id for e in events]
        assert (ob.last_acked_seq, ob.next_seq) == (500, 504)
    with Outbox(tmp_path) as ob:  # persisted
        assert (ob.last_acked_seq, ob.next_seq, seqs(ob.pending())) == (500, 504, [501, 502, 503])


def test_resume_from_another_store_renumbers_and_never_deletes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a failover (issue 21): the supervisor that answers did not ack our events, so its resume seq
    (here inside our pending range) may count another store's events; nothing pending may go."""
    with Outbox(tmp_path) as ob:
        events = add(ob, 35)
        ob.ack(20)
        with caplog.at_level(logging.INFO):
            ob.resume_from(30, same_store=False)
        assert "failed over" in caplog.text
        pending = ob.pending()
        assert seqs(pending) == list(range(31, 46))
        assert [e.event_id for e in pending] == [e.event_id for e in events[20:]]
        assert (ob.last_acked_seq, ob.next_seq) == (30, 46)
        ob.resume_from(30, same_store=False)  # the same seq again: nothing moves
        assert seqs(ob.pending()) == list(range(31, 46))
    with Outbox(tmp_path) as ob:  # persisted
        assert (ob.last_acked_seq, ob.next_seq, len(ob.pending())) == (30, 46, 15)


def test_resume_renumber_with_overlapping_ranges(ob: Outbox) -> None:
    add(ob, 50)
    ob.ack(1)
    ob.resume_from(0)  # shift down by one: every new key collides with an old one
    assert seqs(ob.pending()) == list(range(1, 50))
    ob.resume_from(51)  # shift up past next_seq
    assert seqs(ob.pending()) == list(range(52, 101))


def test_resume_with_empty_outbox_moves_numbering(ob: Outbox) -> None:
    ob.resume_from(41)
    assert seqs(add(ob, 1)) == [42]


def test_resume_from_negative_is_rejected(ob: Outbox) -> None:
    with pytest.raises(ValueError):
        ob.resume_from(-1)


# ------------------------------------------------------------------ bounded size


def test_full_outbox_refuses_low_priority_first_then_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Outbox(tmp_path, max_events=10, low_priority_reserve=0.2) as ob:
        add(ob, 8, "message.part.delta")
        with caplog.at_level(logging.WARNING):
            assert ob.append("d", "message.part.delta") is None  # 8 >= 80 % of 10
        assert ob.dropped_total == 1
        assert "outbox full" in caplog.text
        add(ob, 2, "session.status")  # the reserve is still open to state events
        assert ob.append("s", "session.status") is None
        assert ob.append("d2", "message.part.delta") is None
        assert ob.dropped_total == 3 and ob.size() == 10
        # Refused events never got a seq: still gap-free.
        assert seqs(ob.pending()) == list(range(1, 11))
        ob.ack(5)
        assert seqs(add(ob, 1, "message.part.delta")) == [11]
        assert ob.dropped_total == 3


def test_full_warning_is_logged_once_per_episode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(tmp_path, max_events=2) as ob:
        add(ob, 2)
        with caplog.at_level(logging.WARNING):
            for _ in range(50):
                ob.append(None, "session.status")
        assert caplog.text.count("outbox full") == 1
        assert ob.dropped_total == 50


def test_oversized_event_data_is_truncated_to_fit_a_frame(ob: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    big = {"output": "x" * (MAX_FRAME_BYTES + 10)}
    ev = ob.append("big", "message.part.updated", "s", "p", big)
    assert ev is not None and ev.data["truncated"] is True
    assert ev.data["original_bytes"] > MAX_FRAME_BYTES
    stored = ob.pending()[0]
    assert stored.data == ev.data
    assert len(encode(stored).encode()) < MAX_FRAME_BYTES
    assert "truncated" in caplog.text


def test_event_just_under_the_limit_is_kept_whole(ob: Outbox) -> None:
    data = {"output": "y" * (MAX_FRAME_BYTES // 2)}
    ev = ob.append("half", "t", None, None, data)
    assert ev is not None and ev.data == data


# ------------------------------------------------------------------ atomicity and corruption


def test_failed_transaction_leaves_no_half_written_row(ob: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    add(ob, 2)

    def boom(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ob, "_write_meta", boom)  # fails after the INSERT, inside the transaction
    with pytest.raises(sqlite3.OperationalError):
        ob.append("e", "session.status")
    monkeypatch.undo()
    assert rows_on_disk(ob.path) == [1, 2]
    assert (ob.size(), ob.next_seq) == (2, 3)
    assert seqs(add(ob, 1)) == [3]


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["garbage", "bad-header"],
)
def test_corrupt_file_is_moved_aside_and_a_fresh_outbox_starts(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "outbox.db").write_bytes(content)
    with caplog.at_level(logging.ERROR), Outbox(tmp_path) as ob:
        assert ob.size() == 0 and seqs(add(ob, 1)) == [1]
    aside = aside_files(tmp_path)
    assert len(aside) == 1 and aside[0].read_bytes() == content
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage()
    assert "moved it to" in errors[0].getMessage()


def test_foreign_database_is_moved_aside(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "outbox.db")
    conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, blob TEXT)")
    conn.commit()
    conn.close()
    with Outbox(tmp_path) as ob:
        assert seqs(add(ob, 1)) == [1]
    assert len(aside_files(tmp_path)) == 1


def test_bad_meta_is_treated_as_corrupt(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        add(ob, 1)
    conn = sqlite3.connect(tmp_path / "outbox.db")
    conn.execute("UPDATE meta SET value = -5 WHERE key = 'next_seq'")
    conn.commit()
    conn.close()
    with Outbox(tmp_path) as ob:
        assert ob.next_seq == 1 and ob.size() == 0
    assert len(aside_files(tmp_path)) == 1


def test_repeated_corruption_never_crash_loops(tmp_path: Path) -> None:
    for _ in range(3):
        (tmp_path / "outbox.db").write_bytes(b"junk" * 1000)
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"outbox.db{suffix}").unlink(missing_ok=True)
        Outbox(tmp_path).close()
    assert len(aside_files(tmp_path)) == 3


def test_listener_sees_committed_events(ob: Outbox) -> None:
    seen: list[tuple[int, list[int]]] = []
    ob.add_listener(lambda ev: seen.append((ev.seq, rows_on_disk(ob.path))))
    add(ob, 2)
    assert seen == [(1, [1]), (2, [1, 2])]


# ------------------------------------------------------------------ async wrapper


async def test_async_wrapper_round_trip(tmp_path: Path) -> None:
    box = await AsyncOutbox.open(tmp_path, max_events=100)
    try:
        appended: list[int] = []
        box.on_append(lambda ev: appended.append(ev.seq))
        evs = [await box.append(None, "session.status", "s", "p", {"n": n}) for n in range(5)]
        assert [e.seq for e in evs if e] == [1, 2, 3, 4, 5]
        await asyncio.sleep(0)  # on_append callbacks are scheduled onto the loop
        assert appended == [1, 2, 3, 4, 5]
        assert seqs(await box.pending(2, 2)) == [3, 4]
        assert await box.ack(3) == 3
        await box.resume_from(4)
        assert await box.size() == 1 and box.last_acked_seq == 4 and box.next_seq == 6
        assert box.dropped_total == 0
    finally:
        await box.close()


async def test_async_wrapper_never_blocks_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = await AsyncOutbox.open(tmp_path)
    real_append = box.core.append
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def slow_append(*args: object) -> Event | None:
        threads.add(threading.get_ident())
        time.sleep(0.05)  # a slow fsync
        return real_append(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(box.core, "append", slow_append)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())
    try:
        start = time.monotonic()
        for _ in range(6):
            await box.append(None, "session.status")
        elapsed = time.monotonic() - start
        stop.set()
        await t
        assert elapsed >= 0.3
        assert ticks >= 20, ticks  # the loop kept running during ~0.3 s of blocking I/O
        assert loop_thread not in threads and len(threads) == 1  # one dedicated worker thread
    finally:
        await box.close()


async def test_concurrent_async_appends_are_gap_free(tmp_path: Path) -> None:
    box = await AsyncOutbox.open(tmp_path)
    try:
        results = await asyncio.gather(*(box.append(None, "t", data=i) for i in range(200)))
        assert sorted(e.seq for e in results if e) == list(range(1, 201))
    finally:
        await box.close()


async def test_on_append_fires_on_loop_for_appends_from_other_threads(tmp_path: Path) -> None:
    box = await AsyncOutbox.open(tmp_path)
    try:
        got = asyncio.Event()
        where: list[int] = []

        def cb(ev: Event) -> None:
            where.append(threading.get_ident())
            got.set()

        box.on_append(cb)
        await asyncio.to_thread(box.core.append, None, "from.thread")
        await asyncio.wait_for(got.wait(), 5)
        assert where == [threading.get_ident()]
    finally:
        await box.close()


@pytest.mark.process
def test_sigkill_mid_stream_loses_nothing_that_was_returned(tmp_path: Path) -> None:
    """A process killed with SIGKILL keeps every event whose append() had returned, gap-free."""
    import os
    import signal
    import subprocess
    import sys

    child = (
        "import sys\n"
        "from halswarm.agent.outbox import Outbox\n"
        "ob = Outbox(sys.argv[1])\n"
        "while True:\n"
        "    ev = ob.append(None, 'session.status', 's', 'p', {'pad': 'x' * 200})\n"
        "    print(ev.seq, flush=True)\n"
    )
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env, cwd=root
    )
    try:
        assert proc.stdout is not None
        returned = [int(proc.stdout.readline()) for _ in range(60)]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert returned == list(range(1, 61))
    with Outbox(tmp_path) as ob:  # the lock died with the process
        stored = seqs(ob.pending(limit=100_000))
        assert stored[:60] == returned
        assert stored == list(range(1, len(stored) + 1))
        assert ob.next_seq == len(stored) + 1
