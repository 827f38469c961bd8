"""The `command_forwards` statements (halswarm.store.repos.forwards) against a real PostgreSQL: a queued
command is claimed exactly once however many supervisors race for it, only by the holder of its node,
its arguments leave the table when claimed, its result reaches the asker with a NOTIFY, an expired row is
never claimed, and the clean-up removes only rows long past their deadline."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest

from halswarm.store.engine import open_connection, parse_storage_url
from halswarm.store.repos.forwards import (
    CHANNEL,
    claim_forwards,
    delete_forward,
    finish_forward,
    forward_states,
    has_queued,
    held_nodes,
    purge_forwards,
    queue_forward,
)
from halswarm.store.repos.leases import held_elsewhere_liveness, renew_lease, take_lease

pytestmark = pytest.mark.timeout(120)


def row(cid: str, node: str = "n1", **kw: Any) -> dict[str, Any]:
    return {"id": cid, "node_id": node, "type": "session_status", "target": json.dumps({"session_id": "s1"}),
            "args": json.dumps({"api_key": "sk-live-123"}), "timeout_ms": 5000, "requested_by": "sup-b:2",
            "actor": "ops"} | kw


def test_a_queued_command_is_claimed_once_by_the_holder_and_answered(pg_conn: Any, pg_url: str) -> None:
    queue_forward(pg_conn, row("c1"), 30.0)
    queue_forward(pg_conn, row("c2", "n2"), 30.0)
    assert has_queued(pg_conn, ["n1"]) and not has_queued(pg_conn, ["n3"])
    assert claim_forwards(pg_conn, ["n3"], "sup-a:1") == []  # not its node
    got = claim_forwards(pg_conn, ["n1"], "sup-a:1")
    assert [g["id"] for g in got] == ["c1"]
    assert json.loads(got[0]["args"]) == {"api_key": "sk-live-123"} and 25.0 < got[0]["remaining"] <= 30.0
    assert got[0]["timeout_ms"] == 5000 and got[0]["requested_by"] == "sup-b:2" and got[0]["actor"] == "ops"
    # Claimed: no longer queued, its arguments gone from the table.
    assert pg_conn.execute("SELECT status, claimed_by, args FROM command_forwards WHERE id='c1'").fetchone() == (
        "running", "sup-a:1", None)
    assert claim_forwards(pg_conn, ["n1"], "sup-c:3") == []
    assert not has_queued(pg_conn, ["n1"])
    take_lease(pg_conn, "n1", "sup-a:1", 1000.0, 90.0)
    assert forward_states(pg_conn, ["c1", "c2", "nope"], 1001.0) == {
        "c1": ("running", "sup-a:1", None, "sup-a:1"), "c2": ("queued", None, None, None)}
    # Only the claimer writes the result; the asker sees it, and is woken by a NOTIFY at commit.
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        assert not finish_forward(pg_conn, "c1", "sup-c:3", '{"status": "success"}')
        assert finish_forward(pg_conn, "c1", "sup-a:1", '{"status": "success", "output": 1}')
        notes = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.payload for n in notes] == ["done c1"]
    assert forward_states(pg_conn, ["c1"], 1001.0)["c1"][:3] == ("done", "sup-a:1",
                                                                  '{"status": "success", "output": 1}')
    delete_forward(pg_conn, "c1")
    assert forward_states(pg_conn, ["c1"], 1001.0) == {}
    assert not finish_forward(pg_conn, "c1", "sup-a:1", "{}")  # answered and deleted: a late result is dropped


def test_racing_claimers_take_each_command_exactly_once(pg_conn: Any, pg_url: str) -> None:
    for i in range(200):
        queue_forward(pg_conn, row(f"c{i}"), 60.0)
    claimed: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def claimer(k: int) -> None:
        c = open_connection(parse_storage_url(pg_url))
        try:
            start.wait(30)
            while True:
                c.execute("BEGIN")
                got = claim_forwards(c, ["n1"], f"sup-{k}:1")
                c.execute("COMMIT")
                if not got:
                    return
                claimed[k] += [g["id"] for g in got]
        finally:
            c.close()

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [cid for ids in claimed for cid in ids]
    assert sorted(every) == sorted(f"c{i}" for i in range(200))  # each once, none left
    assert len(set(every)) == len(every)
    owners = dict(pg_conn.execute("SELECT id, claimed_by FROM command_forwards").fetchall())
    for k, ids in enumerate(claimed):
        assert all(owners[cid] == f"sup-{k}:1" for cid in ids)


def test_an_expired_command_is_never_claimed_and_old_rows_are_purged(pg_conn: Any) -> None:
    queue_forward(pg_conn, row("old"), -120.0)  # its deadline passed two minutes ago
    queue_forward(pg_conn, row("late"), -1.0)
    queue_forward(pg_conn, row("live"), 60.0)
    assert [g["id"] for g in claim_forwards(pg_conn, ["n1"], "sup-a:1")] == ["live"]
    assert purge_forwards(pg_conn, 60.0) == 1  # only the one past its deadline by more than the grace
    assert sorted(r[0] for r in pg_conn.execute("SELECT id FROM command_forwards").fetchall()) == ["late", "live"]


def test_a_queued_notification_names_the_node(pg_conn: Any, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        pg_conn.execute("BEGIN")
        queue_forward(pg_conn, row("c1", "n7"), 30.0)
        assert list(listener.notifies(timeout=0.2, stop_after=1)) == []  # NOTIFY is delivered at COMMIT
        pg_conn.execute("COMMIT")
        notes = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.payload for n in notes] == ["queued n7"]


def test_held_nodes_name_the_holder_and_the_projects_it_stored(pg_conn: Any) -> None:
    pg_conn.execute("INSERT INTO nodes (id, hostname, status, projects) VALUES ('n1', 'n1', 'online', ?)",
                 (json.dumps([{"name": "p", "directory": "/p"}, {"name": "q", "directory": "/q"}]),))
    pg_conn.execute("INSERT INTO nodes (id, hostname, status, projects) VALUES ('n2', 'n2', 'online', 'not json')")
    take_lease(pg_conn, "n1", "sup-a:1", 1000.0, 90.0)
    take_lease(pg_conn, "n2", "sup-b:2", 1000.0, 90.0)
    take_lease(pg_conn, "n3", "sup-b:2", 1000.0, 90.0)  # registered, its node row not written yet
    take_lease(pg_conn, "n4", "sup-b:2", 900.0, 90.0)  # expired
    assert held_nodes(pg_conn, 1001.0) == {"n1": ("sup-a:1", frozenset({"p", "q"})), "n2": ("sup-b:2", frozenset()),
                                        "n3": ("sup-b:2", frozenset())}


def test_the_holder_stores_its_heartbeat_figures_for_the_leader(pg_conn: Any) -> None:
    pg_conn.execute("INSERT INTO nodes (id, hostname, status, last_heartbeat, resources) VALUES"
                 " ('n1', 'host-1', 'online', 1005.0, '{\"memory_percent\": 91}')")
    take_lease(pg_conn, "n1", "sup-b:2", 1000.0, 90.0)
    take_lease(pg_conn, "n2", "sup-a:1", 1000.0, 90.0)  # the leader's own: not "elsewhere"
    assert renew_lease(pg_conn, "n1", "sup-b:2", 1005.0, 90.0, '{"rss_bytes": 5e8}')
    assert held_elsewhere_liveness(pg_conn, 1006.0, "sup-a:1") == {
        "n1": (1005.0, '{"memory_percent": 91}', '{"rss_bytes": 5e8}', "host-1")}
    assert held_elsewhere_liveness(pg_conn, 2000.0, "sup-a:1") == {}  # expired
