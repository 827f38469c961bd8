"""Node-scoped state (issue 14): a node reports and controls only the sessions it owns.

Attacks, each against the real supervisor with per-node tokens: node A claims node B's session id in
its register snapshot, then in `session.state` and plain session events; the supervisor answers A with
an `error` frame, counts and logs it, and applies nothing. An operator's prompt for B's session still
goes to B.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from halswarm.protocol import CommandResult
from tests.support.agentsim import SimAgent, new_session_id, session_state
from tests.support.waiting import until

TOKEN_A, TOKEN_B = "a" * 40, "b" * 40


def _get(sup, path: str) -> dict:  # type: ignore[no-untyped-def]
    with sup.client() as c:
        r = c.get(path)
        r.raise_for_status()
        return r.json()


def _session(sup, sid: str) -> dict:  # type: ignore[no-untyped-def]
    return _get(sup, f"/api/v1/sessions/{sid}")["data"]


def _refused_total(sup) -> float:  # type: ignore[no-untyped-def]
    text = httpx.get(sup.api + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("hal_o_swarm_foreign_session_refused_total{"))


@pytest.fixture
async def two_nodes(make_supervisor):  # type: ignore[no-untyped-def]
    sup = make_supervisor(security={"agent_tokens": {"node-a": TOKEN_A, "node-b": TOKEN_B}}).start()
    sid = new_session_id()
    b = SimAgent(sup.ws_url, TOKEN_B, "node-b", projects=[("proj-b", "/srv/b")])
    a = SimAgent(sup.ws_url, TOKEN_A, "node-a", projects=[("proj-a", "/srv/a")])
    await b.connect(sessions=[session_state(sid, "proj-b", "idle", model="m-b")])
    await until(lambda: _session(sup, sid)["node_id"] == "node-b", what="B's session stored")
    try:
        yield sup, a, b, sid
    finally:
        await a.close()
        await b.close()


async def test_hijack_by_register_snapshot_is_refused(two_nodes):  # type: ignore[no-untyped-def]
    sup, a, _b, sid = two_nodes
    own = new_session_id()
    await a.connect(sessions=[session_state(sid, "proj-a", "running", model="evil"),
                              session_state(own, "proj-a", "running")])
    await until(lambda: a.errors, what="an error frame to node A")
    assert a.errors[0]["code"] == "bad_payload" and sid in a.errors[0]["message"]
    await until(lambda: _session(sup, own)["node_id"] == "node-a", what="A's own session stored")
    s = _session(sup, sid)
    assert (s["node_id"], s["status"], s["model"]) == ("node-b", "idle", "m-b")
    assert await asyncio.to_thread(_refused_total, sup) == 1
    assert "claimed sessions of other nodes" in sup.log_path.read_text()


async def test_hijack_by_events_is_refused(two_nodes):  # type: ignore[no-untyped-def]
    sup, a, _b, sid = two_nodes
    await a.connect()
    await a.send_event(1, "session.state", session_id=sid, data=session_state(sid, "proj-a", "error", model="evil"))
    # The id inside a state event's data wins over the envelope's: it must be checked too.
    await a.send_event(2, "session.state", session_id=None, data=session_state(sid, "proj-a", "killed"))
    await a.send_event(3, "message.updated", session_id=sid, data={"x": 1})
    await a.wait_acked(3)  # the seqs are consumed (no hole), only the refusals are stored
    assert len(a.errors) == 3 and all(e["code"] == "bad_payload" for e in a.errors)
    s = _session(sup, sid)
    assert (s["node_id"], s["status"], s["model"]) == ("node-b", "idle", "m-b")
    events = _get(sup, f"/api/v1/events?session_id={sid}")["data"]
    assert [e["node_id"] for e in events] == [], events  # nothing of A's is stored under B's session
    mine = _get(sup, "/api/v1/events?node_id=node-a")["data"]
    assert sorted(e["type"] for e in mine if e["type"] == "session.foreign_refused") == ["session.foreign_refused"] * 3
    assert await asyncio.to_thread(_refused_total, sup) == 3


async def test_prompt_still_goes_to_the_owner_after_a_hijack_attempt(two_nodes):  # type: ignore[no-untyped-def]
    sup, a, b, sid = two_nodes
    b.handler = lambda cmd: CommandResult(cmd.command_id, "success", {"delivered_to": "node-b"})
    a.handler = lambda cmd: CommandResult(cmd.command_id, "success", {"delivered_to": "node-a"})
    await a.connect(sessions=[session_state(sid, "proj-a", "running")])
    await a.send_event(1, "session.state", session_id=sid, data=session_state(sid, "proj-a", "running"))
    await a.wait_acked(1)

    def prompt() -> dict:
        with sup.client() as c:
            r = c.post(f"/api/v1/sessions/{sid}/prompt", json={"message": "hello"})
            r.raise_for_status()
            return r.json()["data"]

    res = await asyncio.to_thread(prompt)
    assert res["node_id"] == "node-b" and res["output"] == {"delivered_to": "node-b"}
    assert [c.type for c in b.commands] == ["prompt_session"]
    assert a.commands == []
