"""Store: migrations with checksums, the batching writer, retention and restart loading."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from halswarm.core.model import Node, Session
from halswarm.store.db import DatabaseError, connect, quick_check
from halswarm.store.migrations import Migration, bundled_migrations, migrate
from halswarm.store.repos.audit import insert_audit
from halswarm.store.repos.commands import put_idempotent
from halswarm.store.repos.events import insert_events, last_assigned_event_id, max_seq
from halswarm.store.repos.nodes import set_node_last_seq, set_nodes_last_seq, upsert_node
from halswarm.store.repos.sessions import upsert_sessions
from halswarm.store.repos.state import load_state
from halswarm.store.writer import Writer
from halswarm.supervisor.features.retention.service import DAY, RetentionJob
from halswarm.supervisor.features.retention.settings import RetentionSettings
from tests.support.store_engines import table_names


def test_fresh_migrate_then_idempotent_rerun(store_db):
    conn = store_db.connect()
    assert migrate(conn) == [m.name for m in bundled_migrations(store_db.engine)]
    assert migrate(conn) == []
    if store_db.is_pg:
        applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        assert applied == len(bundled_migrations("postgresql"))
        return
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_changed_migration_is_refused(store_db):
    conn = store_db.connect()
    m1 = Migration("001", "001_x.sql", "CREATE TABLE t (a INTEGER);")
    migrate(conn, [m1])
    with pytest.raises(DatabaseError, match="checksum mismatch"):
        migrate(conn, [Migration("001", "001_x.sql", "CREATE TABLE t (a INTEGER, b TEXT);")])


def test_failed_migration_rolls_back_entirely(store_db):
    conn = store_db.connect()
    bad = Migration("001", "001_bad.sql", "CREATE TABLE ok (a INTEGER);\nCREATE TABLE ok (a INTEGER);\n")
    with pytest.raises(DatabaseError, match=r"001_bad\.sql failed"):
        migrate(conn, [bad])
    assert "ok" not in table_names(conn)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == 0


def test_database_from_a_newer_version_is_refused(store_db):
    conn = store_db.migrated()
    conn.execute("INSERT INTO schema_migrations VALUES ('999', '999_future.sql', 'x', 0)")
    with pytest.raises(DatabaseError, match="newer hal-supervisor"):
        migrate(conn)


def test_quick_check_reports_a_corrupt_file(tmp_path):
    path = tmp_path / "e.db"
    conn = connect(path)
    migrate(conn)
    conn.executemany("INSERT INTO events(node_id, seq, event_id, type, data, ts, received_at)"
                     " VALUES ('n', ?, 'e', 't', ?, 1, 1)", [(i, "x" * 500) for i in range(1, 2000)])
    assert quick_check(conn) is None
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    for off in range(4096 * 3, 4096 * 6):
        data[off] = 0xA5
    path.write_bytes(bytes(data))
    try:
        conn = sqlite3.connect(path)
        problem = quick_check(conn)
    except sqlite3.DatabaseError as exc:  # header damage can fail even earlier
        problem = str(exc)
    assert problem is not None


async def test_writer_groups_jobs_and_resolves_after_commit(store_db):
    conn = store_db.migrated()
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    seen_committed = []

    def job(i: int):  # type: ignore[no-untyped-def]
        def run(c: sqlite3.Connection) -> int:
            c.execute("INSERT INTO audit_log(timestamp, actor, action, target, result) VALUES (?, 'a', 'x', 't', 'ok')",
                      (i,))
            return i
        return run

    futs = [writer.submit(job(i)) for i in range(300)]
    results = await asyncio.gather(*futs)
    assert results == list(range(300))
    # Once a future resolved, another connection must see the row: the ack-after-commit rule.
    other = store_db.connect()
    seen_committed.append(other.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])
    other.close()
    assert seen_committed == [300]
    assert writer.batches < 300  # grouped
    await writer.stop()


async def test_writer_failed_job_does_not_poison_its_batch(store_db):
    conn = store_db.migrated()
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())

    def good(c):  # type: ignore[no-untyped-def]
        c.execute("INSERT INTO audit_log(timestamp, actor, action, target, result) VALUES (1,'a','x','t','ok')")

    def bad(c):  # type: ignore[no-untyped-def]
        c.execute("INSERT INTO audit_log(timestamp, actor, action, target, result) VALUES (1,'a','x','t','ok')")
        c.execute("INSERT INTO nowhere VALUES (1)")

    futs = [writer.submit(good), writer.submit(bad), writer.submit(good)]
    res = await asyncio.gather(*futs, return_exceptions=True)
    assert res[0] is None and res[2] is None and isinstance(res[1], sqlite3.OperationalError)
    assert conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == 2
    await writer.stop()


async def test_writer_does_not_block_the_event_loop(store_db):
    conn = store_db.migrated()
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())

    def slow(c):  # type: ignore[no-untyped-def]
        time.sleep(0.3)  # a slow fsync, say

    await writer.run(slow)
    stop = True
    await t
    assert ticks >= 20
    await writer.stop()


async def test_writer_stop_flushes_queued_jobs(store_db):
    conn = store_db.migrated()
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    futs = [writer.submit(lambda c: c.execute(
        "INSERT INTO audit_log(timestamp, actor, action, target, result) VALUES (1,'a','x','t','ok')"))
        for _ in range(50)]
    await writer.stop()
    await asyncio.gather(*futs)
    assert conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == 50
    assert threading.active_count() >= 1


async def test_retention_purges_old_rows_but_keeps_seq_high_water(store_db):
    conn = store_db.migrated()
    now = 1_800_000_000.0
    upsert_node(conn, Node(id="n", status="offline"))
    rows = [("n", i, f"e{i}", None, None, "t", "{}", now - 40 * DAY if i <= 5 else now - DAY, now) for i in
            range(1, 9)]
    insert_events(conn, rows)
    set_node_last_seq(conn, "n", 8)
    insert_audit(conn, {"timestamp": now - 100 * DAY, "actor": "a", "action": "x", "target": "t",
                                "result": "ok"})
    insert_audit(conn, {"timestamp": now - 10 * DAY, "actor": "a", "action": "x", "target": "t",
                                "result": "ok"})
    put_idempotent(conn, "old", "c", {}, now - 1)
    put_idempotent(conn, "new", "c", {}, now + 100)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    job = RetentionJob(writer, RetentionSettings(events_days=30, audit_days=90))
    result = await job.run_once(now=now)
    await writer.stop()
    assert result == {"events": 5, "audit": 1, "idempotency": 1, "commands": 0, "approvals": 0,
                      "pages_freed": result["pages_freed"]}
    assert [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")] == [6, 7, 8]
    assert max_seq(conn, "n") == 8


def test_load_state_marks_everything_offline_and_skips_bad_rows(store_db):
    conn = store_db.migrated()
    upsert_node(conn, Node(id="n1", status="online", last_heartbeat=1.0,
                                   projects=[{"name": "p", "directory": "/p"}]))
    if not store_db.is_pg:  # PostgreSQL's typed columns refuse text in a time column in the first place
        conn.execute("INSERT INTO nodes(id, status, connected_at) VALUES ('n2', 'online', 'garbage')")
    upsert_sessions(conn, [Session(id="s1", node_id="n1", project="p", status="running")])
    conn.execute("INSERT INTO sessions(id, node_id, status) VALUES ('s2', 'n1', 'no-such-status')")
    rep = load_state(conn)
    assert [n.id for n in rep.nodes] == ["n1"] and rep.nodes[0].status == "offline"
    assert rep.nodes[0].project_names == ["p"]
    assert [s.id for s in rep.sessions] == ["s1"]
    bad = sorted(rep.bad_rows)
    assert any("s2" in b for b in bad) and len(bad) == (1 if store_db.is_pg else 2)
    assert store_db.is_pg or any("n2" in b for b in bad)


def test_bulk_insert_and_last_seq_update_match_row_by_row(store_db):
    conn = store_db.migrated()
    for n in ("a", "b", "c"):
        upsert_node(conn, Node(id=n))
    rows = [(n, i, f"{n}{i}", None, None, "t", "{}", 1.0, 1.0) for n in ("a", "b") for i in range(1, 901)]
    assert insert_events(conn, rows) == 1800
    assert [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id")] == list(range(1, 1801))
    assert insert_events(conn, [*rows[:10], ("c", 1, "c1", None, None, "t", "{}", 1.0, 1.0)]) == 1
    # A batch with nothing ignored gets the ids right after last_event_id, in row order: the
    # ingestor builds its live-stream dicts from that (and re-reads when something was ignored).
    last = last_assigned_event_id(conn)
    fresh = [("c", i, f"c{i}", None, None, "t", "{}", 1.0, 1.0) for i in range(2, 12)]
    assert insert_events(conn, fresh) == 10
    got = conn.execute("SELECT id, event_id FROM events WHERE id > ? ORDER BY id", (last,)).fetchall()
    assert [tuple(r) for r in got] == [(last + k, f"c{k + 1}") for k in range(1, 11)]
    set_nodes_last_seq(conn, {"a": 900, "b": 5, "ghost": 7})
    set_nodes_last_seq(conn, {"a": 3})  # never lowers
    got = dict(conn.execute("SELECT id, last_seq FROM nodes"))
    assert got == {"a": 900, "b": 5, "c": 0}


def test_resent_events_in_the_writers_transaction_are_stored_once_and_the_rest_commits(store_db):
    """What the writer wraps around an ingest job (BEGIN, SAVEPOINT job ... RELEASE, COMMIT) with resent
    events in the batch: PostgreSQL's COPY refuses them, the rows go again ignoring the stored ones, and the
    transaction carries on (later writes in it commit, the high-water mark with them)."""
    conn = store_db.migrated()
    upsert_node(conn, Node(id="a"))

    def ev(i: int, ts: float | int | None = None):  # type: ignore[no-untyped-def]
        return ("a", i, f"a{i}", None, None, "t", "{}", float(i) if ts is None else ts, 1.0)

    assert insert_events(conn, [ev(1), ev(2), ev(3)]) == 3
    conn.execute("BEGIN")
    conn.execute("SAVEPOINT job")
    # 2 and 3 resent, 4 twice in one batch, 5 with an integer time (one type per array on the way back)
    assert insert_events(conn, [ev(2), ev(3), ev(4), ev(4), ev(5, 5)]) == 2
    set_nodes_last_seq(conn, {"a": 5})
    conn.execute("RELEASE job")
    assert insert_events(conn, [ev(6)]) == 1
    conn.execute("COMMIT")
    other = store_db.connect()
    got = [tuple(r) for r in other.execute("SELECT seq, event_id, ts, timestamp FROM events ORDER BY id")]
    assert got == [(i, f"a{i}", float(i), f"1970-01-01 00:00:0{i}") for i in range(1, 7)]
    assert other.execute("SELECT last_seq FROM nodes WHERE id = 'a'").fetchone()[0] == 5
    other.close()
