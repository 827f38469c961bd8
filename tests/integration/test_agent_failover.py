"""Agent failover with REAL processes (issue 21): one real agent, two real supervisors on loopback.

The agent's ``supervisor_url`` lists both. The supervisors here have separate SQLite stores (a shared
PostgreSQL store is another part of issue 21), so what this proves is the agent's side: it moves to the
other supervisor when one is killed with SIGKILL and back when that one dies, keeps streaming, and never
loses an event. Across independent stores delivery is at-least-once: an event is on both only when the
supervisor that stored it died before its ack reached the agent; the test checks exactly that shape.

Events come from a fake opencode (attach mode) emitting continuously from a thread, so the kills land
mid-stream; they travel the real path (SSE -> bridge -> durable outbox -> WebSocket -> SQLite).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.agent_proc import FakeOpencode, assert_gap_free, db_rows, node_status
from tests.support.emitter import Emitter
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

NODE = "node-fo"


def stored_ids(sup) -> list[str]:  # type: ignore[no-untyped-def]
    return [r[0] for r in db_rows(sup, "SELECT event_id FROM events WHERE node_id=? AND type='message.part.updated'"
                                       " ORDER BY seq", NODE)]


def failover_seconds(sup, since: float, timeout: float = 30.0) -> float:  # type: ignore[no-untyped-def]
    """Wait (bounded) for the node online on ``sup``; the measured time since ``since``, printed, not asserted."""
    wait_for(lambda: node_status(sup, NODE) == "online", f"{NODE} online on the other supervisor", timeout,
             interval=0.05)
    return time.monotonic() - since


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    f = FakeOpencode().start()
    yield f
    f.stop()


def test_agent_fails_over_on_kill9_and_back_without_losing_an_event(
        make_supervisor, make_agent, fake: FakeOpencode, tmp_path: Path) -> None:
    proj = tmp_path / "p"
    proj.mkdir()
    sid = fake.add_session(str(proj))["id"]
    a = make_supervisor("sup-a", server={"heartbeat_interval_sec": 1})
    b = make_supervisor("sup-b", server={"heartbeat_interval_sec": 1})
    b.agent_token = a.agent_token  # one fleet: both accept the agent's token
    a.start()
    b.start()
    agent = make_agent(a, "fo", supervisor_url=[a.ws_url, b.ws_url], projects=[("p", str(proj))],
                       opencode_port=fake.port).start()
    agent.wait_online(a, sessions_available=True)
    wait_for(lambda: fake.connected() == 1, "agent subscribed to the event stream")

    emitter = Emitter(fake, sid, str(proj)).start()
    try:
        wait_for(lambda: len(stored_ids(a)) >= 50, "the stream flowing into A", 30)

        # 1. kill -9 A mid-stream: the agent moves to B and keeps sending.
        t0 = time.monotonic()
        a.kill9()
        to_b = failover_seconds(b, t0)
        print(f"\nfailover A -> B: node online on B {to_b:.2f} s after kill -9 of A")
        mark = emitter.count()
        wait_for(lambda: len(stored_ids(b)) >= 50 and emitter.count() > mark + 20,
                 "the stream flowing into B", 30)
        marker_b = emitter.sent[mark + 10]
        wait_for(lambda: marker_b in stored_ids(b), "an event produced after the failover stored on B", 30)

        # 2. A comes back (same ports, same database), B is killed: the agent moves back to A.
        a.start()
        t1 = time.monotonic()
        b.kill9()
        to_a = failover_seconds(a, t1)
        print(f"failover B -> A: node online on A {to_a:.2f} s after kill -9 of B")
        mark = emitter.count()
        wait_for(lambda: emitter.count() > mark + 20, "more events produced", 30)
        marker_a = emitter.sent[mark + 10]
        wait_for(lambda: marker_a in stored_ids(a), "an event produced after the move back stored on A", 30)
    finally:
        sent = emitter.stop()

    wait_for(lambda: agent.outbox_size() == 0 and sent[-1] in stored_ids(a), "every event acked by A", 60)
    assert agent.running()
    on_a, on_b = stored_ids(a), stored_ids(b)
    print(f"{len(sent)} events produced: {len(on_a)} stored on A, {len(on_b)} on B, "
          f"{len(set(on_a) & set(on_b))} on both")

    # No loss: every event produced is stored on at least one supervisor; none twice on the same one.
    assert set(sent) <= set(on_a) | set(on_b), f"lost: {sorted(set(sent) - set(on_a) - set(on_b))[:5]}"
    assert len(on_a) == len(set(on_a)) and len(on_b) == len(set(on_b))
    assert_gap_free(a, NODE)
    assert_gap_free(b, NODE)
    # Each store holds events in the order they were produced.
    pos = {eid: i for i, eid in enumerate(sent)}
    assert [pos[e] for e in on_a] == sorted(pos[e] for e in on_a)
    assert [pos[e] for e in on_b] == sorted(pos[e] for e in on_b)
    # The at-least-once shape: B holds one contiguous run sent[i:j] (from the first event A had not acked
    # to the last one B acked); A holds what it stored before its kill, sent[:p], and what B had not acked
    # when it died, sent[q:]. An event is on both only inside sent[i:p] (stored by A, its ack lost with A)
    # or sent[q:j] (stored by B, its ack lost with B).
    i, j = pos[on_b[0]], pos[on_b[-1]] + 1
    assert on_b == sent[i:j]
    in_a = set(on_a)
    p = next(k for k in range(len(sent) + 1) if k == len(sent) or sent[k] not in in_a)
    q = pos[next(e for e in on_a if pos[e] >= p)]
    assert on_a == sent[:p] + sent[q:]
    assert i <= p and q <= j, (i, j, p, q)
    overlap = set(on_a) & set(on_b)
    assert overlap == set(sent[i:p]) | set(sent[q:j])
    print(f"on both: {p - i} stored by A but unacked at its kill, {j - q} stored by B but unacked at its kill")
    # The agent logs its registration after the supervisor marked the node online: wait for the line.
    wait_for(lambda: "failover #1" in (log := agent.log_text()) and "failover #2" in log,
             "the agent's log names both failovers", 30, interval=0.2)


def test_agent_skips_a_dead_supervisor_named_by_host_name(make_supervisor, make_agent, tmp_path: Path) -> None:
    """URLs with a host name (resolved by the agent, every address tried): the first names a port nothing
    listens on, the agent registers with the second."""
    sup = make_supervisor("sup-named", server={"heartbeat_interval_sec": 1}).start()
    dead = f"ws://localhost:{free_port()}/ws/agent"
    live = f"ws://localhost:{sup.ws_port}/ws/agent"
    agent = make_agent(sup, "named", supervisor_url=[dead, live]).start()
    agent.wait_online(sup, 60)
    # The supervisor shows the node online before the agent has read its `registered` answer and logged
    # it (a loaded run read the log in between): wait for the line rather than read the log once.
    wait_for(lambda: f"registered with supervisor {live} [" in agent.log_text(),
             "the agent's log names the supervisor it registered with", 30, interval=0.2)
    assert f"cannot connect to supervisor {dead} [" in agent.log_text()  # the address it dialled is named
