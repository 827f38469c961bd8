"""Several supervisors on one PostgreSQL (issue 21): one leader at a time runs the periodic engines and
the leadership moves when the leader is killed; the supervisor an agent registered with last holds the
node's lease, the one it left drops its link and writes nothing over it; events are stored once.
Two real supervisor processes, real SimAgents over WebSocket, a private PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.agentsim import SimAgent
from tests.support.postgres import PostgresCluster
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(300)

# Policies checked every second: a leader's engine shows `checks` growing in GET /api/v1/policies.
POLICIES = {"check_interval_seconds": 1, "resume_on_idle": {"enabled": True, "idle_threshold_seconds": 3600}}


def pg_rows(cluster: PostgresCluster, url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, password=cluster.password) as conn:
        return conn.execute(sql, args).fetchall()


def shared_supervisor(tmp_path: Path, name: str, cluster: PostgresCluster, url: str,
                      server: dict[str, Any] | None = None) -> SupervisorProc:
    secret = tmp_path / f"{name}.password"
    secret.write_text(cluster.password + "\n")
    secret.chmod(0o600)
    return SupervisorProc(tmp_path / name, extra={"storage": {"url": url, "password_file": str(secret)},
                                                  "policies": POLICIES, "server": server or {}})


def leader_gauge(sup: SupervisorProc) -> float | None:
    text = httpx.get(sup.api + "/metrics", timeout=5).text
    m = re.search(r"^hal_o_swarm_leader (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def fleet_held(sup: SupervisorProc) -> float | None:
    """`hal_o_swarm_fleet_nodes_held`: the leader's count of nodes with a live lease (absent elsewhere)."""
    text = httpx.get(sup.api + "/metrics", timeout=5).text
    m = re.search(r"^hal_o_swarm_fleet_nodes_held (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def leadership(sup: SupervisorProc) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(sup.api + "/readyz", timeout=5).json()["components"]["leadership"]
    return body


def policy_checks(sup: SupervisorProc) -> dict[str, Any]:
    with sup.client() as c:
        data: dict[str, Any] = c.get("/api/v1/policies").json()["data"]
    return data


def lease_owner(cluster: PostgresCluster, url: str, node_id: str) -> str | None:
    rows = pg_rows(cluster, url, "SELECT owner FROM node_leases WHERE node_id = %s", node_id)
    return str(rows[0][0]) if rows else None


async def test_leader_engines_move_on_kill9_and_the_newest_connection_holds_the_lease(
        tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.password_database()
    a = shared_supervisor(tmp_path, "a", pg_cluster, url)
    b = shared_supervisor(tmp_path, "b", pg_cluster, url)
    agents: list[SimAgent] = []
    try:
        a.start(timeout=90)
        await until(lambda: leader_gauge(a) == 1.0, "A leader (the lock was free)", 60)
        b.start(timeout=90)
        assert leadership(b)["role"] == "follower" and leader_gauge(b) == 0.0
        assert leadership(a)["role"] == "leader" and leadership(a)["supervisor_id"].endswith(f":{a.ws_port}")
        # The leader's policy engine runs; the follower's does not (both would check every second).
        await until(lambda: policy_checks(a)["checks"] >= 3, "A's policy engine checking", 60)
        follower = policy_checks(b)
        assert follower["checks"] == 0 and not follower["running"]

        # n1 registers with A: A holds its lease and renews it with heartbeats.
        n1 = SimAgent(a.ws_url, a.agent_token, "n1", [("p", "/p")])
        agents.append(n1)
        await n1.connect()
        for seq in range(1, 101):
            await n1.send_event(seq, "message.part.delta", session_id="ses_ha", project="p")
        await n1.wait_acked(100, timeout=60)
        assert (lease_owner(pg_cluster, url, "n1") or "").endswith(f":{a.ws_port}")
        before = pg_rows(pg_cluster, url, "SELECT expires_at FROM node_leases WHERE node_id='n1'")[0][0]
        await n1.heartbeat()
        await until(lambda: pg_rows(pg_cluster, url, "SELECT expires_at FROM node_leases WHERE node_id='n1'")[0][0]
                    > before, "n1's lease renewed by its heartbeat", 60)

        # n2 registers with A, then (a newer connection) with B: B holds it; A drops its link at the next
        # heartbeat and leaves the node's stored state to B.
        n2_on_a = SimAgent(a.ws_url, a.agent_token, "n2", [("q", "/q")])
        n2_on_b = SimAgent(b.ws_url, b.agent_token, "n2", [("q", "/q")])
        agents += [n2_on_a, n2_on_b]
        await n2_on_a.connect()
        assert (lease_owner(pg_cluster, url, "n2") or "").endswith(f":{a.ws_port}")
        await n2_on_b.connect()
        assert (lease_owner(pg_cluster, url, "n2") or "").endswith(f":{b.ws_port}")
        await n2_on_a.heartbeat()
        assert n2_on_a._reader is not None
        await asyncio.wait_for(asyncio.shield(n2_on_a._reader), 60)  # A closes the connection
        assert n2_on_a.ws is not None and n2_on_a.ws.close_code == 4002
        assert (lease_owner(pg_cluster, url, "n2") or "").endswith(f":{b.ws_port}")
        assert pg_rows(pg_cluster, url, "SELECT status FROM nodes WHERE id='n2'") == [("online",)]
        assert pg_rows(pg_cluster, url, "SELECT count(*) FROM events WHERE node_id='n2' AND type='node.offline'"
                       ) == [(0,)]
        assert "held by another supervisor now" in a.log_path.read_text(errors="replace")
        # The fleet-wide count (n1 on A, n2 on B) comes from the leader only: no double count in a sum.
        await until(lambda: fleet_held(a) == 2.0, "the leader counting both nodes fleet-wide", 60)
        assert fleet_held(b) is None

        # kill -9 the leader: the follower takes the lock once A's session is gone.
        t0 = time.monotonic()
        a.kill9()
        await until(lambda: leader_gauge(b) == 1.0, "B leader after A was killed", 90, interval=0.05)
        took = time.monotonic() - t0
        print(f"\nleadership moved {took:.2f} s after kill -9 of the leader")
        assert leadership(b)["role"] == "leader"
        await until(lambda: policy_checks(b)["checks"] >= 1, "B's policy engine checking", 60)

        # n1 moves to B and resumes after what A acked: every event stored once.
        await n1.close()
        n1b = SimAgent(b.ws_url, b.agent_token, "n1", [("p", "/p")])
        agents.append(n1b)
        reg = await n1b.connect(last_acked_seq=n1.acked)
        assert int(reg.resume_from_seq) == 100
        for seq in range(101, 151):
            await n1b.send_event(seq, "message.part.delta", session_id="ses_ha", project="p")
        await n1b.wait_acked(150, timeout=60)
        assert (lease_owner(pg_cluster, url, "n1") or "").endswith(f":{b.ws_port}")
        got = pg_rows(pg_cluster, url, "SELECT seq, count(*) FROM events WHERE node_id='n1' AND seq IS NOT NULL"
                      " GROUP BY seq ORDER BY seq")
        assert [r[0] for r in got] == list(range(1, 151)) and {r[1] for r in got} == {1}
        await until(lambda: fleet_held(b) == 2.0, "B, now the leader, counting the fleet", 60)
    finally:
        for ag in agents:
            await ag.close()
        a.stop()
        b.stop()


async def test_a_node_left_on_a_dead_supervisor_is_swept_offline_by_the_leader(
        tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.password_database()
    fast = {"heartbeat_interval_sec": 2, "heartbeat_timeout_count": 3}  # lease TTL 6 s, swept every 2 s
    a = shared_supervisor(tmp_path, "a", pg_cluster, url, fast)
    b = shared_supervisor(tmp_path, "b", pg_cluster, url, fast)
    n3 = SimAgent("", "", "n3")
    try:
        a.start(timeout=90)
        await until(lambda: leader_gauge(a) == 1.0, "A leader", 60)
        b.start(timeout=90)
        n3 = SimAgent(a.ws_url, a.agent_token, "n3", [("r", "/r")])
        await n3.connect()
        assert (lease_owner(pg_cluster, url, "n3") or "").endswith(f":{a.ws_port}")
        # B's restart verdict left A's live node online.
        assert pg_rows(pg_cluster, url, "SELECT status FROM nodes WHERE id='n3'") == [("online",)]
        a.kill9()  # with its agent's connection: nobody releases n3's lease
        await n3.close()
        await until(lambda: leader_gauge(b) == 1.0, "B leader", 90)
        await until(lambda: pg_rows(pg_cluster, url, "SELECT status FROM nodes WHERE id='n3'") == [("offline",)],
                    "n3 swept offline once its lease expired", 90)
        assert lease_owner(pg_cluster, url, "n3") is None
        await until(lambda: pg_rows(pg_cluster, url, "SELECT count(*) FROM events WHERE node_id='n3' AND "
                                    "type='node.offline' AND data::text LIKE %s", "%lease expired%") == [(1,)],
                    "one node.offline event for n3", 60)
    finally:
        await n3.close()
        a.stop()
        b.stop()


def test_sqlite_supervisor_is_always_the_leader(tmp_path: Path) -> None:
    sup = SupervisorProc(tmp_path / "s", extra={"policies": POLICIES})
    try:
        sup.start(timeout=60)
        assert leader_gauge(sup) == 1.0
        components = httpx.get(sup.api + "/readyz", timeout=5).json()["components"]
        assert "leadership" not in components  # nothing to elect: one supervisor per file
        assert policy_checks(sup)["running"]
    finally:
        sup.stop()
