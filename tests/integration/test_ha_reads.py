"""Several supervisors on one PostgreSQL answer the same (issue 21 point 2, reads): a node held by A is
online in B's `/api/v1/nodes`, with its sessions in B's `/api/v1/sessions`, and an SSE stream on B shows
every event, whichever supervisor ingested it, by the store's ids: in order, none twice, none skipped,
resuming with `Last-Event-ID` across a restart of B. Two real supervisor processes, real SimAgents over
WebSocket, a private PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from halswarm.core.event_horizon import Horizon
from halswarm.core.model import Node
from halswarm.store.engine import open_connection, parse_storage_url
from halswarm.store.migrations import migrate
from halswarm.store.repos.events import insert_events, insert_events_stored, probe_horizon
from halswarm.store.repos.nodes import upsert_node
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.tracker import SessionTracker
from tests.integration.test_ha_leader import pg_rows, shared_supervisor
from tests.support.agentsim import SimAgent, session_state
from tests.support.postgres import PostgresCluster
from tests.support.sse import SseReader
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(300)


def api(sup: SupervisorProc, path: str) -> Any:
    with sup.client() as c:
        r = c.get(path)
        r.raise_for_status()
        return r.json()["data"]


async def send(agent: SimAgent, seqs: range, session_id: str, sent_at: dict[str, float] | None = None) -> None:
    """Events of `seqs` in small bursts (so the two supervisors' commits interleave), then wait for the acks."""
    loop = asyncio.get_running_loop()
    for seq in seqs:
        if sent_at is not None:
            sent_at[f"{agent.node_id}-{seq:06d}"] = loop.time()
        await agent.send_event(seq, "message.part.delta", session_id=session_id, project="p")
        if seq % 20 == 0:
            await asyncio.sleep(0)
    await agent.wait_acked(seqs[-1], timeout=120)


def listen_state(sup: SupervisorProc) -> tuple[str, int, float | None, float | None]:
    """The `listen` component of /readyz (status, connections made) and the LISTEN gauge and counter."""
    ready = httpx.get(sup.api + "/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    comp = ready.json()["components"]["listen"]
    assert comp["channels"] == ["hal_command_forwards", "hal_events"], comp
    text = httpx.get(sup.api + "/metrics", timeout=5).text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return comp["status"], comp["connects"], values.get("hal_o_swarm_pg_listen_up"), values.get(
        "hal_o_swarm_pg_listen_connects_total")


def agent_seqs(reader: SseReader, node_id: str) -> list[int]:
    return [ev["seq"] for _, ev in reader.events if ev["node_id"] == node_id and ev.get("seq") is not None]


def assert_ids_increase(events: list[tuple[int, dict[str, Any]]]) -> None:
    ids = [i for i, _ in events]
    assert ids == sorted(set(ids)), "a stream repeated an event or sent one out of id order"


async def test_any_supervisor_shows_nodes_sessions_and_every_event_of_the_others(
        tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.password_database()
    a = shared_supervisor(tmp_path, "a", pg_cluster, url)
    b = shared_supervisor(tmp_path, "b", pg_cluster, url)
    agents: list[SimAgent] = []
    readers: list[SseReader] = []
    try:
        a.start(timeout=90)
        b.start(timeout=90)
        on_b = SseReader(b, {}).start()
        on_a = SseReader(a, {}).start()
        readers += [on_b, on_a]
        await until(lambda: on_b.connected.is_set() and on_a.connected.is_set(), "both streams open", 60)

        # n1 on A with a session; n2 on B: both stream at once, so their commits interleave in the sequence.
        n1 = SimAgent(a.ws_url, a.agent_token, "n1", [("p", "/p")])
        n2 = SimAgent(b.ws_url, b.agent_token, "n2", [("p", "/p")])
        agents += [n1, n2]
        await n1.connect(sessions=[session_state("ses_a1", "p", title="held by A")])
        await n2.connect()
        sent_at: dict[str, float] = {}
        await asyncio.gather(send(n1, range(1, 401), "ses_a1", sent_at), send(n2, range(1, 401), "ses_b1"))

        # Nodes: B shows A's node online, as A stored it; A shows B's.
        listed = {n["id"]: n for n in api(b, "/api/v1/nodes")}
        assert listed["n1"]["status"] == "online" and listed["n2"]["status"] == "online"
        one = api(b, "/api/v1/nodes/n1")
        assert one["status"] == "online" and one["projects"] == ["p"] and "ses_a1" in one["sessions"]
        await until(lambda: api(b, "/api/v1/nodes/n1")["last_seq"] == 400, "A's last_seq of n1 as seen from B", 30)
        assert {n["id"]: n["status"] for n in api(a, "/api/v1/nodes")} == {"n1": "online", "n2": "online"}
        assert api(b, "/api/v1/nodes?status=online") and len(api(b, "/api/v1/nodes?status=online")) == 2
        # Sessions: B lists and gets A's session from the store, as A stored it (running, its title).
        by_b = {s["id"]: s for s in api(b, "/api/v1/sessions?node_id=n1")}
        assert by_b["ses_a1"]["status"] == "running" and by_b["ses_a1"]["title"] == "held by A"
        got = api(b, "/api/v1/sessions/ses_a1")
        assert got["node_id"] == "n1" and got["status"] == "running"
        assert api(a, "/api/v1/sessions/ses_b1")["node_id"] == "n2"

        # Streams: each supervisor's stream has every event of both nodes, in order, once.
        for reader in (on_b, on_a):
            await until(lambda r=reader: len(agent_seqs(r, "n1")) >= 400 and len(agent_seqs(r, "n2")) >= 400,
                        "every event of both nodes on the stream", 60)
            assert agent_seqs(reader, "n1") == list(range(1, 401))
            assert agent_seqs(reader, "n2") == list(range(1, 401))
            assert_ids_increase(reader.events)
        stored = pg_rows(pg_cluster, url, "SELECT id FROM events WHERE id >= %s AND id <= %s ORDER BY id",
                         on_b.events[0][0], on_b.events[-1][0])
        assert [i for i, _ in on_b.events] == [r[0] for r in stored], "B's stream is not the stored events by id"
        for name, reader in (("B's (the other supervisor)", on_b), ("A's own", on_a)):  # printed, not asserted
            lat = sorted((t - sent_at[ev["event_id"]]) * 1000 for (_, ev), t in zip(reader.events, reader.received_at,
                                                                                   strict=True)
                         if ev["node_id"] == "n1" and ev["event_id"] in sent_at)
            print(f"\nA's events of one burst on {name} stream: {len(lat)}, sent->received p50 "
                  f"{statistics.median(lat):.1f} ms, p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms, max {lat[-1]:.1f} ms")

        # NOTIFY is not the only carrier: with every LISTEN connection cut, the streams still get A's events
        # (the tails poll), and the listeners come back.
        # One LISTEN connection per supervisor, for both channels (events and command forwarding).
        listen_sql = "SELECT pid FROM pg_stat_activity WHERE application_name = 'hal-supervisor-listen'"
        for sup in (a, b):
            assert listen_state(sup) == ("ok", 1, 1.0, 1.0), "LISTEN up once before the cut"
        cut = pg_rows(pg_cluster, url, f"SELECT pg_terminate_backend(pid) FROM ({listen_sql}) AS l")
        assert len(cut) == 2 and all(r[0] for r in cut)
        await send(n1, range(401, 451), "ses_a1")
        await until(lambda: len(agent_seqs(on_b, "n1")) >= 450, "A's events on B's stream without LISTEN", 60)
        await until(lambda: len(pg_rows(pg_cluster, url, listen_sql)) == 2, "both LISTEN connections back", 60)
        for sup in (a, b):  # readiness and metrics saw it go and come back (the down window itself: test_forwarder_pg)
            await until(lambda s=sup: listen_state(s) == ("ok", 2, 1.0, 2.0), "LISTEN back in /readyz and /metrics",
                        60)
        assert agent_seqs(on_b, "n1") == list(range(1, 451))
        assert_ids_increase(on_b.events)

        # B restarts; a subscriber resumes on it with the last id it had, while A keeps ingesting.
        on_b.stop()
        last_id = on_b.events[-1][0]
        seen = list(on_b.events)
        b.stop()
        await n2.close()
        await send(n1, range(451, 501), "ses_a1")  # while B is down
        b.start(timeout=90)
        resumed = SseReader(b, {}, last_event_id=str(last_id)).start()
        readers.append(resumed)
        await until(resumed.connected.is_set, "the resumed stream open", 60)
        await send(n1, range(501, 601), "ses_a1")
        await until(lambda: len(agent_seqs(resumed, "n1")) >= 600 - 450, "the rest of n1's events on B", 60)
        assert_ids_increase(seen + resumed.events)
        assert [s for _, ev in seen + resumed.events if ev["node_id"] == "n1" and (s := ev.get("seq"))] == list(
            range(1, 601)), "resuming on B lost or repeated events of A"
        assert resumed.events[0][0] > last_id
        # Nothing stored after the resume point is missing from the resumed stream.
        after = pg_rows(pg_cluster, url, "SELECT id FROM events WHERE id > %s AND id <= %s ORDER BY id", last_id,
                        resumed.events[-1][0])
        assert [i for i, _ in resumed.events] == [r[0] for r in after]
        # B, restarted, shows A's node online and its session as A stored it.
        assert api(b, "/api/v1/nodes/n1")["status"] == "online"
        assert api(b, "/api/v1/sessions/ses_a1")["status"] == "running"
    finally:
        for r in readers:
            r.stop()
        for ag in agents:
            await ag.close()
        a.stop()
        b.stop()


def test_on_a_real_postgresql_an_open_insert_holds_the_horizon_and_a_batch_knows_its_ids(
        pg_cluster: PostgresCluster) -> None:
    """The premise of the safe horizon on the real server (an INSERT holds the write lock on `events`
    from before it draws ids until it ends), and the ingest's stored rows of a batch: exactly its own,
    with their ids, though another supervisor's insert took ids in between and one row was a duplicate."""
    url = pg_cluster.fresh_database()
    target = parse_storage_url(url)
    one, other, probe = open_connection(target), open_connection(target), open_connection(target, readonly=True)
    try:
        migrate(one)
        for n in ("a", "b"):
            upsert_node(one, Node(id=n))
        h = Horizon()
        assert h.probe(*probe_horizon(probe)) == 0

        def ev(node: str, seq: int) -> tuple[Any, ...]:
            return (node, seq, f"{node}{seq}", None, "p", "t", "{}", 1.0, 1.0)

        one.execute("BEGIN")  # supervisor 1's batch: its ids drawn, not committed yet
        mine = insert_events_stored(one, [ev("a", 1), ev("a", 2)])
        assert insert_events(other, [ev("b", 1), ev("b", 2), ev("b", 3)]) == 3  # supervisor 2's, committed
        assigned, holders = probe_horizon(probe)
        assert assigned == 5 and len(holders) == 1
        assert h.probe(assigned, holders) == 0  # 3..5 are visible, 1..2 may still commit: not safe
        mine += insert_events_stored(one, [ev("b", 1), ev("a", 3)])  # b1 is supervisor 2's: ignored
        one.execute("COMMIT")
        stored_a = [r[0] for r in one.execute("SELECT id FROM events WHERE node_id = 'a' ORDER BY id")]
        assert [e["id"] for e in mine] == stored_a and [e["event_id"] for e in mine] == ["a1", "a2", "a3"]
        assert mine[0]["data"] == "{}" and mine[2]["seq"] == 3
        assigned, holders = probe_horizon(probe)
        assert holders == [] and h.probe(assigned, holders) == assigned >= stored_a[-1]
    finally:
        for c in (one, other, probe):
            c.close()
        pg_cluster.drop_database(url)


class RacingConnection:
    """The writer's connection, with another supervisor's insert (committed on its own connection) landing
    inside the batch's transaction: right after the batch reads the sequence, or right before it inserts."""

    def __init__(self, conn: Any, other: Any) -> None:
        self._conn, self._other = conn, other
        self.armed = False
        self.raced = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _race(self) -> None:
        if self.armed:
            self.armed = False
            self.raced += 1
            n = self.raced
            insert_events(self._other, [("b", n * 10 + k, f"b{n}-{k}", None, "p", "t", "{}", 1.0, 1.0)
                                        for k in range(3)])

    def execute(self, sql: str, params: Any = None) -> Any:
        cur = self._conn.execute(sql, params)
        if "events_id_seq" in sql:
            self._race()
        return cur

    def execute_native(self, sql: str, params: Any) -> Any:
        if sql.lstrip().startswith("INSERT INTO events"):
            self._race()
        return self._conn.execute_native(sql, params)


async def test_the_routing_feed_on_postgresql_gets_this_supervisors_events_with_their_store_ids(
        pg_cluster: PostgresCluster) -> None:
    """The ingest on a shared store, with a feed subscriber (notification rules): each event it stored, once,
    with the id the store gave it, though another supervisor's inserts took ids in between."""
    url = pg_cluster.fresh_database()
    target = parse_storage_url(url)
    conn, other = open_connection(target), open_connection(target)
    migrate(conn)
    upsert_node(conn, Node(id="b"))
    racing = RacingConnection(conn, other)
    writer = Writer(racing)  # type: ignore[arg-type]
    writer.start(asyncio.get_running_loop())
    ing = Ingestor(writer, SessionTracker(), Metrics(), lambda node, seq: None)
    ing.broadcast.tailed = True  # as on PostgreSQL (the tail feeds the streams)
    feed = ing.subscribe()
    try:
        for round_ in range(3):
            racing.armed = True  # the other supervisor inserts while this one's batch is in its transaction
            for k in range(5):
                ing.emit(None, "sup.test", {"round": round_, "k": k})
            await ing.drain()
        got = []
        while not feed.empty():
            got.append(feed.get_nowait())
        stored = [(r[0], r[1]) for r in conn.execute("SELECT id, type FROM events WHERE type = 'sup.test' ORDER BY id")]
        assert [(e["id"], e["type"]) for e in got] == stored and len(stored) == 15
        assert [e["data"] for e in got] == [{"round": r, "k": k} for r in range(3) for k in range(5)]
        assert racing.raced == 3
    finally:
        await writer.stop()
        conn.close()
        other.close()
        pg_cluster.drop_database(url)
