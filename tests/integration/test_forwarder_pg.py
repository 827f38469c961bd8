"""The Forwarder (halswarm.supervisor.runtime.forwarding) of two supervisors in one process against a
real PostgreSQL: NOTIFY alone carries a command and its result (polls set far apart), the poll alone
carries them (no LISTEN connection), a lease that moves while the command is queued takes the command
with it, a holder that loses the node after claiming is answered as a node gone offline, a deadline that
passes answers None (the dispatcher's timeout) and leaves no row, and results are scrubbed of secrets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from halswarm.core.secret_values import SECRETS
from halswarm.protocol import CommandResult
from halswarm.store.engine import open_connection, parse_storage_url
from halswarm.store.migrations import migrate
from halswarm.store.pg import PgReader
from halswarm.store.pg_listen import APPLICATION_NAME, PgListener
from halswarm.store.repos.leases import take_lease
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.forwarding import Forwarder
from tests.support.postgres import PostgresCluster
from tests.support.waiting import on_loop

pytestmark = pytest.mark.timeout(120)

A, B, C = "sup-a:1", "sup-b:2", "sup-c:3"
SLOW_POLL = 3600.0  # "never": only NOTIFY can wake the loop


class Side:
    """One supervisor's forwarding: its own writer, reader and Forwarder; `linked` its connected nodes."""

    def __init__(self, url: str, owner: str, *, listen: bool = True, poll: float = 0.1) -> None:
        self.conn = open_connection(parse_storage_url(url))
        self.writer = Writer(self.conn)
        self.reader = PgReader(url)
        self.linked: set[str] = set()
        self.ran: list[dict[str, Any]] = []
        self.answer: tuple[str, Any, str | None] | None = ("success", {"ok": owner}, None)
        self.release = asyncio.Event()
        self.release.set()

        self.listener = PgListener(url) if listen else None
        self.metrics = Metrics()
        self.fwd = Forwarder(self.writer, self.reader, owner=owner, linked=lambda: self.linked,
                             listener=self.listener, poll_interval=poll, metrics=self.metrics)
        self.fwd.run_row = self.execute

    async def execute(self, row: dict[str, Any]) -> CommandResult:
        self.ran.append(row)
        await self.release.wait()
        assert self.answer is not None
        status, output, error = self.answer
        return CommandResult(row["id"], status, output, error)

    async def start(self) -> None:
        self.writer.start(asyncio.get_running_loop())
        await self.fwd.start()
        if self.listener is not None:
            await self.listener.start()

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        await self.fwd.stop()
        await self.writer.stop()
        self.reader.close()
        self.conn.close()


@pytest.fixture
async def url(pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    u = pg_cluster.fresh_database()
    c = open_connection(parse_storage_url(u))
    migrate(c)
    c.close()
    yield u
    pg_cluster.drop_database(u)


async def lease_to(side: Side, node: str, owner: str) -> None:
    await side.writer.run(lambda c: take_lease(c, node, owner, time.time(), 90.0))


def row(cid: str, node: str = "n1", **kw: Any) -> dict[str, Any]:
    return {"id": cid, "node_id": node, "type": "session_status", "target": json.dumps({"node_id": node}),
            "args": "{}", "timeout_ms": 4500, "requested_by": B, "actor": "ops"} | kw


def forwarded(side: Side, role: str, outcome: str) -> float:
    value = side.metrics.registry.get_sample_value("hal_o_swarm_forwarded_commands_total",
                                                   {"role": role, "outcome": outcome})
    return value or 0.0


async def wait_listening(*sides: Side) -> None:
    await on_loop(lambda: all(s.listener is not None and s.listener.connected for s in sides), "every side listening",
                  30, interval=0.02)


async def test_notify_alone_carries_a_command_and_its_result(url: str) -> None:
    holder, asker = Side(url, A, poll=SLOW_POLL), Side(url, B, poll=SLOW_POLL)
    await holder.start()
    await asker.start()
    try:
        await wait_listening(holder, asker)
        holder.linked.add("n1")
        await lease_to(holder, "n1", A)
        res = await asker.fwd.forward(row("c1"), 30.0)
        assert res == CommandResult("c1", "success", {"ok": A}, None)
        assert [r["id"] for r in holder.ran] == ["c1"] and holder.ran[0]["requested_by"] == B
        assert 0 < holder.ran[0]["remaining"] <= 30.0
        # Metrics: one asked and answered here, one held there; one round trip measured on the asker.
        assert forwarded(asker, "asked", "success") == 1 and forwarded(holder, "held", "success") == 1
        assert forwarded(holder, "asked", "success") == 0 and forwarded(asker, "held", "success") == 0
        assert asker.metrics.registry.get_sample_value("hal_o_swarm_forwarding_duration_seconds_count") == 1
    finally:
        await asker.stop()
        await holder.stop()


async def test_the_poll_alone_carries_them_without_listen(url: str) -> None:
    holder, asker = Side(url, A, listen=False), Side(url, B, listen=False)
    await holder.start()
    await asker.start()
    try:
        holder.linked.add("n1")
        await lease_to(holder, "n1", A)
        assert await asker.fwd.forward(row("c1"), 30.0) == CommandResult("c1", "success", {"ok": A}, None)
    finally:
        await asker.stop()
        await holder.stop()


async def test_a_lease_that_moves_before_the_claim_takes_the_command_with_it(url: str) -> None:
    """The holder died before claiming (it claims nothing more); the agent registers with C: C runs it."""
    dead, asker, new = Side(url, A), Side(url, B), Side(url, C)
    for s in (asker, new):
        await s.start()
    try:
        await lease_to(asker, "n1", A)  # A holds n1 but is not running (killed)
        task = asyncio.create_task(asker.fwd.forward(row("c1"), 30.0))
        # The agent registers with C while the command waits (before or after the asker's first poll:
        # either way the row is queued for a node with a live lease, so the asker keeps waiting).
        new.linked.add("n1")
        await lease_to(new, "n1", C)
        assert await asyncio.wait_for(task, 30) == CommandResult("c1", "success", {"ok": C}, None)
        assert [r["id"] for r in new.ran] == ["c1"] and dead.ran == []
    finally:
        for s in (asker, new):
            await s.stop()
        dead.reader.close()
        dead.conn.close()


async def test_a_holder_that_loses_the_node_after_claiming_answers_node_offline(url: str) -> None:
    holder, asker = Side(url, A), Side(url, B)
    await holder.start()
    await asker.start()
    try:
        holder.linked.add("n1")
        holder.release.clear()  # the agent has the command and has not answered yet
        await lease_to(holder, "n1", A)
        task = asyncio.create_task(asker.fwd.forward(row("c1"), 30.0))

        await on_loop(lambda: holder.ran, "the holder claimed it", 30, interval=0.02)
        await lease_to(asker, "n1", C)  # the agent moved to C: A's result can never come back
        res = await asyncio.wait_for(task, 30)
        assert (res.status, res.error) == ("failure", "node n1 went offline")
        await lease_to(asker, "n1", A)
        holder.linked.discard("n1")
    finally:
        holder.release.set()
        await asker.stop()
        await holder.stop()


async def test_nobody_holding_the_node_is_offline_and_a_passed_deadline_leaves_no_row(url: str) -> None:
    asker = Side(url, B)
    await asker.start()
    try:
        res = await asyncio.wait_for(asker.fwd.forward(row("c1", "n9"), 30.0), 30)  # no lease for n9
        assert res is not None and (res.status, res.error) == ("failure", "node n9 went offline")
        assert forwarded(asker, "asked", "offline") == 1
        await lease_to(asker, "n2", A)  # A holds n2 but never claims
        assert await asker.fwd.forward(row("c2", "n2"), 0.3) is None  # the dispatcher answers its timeout
        assert forwarded(asker, "asked", "expired") == 1

        async def gone() -> bool:
            left = await asker.reader.run(lambda c: c.execute("SELECT count(*) FROM command_forwards").fetchone()[0])
            return not left

        await on_loop(gone, "the expired row deleted", 30, interval=0.02)  # never run later by a holder
    finally:
        await asker.stop()


async def test_results_are_scrubbed_of_secret_values(url: str) -> None:
    secret = "s3cr3t-forward-value-4242"
    SECRETS.add(secret)
    holder, asker = Side(url, A), Side(url, B)
    holder.answer = ("success", {"env": {"TOKEN_ECHO": f"value {secret} here"}}, f"said {secret}")
    await holder.start()
    await asker.start()
    try:
        holder.linked.add("n1")
        await lease_to(holder, "n1", A)
        res = await asyncio.wait_for(asker.fwd.forward(row("c1"), 30.0), 30)
        assert res is not None and secret not in json.dumps([res.output, res.error])
        assert "[REDACTED]" in res.output["env"]["TOKEN_ECHO"]
    finally:
        await asker.stop()
        await holder.stop()


async def test_a_lost_listen_connection_comes_back(url: str, pg_cluster: PostgresCluster) -> None:
    import psycopg

    holder, asker = Side(url, A, poll=SLOW_POLL), Side(url, B, poll=SLOW_POLL)
    await holder.start()
    await asker.start()
    try:
        await wait_listening(holder, asker)
        holder.linked.add("n1")
        await lease_to(holder, "n1", A)
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:  # as a server restart would
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = %s AND datname = %s",
                          (APPLICATION_NAME, url.rsplit("/", 1)[1]))
        assert holder.listener is not None and asker.listener is not None
        hl, al = holder.listener, asker.listener
        await on_loop(lambda: hl.connects == al.connects == 2 and hl.connected and al.connected,
                      "both listening again", 30, interval=0.02)
        assert await asyncio.wait_for(asker.fwd.forward(row("c1"), 30.0), 30) == CommandResult(
            "c1", "success", {"ok": A}, None)
    finally:
        await asker.stop()
        await holder.stop()


async def test_while_listen_is_down_the_gauge_and_readiness_say_so_the_polls_carry_and_it_recovers(
        url: str, pg_cluster: PostgresCluster) -> None:
    """The LISTEN connection terminated in PostgreSQL: `hal_o_swarm_pg_listen_up` goes to 0 and the readiness
    component to `degraded` (held there: the reconnection waits until the test lets it), a command still
    goes through by the polls, and once reconnected the gauge is 1, the component `ok`, 2 connections made."""
    import psycopg

    from halswarm.supervisor.features.health.service import listen_component

    gate = asyncio.Event()
    backoffs: list[float] = []

    async def held_backoff(delay: float) -> None:  # the reconnection waits for the test, not for a clock
        backoffs.append(delay)
        await gate.wait()

    holder, asker = Side(url, A, poll=0.1), Side(url, B, poll=0.1)
    assert asker.listener is not None
    lis = asker.listener = PgListener(url, sleep=held_backoff)
    asker.fwd.listener = lis
    metrics = asker.metrics
    metrics.shared_store(lambda: None)
    lis.on_change = metrics.listen_changed

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("hal_o_swarm_pg_listen_up")

    await holder.start()
    await asker.start()
    try:
        await wait_listening(holder, asker)
        assert gauge() == 1 and listen_component(lis)["status"] == "ok"
        assert metrics.registry.get_sample_value("hal_o_swarm_fleet_nodes_held") is None  # not the leader
        holder.linked.add("n1")
        await lease_to(holder, "n1", A)
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
                                 (APPLICATION_NAME, url.rsplit("/", 1)[1])).fetchall()
            assert len(rows) == 2 and lis.backend_pid in {p for (p,) in rows}  # one LISTEN connection per side
            admin.execute("SELECT pg_terminate_backend(%s)", (lis.backend_pid,))
        await on_loop(lambda: gauge() == 0 and not lis.connected, "the gauge at 0", 30, interval=0.02)
        comp = listen_component(lis)
        assert comp["status"] == "degraded" and "polling" in comp["detail"], comp
        assert backoffs  # it waits to reconnect
        assert await asyncio.wait_for(asker.fwd.forward(row("c1"), 30.0), 30) == CommandResult(
            "c1", "success", {"ok": A}, None)  # the polls carry it meanwhile
        gate.set()
        await on_loop(lambda: lis.connected and gauge() == 1, "LISTEN back", 30, interval=0.02)
        assert listen_component(lis) == {"status": "ok", "channels": ["hal_command_forwards"], "connects": 2}
        assert metrics.registry.get_sample_value("hal_o_swarm_pg_listen_connects_total") == 2
    finally:
        await asker.stop()
        await holder.stop()

