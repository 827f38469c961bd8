"""Keyset paging on a real database of each engine (SQLite file, PostgreSQL): a cursor walk returns every
row that existed when it started exactly once while another connection inserts between the pages (older,
newer and equal timestamps); offset pages answer what OFFSET answered; the total is capped and flagged;
the queries use the indexes (SQLite's plans)."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections import Counter

import pytest

from halswarm.core.paging import PageRequest, decode_cursor
from halswarm.store.repos import keyset
from halswarm.store.repos.audit import insert_audit, page_audit
from halswarm.store.repos.events import EventRow, _event_filters, insert_events, page_events
from tests.support.store_engines import StoreDb
from tests.support.waiting import wait_for

BASE = 1_700_000_000.0


def _row(n: int, node: str, ts: float, seq: int) -> EventRow:
    return (node, seq, f"e{n}", f"s{n % 3}", "proj", "t.x" if n % 2 else "t.y", "{}", ts, ts)


@pytest.fixture
def db(store_db: StoreDb) -> StoreDb:
    c = store_db.migrated()
    # 3 rows share each timestamp, so the id breaks ties; two nodes interleave.
    insert_events(c, [_row(i, "n1" if i % 4 else "n2", BASE + i // 3, i) for i in range(300)])
    c.commit()
    c.close()
    return store_db


def _walk(conn: sqlite3.Connection, filters: dict[str, object], order: str, size: int,
          between: threading.Event | None = None, done: list[int] | None = None) -> list[dict]:
    """Walk by `next` cursors; with `between`, ask the writer for one insert and wait for it per page."""
    seen: list[dict] = []
    req = PageRequest(size)
    while True:
        page, _, _ = page_events(conn, filters, req, order)
        seen.extend(page.items)
        if page.next is None:
            return seen
        if between is not None and done is not None:
            mark = done[0]
            between.set()
            wait_for(lambda m=mark: done[0] > m, timeout=10, what="an insert between two pages", interval=0.001)
        req = PageRequest(size, after=decode_cursor(page.next, "fi"))


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_cursor_walk_sees_each_row_once_while_inserts_run(db: StoreDb, order: str) -> None:
    reader = db.connect(readonly=True)
    before = {ev["id"] for ev in _walk(reader, {"node_id": "n1"}, order, 1000)}
    stop, between = threading.Event(), threading.Event()
    done = [0]
    inserts = itertools.count(10_000)

    def writer() -> None:
        w = db.connect()
        while not stop.is_set():
            between.wait(5)
            between.clear()
            n = next(inserts)
            # one row in the past, one at the walk's frontier, one in the future
            insert_events(w, [_row(n, "n1", BASE + (n % 100), n), _row(n + 50_000, "n1", BASE + 150, n + 50_000),
                              _row(n + 90_000, "n1", BASE + 10_000 + n, n + 90_000)])
            w.commit()
            done[0] += 1
        w.close()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        walked = _walk(reader, {"node_id": "n1"}, order, 7, between, done)
    finally:
        stop.set()
        between.set()
        t.join(10)
    ids = Counter(ev["id"] for ev in walked)
    assert max(ids.values()) == 1, "a row was returned twice"
    assert before <= set(ids), f"rows lost: {sorted(before - set(ids))[:10]}"
    keys = [(ev["timestamp"], ev["id"]) for ev in walked]
    assert keys == sorted(keys, reverse=order == "desc")
    assert done[0] > 10  # the writer did insert between the pages


def test_walking_back_from_the_end_mirrors_the_forward_walk(db: StoreDb) -> None:
    conn = db.connect(readonly=True)
    forward = [ev["id"] for ev in _walk(conn, {}, "desc", 11)]
    back: list[int] = []
    page, _, _ = page_events(conn, {}, PageRequest(11, offset=290), "desc")
    back = [ev["id"] for ev in page.items]
    while page.prev is not None:
        page, _, _ = page_events(conn, {}, PageRequest(11, before=decode_cursor(page.prev, "fi")), "desc")
        back = [ev["id"] for ev in page.items] + back
    assert back == forward


@pytest.mark.parametrize("filters", [{}, {"node_id": "n2"}, {"project": "proj", "type": "t.x", "since": BASE + 40},
                                     {"type": "t.*"}, {"session_id": "s1"}])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_offset_pages_answer_what_offset_answered(db: StoreDb, filters: dict[str, object], order: str) -> None:
    conn = db.connect(readonly=True)
    where, args = _event_filters(filters)
    d = "DESC" if order == "desc" else "ASC"
    for offset in (0, 1, 37, 140, 299, 400):
        want = [r["id"] for r in conn.execute(
            f"SELECT id FROM events{where} ORDER BY ts {d}, id {d} LIMIT 20 OFFSET ?", [*args, offset])]
        page, total, estimate = page_events(conn, filters, PageRequest(20, offset), order)
        assert [ev["id"] for ev in page.items] == want
        assert (total, estimate) == (conn.execute(f"SELECT COUNT(*) FROM events{where}", args).fetchone()[0], False)


def test_total_is_capped_and_flagged(db: StoreDb, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = db.connect(readonly=True)
    monkeypatch.setattr(keyset, "TOTAL_CAP", 100)
    assert page_events(conn, {}, PageRequest(5))[1:] == (100, True)
    assert page_events(conn, {"node_id": "n2"}, PageRequest(5))[1:] == (75, False)


def test_audit_pages_newest_first_by_cursor(store_conn: sqlite3.Connection) -> None:
    conn = store_conn
    for i in range(25):
        insert_audit(conn, {"timestamp": BASE + i // 2, "actor": "op", "action": "kill_session", "target": str(i),
                            "result": "success"})
    conn.commit()
    seen, req = [], PageRequest(4)
    while True:
        page, total, _ = page_audit(conn, {"actor": "op"}, req)
        seen += [a["target"] for a in page.items]
        if page.next is None:
            break
        req = PageRequest(4, after=decode_cursor(page.next, "fi"))
    assert seen == [str(i) for i in reversed(range(25))] and total == 25


@pytest.mark.parametrize(("filters", "index"), [
    ({"node_id": "n1"}, "idx_events_node_ts"),
    ({"project": "p", "type": "t", "since": 1.0}, "idx_events_project_type_ts"),
    ({}, "idx_events_ts"),
])
def test_list_queries_seek_an_index_without_sorting(db: StoreDb, filters: dict[str, object], index: str) -> None:
    if db.is_pg:
        pytest.skip("SQLite's query plans; PostgreSQL plans by its statistics (a 300-row table is scanned)")
    conn = db.connect(readonly=True)
    where, args = _event_filters(filters)
    for req in (PageRequest(100), PageRequest(100, after=(BASE, 5)), PageRequest(100, offset=50)):
        sql, params = keyset.keyset_select("events", ("ts", "id"), where, args, req, descending=False)
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert index in plan, plan
        if not req.offset:  # the offset page sorts its own (at most limit + 1) rows, nothing more
            assert "TEMP B-TREE" not in plan, plan
