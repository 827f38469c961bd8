"""The PostgreSQL pieces of several supervisors on one database (issue 21), against a real server: the
node-lease statements (halswarm.store.repos.leases) and the leader lock (halswarm.store.leader_lock),
including a leader session killed by the server and a lock key that is not ours."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from halswarm.store.leader_lock import PgLeaderLock
from halswarm.store.repos.leases import (
    drop_owner_leases,
    live_leases,
    release_lease,
    renew_lease,
    sweep_expired,
    take_lease,
)
from halswarm.store.repos.nodes import mark_all_offline
from tests.support.postgres import PostgresCluster
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


def add_node(pg_conn: Any, node_id: str, status: str = "online") -> None:
    pg_conn.execute("INSERT INTO nodes (id, hostname, status) VALUES (?, ?, ?)", (node_id, node_id, status))


def test_the_newer_registration_takes_the_lease_and_the_old_owner_cannot_renew_or_release(pg_conn: Any) -> None:
    assert take_lease(pg_conn, "n1", "sup-a:1", 1000.0, 90.0) is None
    assert renew_lease(pg_conn, "n1", "sup-a:1", 1010.0, 90.0)
    assert take_lease(pg_conn, "n1", "sup-b:2", 1020.0, 90.0) == "sup-a:1"  # A's lease was live: taken over
    assert not renew_lease(pg_conn, "n1", "sup-a:1", 1030.0, 90.0)
    assert not release_lease(pg_conn, "n1", "sup-a:1")
    assert live_leases(pg_conn, 1030.0) == {"n1": "sup-b:2"}
    assert pg_conn.execute("SELECT expires_at FROM node_leases WHERE node_id='n1'").fetchone()[0] == 1110.0
    assert take_lease(pg_conn, "n1", "sup-b:2", 1040.0, 90.0) is None  # its own lease: a renewal, no takeover
    assert release_lease(pg_conn, "n1", "sup-b:2")
    assert live_leases(pg_conn, 1040.0) == {}


def test_an_expired_lease_is_taken_without_a_takeover_and_swept_with_its_node(pg_conn: Any) -> None:
    add_node(pg_conn, "n1")
    add_node(pg_conn, "n2")
    take_lease(pg_conn, "n1", "sup-a:1", 1000.0, 6.0)
    take_lease(pg_conn, "n2", "sup-a:1", 1000.0, 60.0)
    assert take_lease(pg_conn, "n3", "sup-b:2", 1010.0, 6.0) is None
    assert live_leases(pg_conn, 1010.0) == {"n2": "sup-a:1", "n3": "sup-b:2"}
    assert sweep_expired(pg_conn, 2000.0, keep=["n1", "n2"]) == ["n3"]  # kept: connected to the sweeper
    assert sweep_expired(pg_conn, 1010.0) == ["n1"]
    statuses = dict(pg_conn.execute("SELECT id, status FROM nodes ORDER BY id").fetchall())
    assert statuses == {"n1": "offline", "n2": "online"}
    assert sweep_expired(pg_conn, 1010.0) == []
    assert live_leases(pg_conn, 1010.0) == {"n2": "sup-a:1"}


def test_restart_drops_its_own_leases_and_keeps_nodes_held_elsewhere_online(pg_conn: Any) -> None:
    for n in ("n1", "n2", "n3"):
        add_node(pg_conn, n)
    take_lease(pg_conn, "n1", "sup-a:1", 1000.0, 90.0)  # the restarting supervisor's previous run
    take_lease(pg_conn, "n2", "sup-b:2", 1000.0, 90.0)  # another supervisor's live node
    assert drop_owner_leases(pg_conn, "sup-a:1") == ["n1"]
    held = live_leases(pg_conn, 1001.0)
    mark_all_offline(pg_conn, keep=set(held))
    statuses = dict(pg_conn.execute("SELECT id, status FROM nodes ORDER BY id").fetchall())
    assert statuses == {"n1": "offline", "n2": "online", "n3": "offline"}


def test_one_leader_lock_holder_and_it_moves_when_the_session_ends(pg_url: str, pg_cluster: PostgresCluster) -> None:
    a, b = PgLeaderLock(pg_url), PgLeaderLock(pg_url)
    try:
        assert a.try_acquire()
        assert not b.try_acquire()  # held by A's session
        assert a.held()
        assert a.try_acquire()  # re-entrant for its own session (never asked by the runner, harmless)
        a.close()  # the leader goes away: its session, and the lock, end (the server sees it a moment later)
        wait_for(b.try_acquire, "B takes the lock once A's session ended", 60)
        assert b.held()
        assert not a.try_acquire()  # a new session of A is a follower now
    finally:
        a.close()
        b.close()


def test_a_leader_whose_session_the_server_ended_knows_it_lost(pg_url: str, pg_cluster: PostgresCluster) -> None:
    a, b = PgLeaderLock(pg_url), PgLeaderLock(pg_url)
    try:
        assert a.try_acquire()
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:  # as a dead network would
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = 'hal-supervisor-leader' AND datname = %s",
                          (pg_url.rsplit("/", 1)[1],))
        with pytest.raises((psycopg.Error, OSError)):
            a.held()
        assert not a.held()  # the connection is dropped: not held, no exception
        wait_for(b.try_acquire, "B takes the lock once A's session was terminated", 60)
    finally:
        a.close()
        b.close()


def test_a_lock_released_behind_the_leaders_back_is_not_held(pg_url: str) -> None:
    a = PgLeaderLock(pg_url)
    try:
        assert a.try_acquire()
        assert a._conn is not None
        a._conn.execute("SELECT pg_advisory_unlock_all()")
        assert not a.held()
    finally:
        a.close()


def test_an_unreachable_server_raises_and_leaves_no_connection(pg_cluster: PostgresCluster) -> None:
    from tests.support.ports import free_port

    lock = PgLeaderLock(f"postgresql://hal@127.0.0.1:{free_port()}/none?connect_timeout=2")
    with pytest.raises(psycopg.Error):
        lock.try_acquire()
    assert lock._conn is None and not lock.held()
