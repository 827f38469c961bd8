"""Command forwarding among three real supervisors on one PostgreSQL, with a real agent (issue 21).

The agent (a real `hal-agent` in attach mode over a fake opencode) lists the three supervisors; it
registers with A, the leader. An operator command sent to C, which does not hold the node, reaches the
node through A and answers exactly as the same command sent to A. Then A is killed with SIGKILL
mid-stream, while a command sent to C waits for it (A frozen, so it never claimed it): the agent
registers with B, B runs that command, every event the agent saw acked is stored once, a new command
through C reaches the node on B, and the leader's engines run on a survivor.

"Within 5 s" (the issue's bound) is asserted on what the processes recorded, not on how fast this test
notices: the kill's wall-clock time here and the `acquired_at` of the node's lease, which B writes when
the agent registers with it (same host, same clock). The test waits for that registration on a
condition with a generous bound (60 s), so a busy machine delays only the test's observation, never the
figure it asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from halswarm.protocol import Heartbeat, encode
from tests.fakes.receivers import Receiver, receivers
from tests.integration.test_ha_leader import leader_gauge, pg_rows, policy_checks, shared_supervisor
from tests.support.agent_proc import FakeOpencode
from tests.support.agentsim import SimAgent
from tests.support.emitter import Emitter
from tests.support.postgres import PostgresCluster
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until, wait_for

pytestmark = pytest.mark.timeout(300)

NODE = "node-fw"
FAST = {"heartbeat_interval_sec": 1}


def command(sup: SupervisorProc, ctype: str, target: dict[str, str], args: dict[str, Any] | None = None,
            **kw: Any) -> tuple[int, dict[str, Any]]:
    with sup.client() as c:
        r = c.post("/api/v1/commands", json={"type": ctype, "target": target, "args": args or {}} | kw)
    return r.status_code, r.json()


def forwarded_counts(sup: SupervisorProc) -> dict[tuple[str, str], float]:
    """`hal_o_swarm_forwarded_commands_total` of one supervisor, by (role, outcome)."""
    text = httpx.get(sup.api + "/metrics", timeout=5).text
    got = re.findall(r'^hal_o_swarm_forwarded_commands_total\{outcome="(\w+)",role="(\w+)"\} (\S+)$', text, re.M)
    assert got, "no forwarded_commands_total series"
    return {(role, outcome): float(v) for outcome, role, v in got}


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between any two runs of one command (its id and duration)."""
    data = {k: v for k, v in body["data"].items() if k not in ("command_id", "duration_ms")}
    return {k: v for k, v in body.items() if k != "data"} | {"data": data}


def lease(cluster: PostgresCluster, url: str) -> tuple[str, float] | None:
    rows = pg_rows(cluster, url, "SELECT owner, acquired_at FROM node_leases WHERE node_id = %s", NODE)
    return (str(rows[0][0]), float(rows[0][1])) if rows else None


def owned_by(cluster: PostgresCluster, url: str, sup: SupervisorProc) -> bool:
    held = lease(cluster, url)
    return held is not None and held[0].endswith(f":{sup.ws_port}")


def stored(cluster: PostgresCluster, url: str) -> list[tuple[str, int]]:
    return [(str(r[0]), int(r[1])) for r in pg_rows(
        cluster, url, "SELECT event_id, seq FROM events WHERE node_id = %s AND type = 'message.part.updated'"
        " ORDER BY seq", NODE)]


async def test_commands_reach_a_node_held_elsewhere_and_after_its_holder_is_killed(
        tmp_path: Path, pg_cluster: PostgresCluster, make_agent: Any) -> None:
    url = pg_cluster.password_database()
    a, b, c = (shared_supervisor(tmp_path, n, pg_cluster, url, FAST) for n in ("a", "b", "c"))
    b.agent_token = c.agent_token = a.agent_token  # one fleet: every supervisor accepts the agent
    fake = FakeOpencode().start()
    proj = tmp_path / "p"
    proj.mkdir()
    sid = fake.add_session(str(proj))["id"]
    emitter: Emitter | None = None
    try:
        a.start(timeout=90)
        wait_for(lambda: leader_gauge(a) == 1.0, "A leader", 60)
        b.start(timeout=90)
        c.start(timeout=90)
        agent = make_agent(a, "fw", node_id=NODE, supervisor_url=[a.ws_url, b.ws_url, c.ws_url],
                           projects=[("p", str(proj))], opencode_port=fake.port).start()
        agent.wait_online(a, 60, sessions_available=True)
        wait_for(lambda: owned_by(pg_cluster, url, a), "A holds the node's lease", 30)
        wait_for(lambda: pg_rows(pg_cluster, url, "SELECT 1 FROM sessions WHERE id = %s", sid),
                 "the session stored (C resolves it from the shared store)", 30)

        # 1. The same command through the holder (A) and through C, which does not hold the node.
        local = command(a, "session_status", {"session_id": sid})
        remote = command(c, "session_status", {"session_id": sid})
        assert local[0] == remote[0] == 200, (local, remote)
        assert remote[1]["data"]["status"] == "success" and remote[1]["data"]["node_id"] == NODE
        assert comparable(remote[1]) == comparable(local[1])
        # A success, a refusal before sending (404), a failure the agent answers: the same from both.
        for ctype, target, args in [("agentmd_show", {"node_id": NODE, "project": "p"}, {}),
                                    ("agentmd_show", {"node_id": NODE, "project": "ghost"}, {}),
                                    ("permission_reply", {"session_id": sid}, {"nonsense": 1})]:
            here, there = command(a, ctype, target, args), command(c, ctype, target, args)
            assert here[0] == there[0], (here, there)
            assert (comparable(here[1]) if here[0] == 200 else here[1]) == (
                comparable(there[1]) if there[0] == 200 else there[1]), (here, there)
        assert "forwarded command" in a.log_path.read_text(errors="replace")  # it went through A
        # The metrics count them by role: C asked, A held; A forwarded nothing, C ran nothing for another.
        on_a, on_c = forwarded_counts(a), forwarded_counts(c)
        assert on_c[("asked", "success")] >= 2 and on_a[("held", "success")] >= 2, (on_a, on_c)
        assert sum(v for (role, _), v in on_a.items() if role == "asked") == 0, on_a
        assert sum(v for (role, _), v in on_c.items() if role == "held") == 0, on_c
        status, body = command(c, "prompt_session", {"session_id": sid}, {"message": "from C"})
        assert status == 200 and body["data"]["status"] == "success", body
        wait_for(lambda: (sid, "from C") in fake.prompts, "the prompt sent to C reached opencode", 30)
        # The session routes too; a project target finds the node by the projects its holder stored (C
        # started before the agent first registered, so it never had the node in memory).
        with c.client() as client:
            r = client.post(f"/api/v1/sessions/{sid}/prompt", json={"message": "route via C"})
            assert r.status_code == 200, r.text
            r = client.post("/api/v1/sessions", json={"project": "p"})
            assert r.status_code == 201 and r.json()["data"]["node_id"] == NODE, r.text
            created = r.json()["data"]["id"]
            # wait: false answers 202 at once; its outcome lands in the shared commands table.
            r = client.post("/api/v1/commands", json={"type": "session_status", "target": {"session_id": sid},
                                                     "wait": False})
            assert r.status_code == 202, r.text
            bg = r.json()["data"]["command_id"]
        assert (sid, "route via C") in fake.prompts and created in fake.sessions
        with b.client() as client:
            wait_for(lambda: client.get(f"/api/v1/commands/{bg}").json()["data"]["status"] == "success",
                     "the background command's outcome, read on B", 30)
        # The same audit and commands rows as for a local command (the asker writes them).
        audit = pg_rows(pg_cluster, url, "SELECT action, target, result FROM audit_log WHERE command_id = %s",
                        remote[1]["data"]["command_id"])
        assert audit == [("session_status", f"{sid}@{NODE}", "success")]
        assert pg_rows(pg_cluster, url, "SELECT status, node_id FROM commands WHERE command_id = %s",
                       remote[1]["data"]["command_id"]) == [("success", NODE)]
        # A command that names a node nobody holds is refused as before, from any supervisor.
        status, body = command(c, "env_check", {"node_id": "node-ghost"})
        assert status == 404 and body["code"] == "NOT_FOUND"

        # Round trips, for the figures (printed, not asserted).
        rtts = {"local": [], "forwarded": []}
        for _ in range(20):
            for name, sup in (("local", a), ("forwarded", c)):
                t = time.monotonic()
                assert command(sup, "session_status", {"session_id": sid})[1]["data"]["status"] == "success"
                rtts[name].append((time.monotonic() - t) * 1000)
        print(f"\nsession_status round trip over 20: local p50 {statistics.median(rtts['local']):.1f} ms,"
              f" forwarded p50 {statistics.median(rtts['forwarded']):.1f} ms,"
              f" max {max(rtts['forwarded']):.1f} ms")

        # 2. kill -9 A (the holder and the leader) mid-stream.
        wait_for(lambda: fake.connected() == 1, "the agent subscribed to the event stream", 30)
        emitter = Emitter(fake, sid, str(proj)).start()
        wait_for(lambda: len(stored(pg_cluster, url)) >= 50, "the stream flowing into A", 30)
        # A command is waiting for A when it dies: A is frozen first (SIGSTOP) so it cannot claim it.
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        pool = ThreadPoolExecutor(1)
        queued = pool.submit(command, c, "prompt_session", {"session_id": sid}, {"message": "queued for A"},
                             timeout=60)
        wait_for(lambda: pg_rows(pg_cluster, url, "SELECT status FROM command_forwards") == [("queued",)],
                 "the command queued for A", 30)
        killed_at = time.time()
        a.kill9()
        wait_for(lambda: owned_by(pg_cluster, url, b), "the agent registered with B", 60, interval=0.05)
        held = lease(pg_cluster, url)
        assert held is not None
        moved = held[1] - killed_at
        print(f"agent registered with B {moved:.2f} s after kill -9 of A")
        assert moved <= 5.0, moved
        # The new holder claims the command its dead predecessor never took; C answers it.
        status, body = queued.result(90)
        pool.shutdown()
        assert status == 200 and body["data"]["status"] == "success", body
        assert (sid, "queued for A") in fake.prompts
        mark = emitter.count()
        wait_for(lambda: emitter.count() > mark + 20, "more events produced", 30)
        after = emitter.sent[mark + 10]
        wait_for(lambda: after in {e for e, _ in stored(pg_cluster, url)}, "an event produced after the move stored",
                 30)

        # 3. A command through a survivor that does not hold the node (C) reaches it on B.
        status, body = command(c, "prompt_session", {"session_id": sid}, {"message": "after the kill"})
        assert status == 200 and body["data"]["status"] == "success", body
        wait_for(lambda: (sid, "after the kill") in fake.prompts, "the prompt reached opencode through B", 30)
        assert "forwarded command" in b.log_path.read_text(errors="replace")

        # 4. The leader's engines moved to a survivor.
        wait_for(lambda: 1.0 in (leader_gauge(b), leader_gauge(c)), "a survivor leads", 90)
        leader = b if leader_gauge(b) == 1.0 else c
        wait_for(lambda: policy_checks(leader)["checks"] >= 1, "the new leader's policy engine checking", 60)
    finally:
        sent = emitter.stop() if emitter is not None else []
    try:
        wait_for(lambda: agent.outbox_size() == 0 and sent[-1] in {e for e, _ in stored(pg_cluster, url)},
                 "every event acked", 60)
        rows = stored(pg_cluster, url)
        ids = [e for e, _ in rows]
        assert set(sent) <= set(ids), f"lost: {sorted(set(sent) - set(ids))[:5]}"
        assert [s for _, s in rows] == sorted({s for _, s in rows})  # each seq once
        # Stored twice only: events A committed whose ack the agent never got (still pending when it
        # registered with B, so resent); every event it saw acked is stored once.
        twice = [e for e in sent if ids.count(e) > 1]
        assert all(ids.count(e) == 2 for e in twice)
        found = re.search(r"registered with supervisor \S+ as \S+ \(resume_from_seq=\d+, (\d+) pending\); failover #1",
                          agent.log_text())
        assert found is not None, agent.log_tail()
        assert len(twice) <= int(found.group(1)), (len(twice), found.group(0))
        if twice:  # one contiguous run in production order, around the kill
            pos = {e: i for i, e in enumerate(sent)}
            assert sorted(pos[e] for e in twice) == list(range(pos[twice[0]], pos[twice[0]] + len(twice)))
        print(f"{len(sent)} events produced, {len(ids)} rows, {len(twice)} stored twice (committed by A, "
              f"unacked at its kill; {found.group(1)} pending at the move)")
    finally:
        fake.stop()
        for sup in (a, b, c):
            sup.stop()


async def _beat(agents: dict[SimAgent, float], stop: asyncio.Event) -> None:
    """Heartbeats every 0.15 s with the agent's RSS at `pct` % of its MemoryMax (node RAM low)."""
    while not stop.is_set():
        for agent, pct in agents.items():
            await agent.send_raw(encode(Heartbeat(
                {"cpu_percent": 1.0, "ram_used_mb": 100, "ram_total_mb": 1000, "disk_used_gb": 1, "disk_total_gb": 2},
                process={"rss_bytes": pct * 1e7, "memory_max_bytes": 1e9})))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.15)


@pytest.mark.timeout(240)
async def test_the_leader_sees_agent_memory_of_nodes_held_elsewhere(tmp_path: Path,
                                                                      pg_cluster: PostgresCluster) -> None:
    """agent-high-memory on the leader (A) for an agent connected to B: B writes the heartbeat's process
    figures with each lease renewal, A's lease sweep reads them, A's memory pass fires once."""
    pytest.importorskip("ansible_runner")
    url = pg_cluster.password_database()
    hot, cool = "hot-node", "cool-node"
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[hal_agents]\n{hot} ansible_connection=local ansible_python_interpreter={sys.executable}\n"
                   f"{cool} ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    with receivers("ok") as (hook,):
        extra = {"remediation": {"inventory": str(inv), "auto": ["agent-high-memory"], "offline_minutes": 0.02,
                                 "memory_percent": 80, "memory_heartbeats": 3, "window_minutes": 60,
                                 "timeout_minutes": 2},
                 "routes": [{"match": "remediation.*", "target": f"webhook:{hook.url}/rem"}],
                 "routing": {"backoff_base_ms": 50, "timeout_seconds": 2}}
        a = shared_supervisor(tmp_path, "a", pg_cluster, url, {"heartbeat_interval_sec": 1})
        b = shared_supervisor(tmp_path, "b", pg_cluster, url, {"heartbeat_interval_sec": 1})
        for sup in (a, b):
            sup.extra |= extra
        b.agent_token = a.agent_token
        agents: list[SimAgent] = []
        stop = asyncio.Event()
        beats: asyncio.Task[None] | None = None
        try:
            a.start(timeout=90)
            await until(lambda: leader_gauge(a) == 1.0, "A leader", 60)
            b.start(timeout=90)
            agents = [SimAgent(b.ws_url, b.agent_token, hot), SimAgent(b.ws_url, b.agent_token, cool)]
            for ag in agents:
                await ag.connect()
            beats = asyncio.create_task(_beat({agents[0]: 92.0, agents[1]: 40.0}, stop))
            done = ("remediation.completed", "remediation.escalated", "remediation.failed")
            try:
                await until(lambda: _events(hook, "remediation.started"), "remediation.started", 60, interval=0.2)
                await until(lambda: any(_events(hook, t) for t in done), "the run to finish", 120, interval=0.2)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {[x['event']['type'] for x in hook.bodies()]}\n{a.log_tail()}") \
                    from None
        finally:
            stop.set()
            if beats is not None:
                await beats
            for ag in agents:
                await ag.close()
            a.stop()
            b.stop()
    (started,) = _events(hook, "remediation.started")
    assert started["node_id"] == hot and started["data"]["incident"] == "agent-high-memory"
    assert "memory at 92% (agent RSS of MemoryMax)" in started["data"]["trigger"], started
    ran = f"auto remediation agent-high-memory on {hot} started"
    assert ran in a.log_path.read_text(errors="replace")  # the leader ran it, B (not leading) did not
    assert ran not in b.log_path.read_text(errors="replace")


def _events(hook: Receiver, etype: str) -> list[dict[str, Any]]:
    return [x["event"] for x in hook.bodies() if x["event"]["type"] == etype]


def test_no_forwarding_table_on_sqlite(tmp_path: Path) -> None:
    """SQLite keeps one supervisor per file: nothing forwards, nothing new in its schema."""
    sup = SupervisorProc(tmp_path / "s")
    try:
        sup.start(timeout=60)
        with sup.client() as client:
            r = client.post("/api/v1/commands", json={"type": "env_check", "target": {"node_id": "node-ghost"}})
        assert r.status_code == 404
        import sqlite3

        conn = sqlite3.connect(sup.db_path)
        try:
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'command_forwards'").fetchone() == (0,)
        finally:
            conn.close()
        ready = httpx.get(sup.api + "/readyz", timeout=5)
        assert ready.status_code == 200 and "listen" not in ready.json()["components"]  # no LISTEN on SQLite
        text = httpx.get(sup.api + "/metrics", timeout=5).text
        assert "hal_o_swarm_pg_listen_up" not in text and "hal_o_swarm_fleet_nodes_held" not in text
    finally:
        sup.stop()
