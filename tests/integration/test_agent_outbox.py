"""Lossless delivery with the REAL agent and the REAL supervisor: crashes on either side.

Events are produced by a fake opencode (attach mode) so that the test knows exactly which events
must arrive; they take the real path (SSE -> bridge -> durable outbox -> WebSocket -> SQLite).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.agent_proc import FakeOpencode, TcpProxy, api_get, assert_gap_free, db_rows, node_status
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    f = FakeOpencode().start()
    yield f
    f.stop()


def emit_parts(fake: FakeOpencode, sid: str, directory: str, n: int, start: int = 0) -> list[str]:
    return [fake.emit("message.part.updated", {"sessionID": sid, "part": {"n": i}}, directory)
            for i in range(start, start + n)]


def stored_ids(sup, node_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [r[0] for r in db_rows(sup, "SELECT event_id FROM events WHERE node_id=? AND type='message.part.updated'"
                                       " ORDER BY seq", node_id)]


def test_agent_killed_with_unacked_events_delivers_each_once_after_restart(
        make_supervisor, make_agent, fake: FakeOpencode, tmp_path: Path) -> None:
    proj = tmp_path / "p"
    proj.mkdir()
    sid = fake.add_session(str(proj))["id"]
    sup = make_supervisor(server={"heartbeat_interval_sec": 1}).start()
    agent = make_agent(sup, "crash", projects=[("p", str(proj))], opencode_port=fake.port).start()
    agent.wait_online(sup, sessions_available=True)
    wait_for(lambda: fake.connected() == 1, "agent subscribed to the event stream")

    sent = emit_parts(fake, sid, str(proj), 5)
    wait_for(lambda: stored_ids(sup, "node-crash") == sent, "first 5 stored")

    sup.stop()  # nothing can be acked from here on
    sent += emit_parts(fake, sid, str(proj), 300, start=5)
    wait_for(lambda: agent.outbox_size() >= 300, "300 events pending in the outbox", 30)
    agent.kill9()  # unacked events only exist in the outbox file now
    assert agent.outbox_size() >= 300

    sup.start()
    agent.start()
    agent.wait_online(sup)
    wait_for(lambda: len(stored_ids(sup, "node-crash")) >= len(sent), "all events stored", 30)
    assert stored_ids(sup, "node-crash") == sent  # each once, in order
    assert_gap_free(sup, "node-crash")
    wait_for(lambda: agent.outbox_size() == 0, "outbox drained after the acks", 10)


def test_supervisor_killed_agent_reconnects_with_backoff_and_resends(
        make_supervisor, make_agent, fake: FakeOpencode, tmp_path: Path) -> None:
    proj = tmp_path / "p"
    proj.mkdir()
    sid = fake.add_session(str(proj))["id"]
    sup = make_supervisor(server={"heartbeat_interval_sec": 1}).start()
    agent = make_agent(sup, "resend", projects=[("p", str(proj))], opencode_port=fake.port).start()
    agent.wait_online(sup, sessions_available=True)
    wait_for(lambda: fake.connected() == 1, "agent subscribed")

    sent = emit_parts(fake, sid, str(proj), 10)
    wait_for(lambda: stored_ids(sup, "node-resend") == sent, "first 10 stored")
    sup.kill9()
    sent += emit_parts(fake, sid, str(proj), 100, start=10)
    wait_for(lambda: agent.outbox_size() >= 100, "events pending while the supervisor is down")
    wait_for(lambda: agent.log_text().count("cannot connect to supervisor") >= 2, "failed reconnect attempts", 20)

    sup.start()  # same ports, same database
    wait_for(lambda: node_status(sup, "node-resend") == "online", "node online again", 20)
    wait_for(lambda: len(stored_ids(sup, "node-resend")) >= len(sent), "everything stored", 20)
    assert stored_ids(sup, "node-resend") == sent
    assert_gap_free(sup, "node-resend")
    assert agent.log_text().count("registered with supervisor") >= 2
    assert agent.running()


def test_1000_events_in_order_across_a_supervisor_restart(
        make_supervisor, make_agent, fake: FakeOpencode, tmp_path: Path) -> None:
    """A burst of 1,000 events; the supervisor is restarted in the middle of it."""
    proj = tmp_path / "p"
    proj.mkdir()
    sid = fake.add_session(str(proj))["id"]
    sup = make_supervisor(server={"heartbeat_interval_sec": 1}).start()
    agent = make_agent(sup, "burst", projects=[("p", str(proj))], opencode_port=fake.port).start()
    agent.wait_online(sup, sessions_available=True)
    wait_for(lambda: fake.connected() == 1, "agent subscribed")

    sent = emit_parts(fake, sid, str(proj), 500)
    wait_for(lambda: len(stored_ids(sup, "node-burst")) >= 100, "part of the burst stored")
    sup.stop()
    sent += emit_parts(fake, sid, str(proj), 500, start=500)
    sup.start()
    wait_for(lambda: len(stored_ids(sup, "node-burst")) >= 1000, "1,000 events stored", 40)
    assert stored_ids(sup, "node-burst") == sent
    rows = db_rows(sup, "SELECT data FROM events WHERE node_id='node-burst' AND type='message.part.updated' "
                        "ORDER BY seq")
    assert [json.loads(r[0])["part"]["n"] for r in rows] == list(range(1000))
    assert_gap_free(sup, "node-burst")


def outbox_metrics(sup, node_id: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """``hal_o_swarm_agent_outbox_*{node=...}`` from the supervisor's /metrics, by suffix."""
    with sup.client() as c:
        text = c.get("/metrics").text
    pat = re.compile(r'^hal_o_swarm_agent_outbox_(\w+)\{node="' + re.escape(node_id) + r'"\} (\S+)$', re.M)
    return {m.group(1): float(m.group(2)) for m in pat.finditer(text)}


def test_full_outbox_refuses_new_events_and_reports_it_in_heartbeats(
        make_supervisor, make_agent, fake: FakeOpencode, tmp_path: Path) -> None:
    """outbox.max_events 20, supervisor partitioned away while 60 events are produced: the agent keeps
    20 (never drops stored ones), refuses the rest, and once connected its heartbeats show the refused
    count and the backlog draining to 0 in /metrics and in GET /api/v1/nodes/{id}."""
    proj = tmp_path / "p"
    proj.mkdir()
    sid = fake.add_session(str(proj))["id"]
    sup = make_supervisor(server={"heartbeat_interval_sec": 1}).start()
    proxy = TcpProxy(sup.ws_port).start()
    try:
        agent = make_agent(sup, "full", supervisor_url=proxy.ws_url(), projects=[("p", str(proj))],
                           opencode_port=fake.port, extra={"outbox": {"max_events": 20}}).start()
        agent.wait_online(sup, sessions_available=True)
        wait_for(lambda: fake.connected() == 1, "agent subscribed")
        wait_for(lambda: outbox_metrics(sup, "node-full").get("max_events") == 20, "outbox gauges exported")
        assert outbox_metrics(sup, "node-full")["refused_total"] == 0
        before = len(stored_ids(sup, "node-full"))

        proxy.cut()
        wait_for(lambda: node_status(sup, "node-full") == "offline", "partitioned", 10)
        sent = emit_parts(fake, sid, str(proj), 60)
        wait_for(lambda: agent.outbox_size() == 20, "outbox full at max_events", 20)
        proxy.restore()

        wait_for(lambda: outbox_metrics(sup, "node-full").get("refused_total", 0) > 0, "refused count reported", 20)
        wait_for(lambda: outbox_metrics(sup, "node-full").get("pending") == 0, "pending drained to 0", 20)
        m = outbox_metrics(sup, "node-full")
        assert m["max_events"] == 20 and 40 <= m["refused_total"] <= 60, m
        res = api_get(sup, "/api/v1/nodes/node-full")["resources"]
        assert res["outbox_pending"] == 0 and res["outbox_max_events"] == 20
        assert res["outbox_refused_total"] == m["refused_total"]
        assert "cpu_percent" in res  # the SPEC resources are still there
        # What was stored is a gap-free prefix of what was produced: refused events got no seq.
        got = stored_ids(sup, "node-full")[before:]
        assert 0 < len(got) <= 20 and got == sent[: len(got)]
        assert_gap_free(sup, "node-full")
        assert "outbox full" in agent.log_text()
    finally:
        proxy.close()
