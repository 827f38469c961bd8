"""Event ingestion against the real supervisor: seq rules, durability across kill -9, bad frames."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tests.support.agentsim import SimAgent, raw_frame, session_state


def rows(db_path, sql: str, *args):  # type: ignore[no-untyped-def]
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


async def test_events_stored_once_and_acked_in_order(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    try:
        for seq in range(1, 201):
            await agent.send_event(seq, "message.part.delta", session_id="ses_x", project="p")
        await agent.wait_acked(200)
        first_pass = len(agent.ack_log)
        # Resend a window that is already stored: acknowledged again, not stored twice.
        agent.acked = 0
        for seq in range(150, 201):
            await agent.send_event(seq, "message.part.delta", session_id="ses_x", project="p")
        await agent.wait_acked(200)
        # Out of order and duplicated inside the already-stored range, then new events.
        for seq in (120, 5, 200, 201, 201, 202):
            await agent.send_event(seq, "message.part.delta", session_id="ses_x", project="p")
        await agent.wait_acked(202)
        agent.assert_acks_monotonic()
        assert agent.ack_log[first_pass - 1] == 200 and agent.ack_log[-1] == 202
        assert len(agent.ack_log) > first_pass  # the resent window was acknowledged again
        got = rows(supervisor.db_path, "SELECT seq FROM events WHERE node_id='n1' AND seq IS NOT NULL ORDER BY seq")
        assert [r[0] for r in got] == list(range(1, 203))
        with supervisor.client() as c:
            r = c.get("/api/v1/events", params={"node_id": "n1", "type": "message.part.*", "limit": 5, "offset": 10})
        body = r.json()
        meta = body["meta"]
        assert {k: meta[k] for k in ("total", "total_is_estimate", "limit", "offset")} == {
            "total": 202, "total_is_estimate": False, "limit": 5, "offset": 10}
        assert [e["seq"] for e in body["data"]] == [11, 12, 13, 14, 15]
        with supervisor.client() as c:  # the cursors continue where the offset page ends, both ways
            nxt = c.get("/api/v1/events", params={"node_id": "n1", "limit": 3, "after": meta["next"]}).json()
            prv = c.get("/api/v1/events", params={"node_id": "n1", "limit": 3, "before": meta["prev"]}).json()
        assert [e["seq"] for e in nxt["data"]] == [16, 17, 18]
        assert [e["seq"] for e in prv["data"]] == [8, 9, 10]
        assert set(body["data"][0]) >= {"node_id", "seq", "event_id", "session_id", "project", "type", "data",
                                         "timestamp"}
    finally:
        await agent.close()


async def test_gap_is_refused_with_seq_gap_error(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "gappy")
    await agent.connect()
    try:
        await agent.send_event(1)
        await agent.wait_acked(1)
        await agent.send_event(3)  # 2 is missing
        err = await agent.next_frame("error")
        assert err.payload.code == "seq_gap"
        assert "expected seq 2" in err.payload.message
        await agent.send_event(2)
        await agent.send_event(3)
        await agent.wait_acked(3)
        agent.assert_acks_monotonic()
        got = rows(supervisor.db_path, "SELECT seq FROM events WHERE node_id='gappy' AND seq IS NOT NULL"
                                       " ORDER BY seq")
        assert [r[0] for r in got] == [1, 2, 3]
    finally:
        await agent.close()


async def test_bad_frames_get_error_replies_and_connection_survives(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "badframes")
    await agent.connect()
    try:
        cases = [
            ("not json at all {", "bad_json"),
            ("x" * (2 * 1024 * 1024), "frame_too_large"),
            (raw_frame("heartbeat", {}, version=2), "unsupported_version"),
            (raw_frame("telepathy", {}), "unknown_type"),
            (raw_frame("event", {"seq": "one", "event_id": "e", "type": "t"}), "bad_payload"),
            (b"\xff\xfe binary garbage", "bad_json"),
            (raw_frame("ack", {"seq": 1}), "unexpected_type"),
        ]
        for frame, code in cases:
            await agent.send_raw(frame)
            err = await agent.next_frame("error")
            assert err.payload.code == code, (code, err.payload)
        await agent.send_event(1)
        await agent.wait_acked(1)
        metrics = (await asyncio.to_thread(httpx.get, supervisor.api + "/metrics")).text
        for code in ("bad_json", "frame_too_large", "unsupported_version", "unknown_type", "bad_payload"):
            assert f'hal_o_swarm_errors_total{{component="hub",type="{code}"}}' in metrics
        with supervisor.client() as c:
            assert c.get("/api/v1/nodes/badframes").json()["data"]["status"] == "online"
    finally:
        await agent.close()


async def test_kill9_mid_stream_loses_no_acked_event_and_stores_none_twice(make_supervisor):
    sup = make_supervisor().start()
    agent = SimAgent(sup.ws_url, sup.agent_token, "crashy", [("p", "/p")])
    await agent.connect()
    for seq in range(1, 1201):
        await agent.send_event(seq, session_id="ses_c", project="p")
        if seq == 600:
            await agent.wait_acked(300)
    # Kill while the tail of the stream is still in flight.
    sup.kill9()
    acked_before_crash = agent.acked
    await agent.close()
    assert acked_before_crash >= 300
    stored = {r[0] for r in rows(sup.db_path, "SELECT seq FROM events WHERE node_id='crashy' AND seq IS NOT NULL")}
    assert set(range(1, acked_before_crash + 1)) <= stored, "an acknowledged event was lost"

    sup.start()
    again = SimAgent(sup.ws_url, sup.agent_token, "crashy", [("p", "/p")])
    reg = await again.connect(last_acked_seq=acked_before_crash)
    try:
        assert reg.resume_from_seq >= acked_before_crash
        assert reg.resume_from_seq == max(stored)
        # The agent resends everything after resume_from_seq, then continues.
        for seq in range(reg.resume_from_seq + 1, 1501):
            await again.send_event(seq, session_id="ses_c", project="p")
        await again.wait_acked(1500)
    finally:
        await again.close()
    got = [r[0] for r in rows(sup.db_path, "SELECT seq FROM events WHERE node_id='crashy' AND seq IS NOT NULL"
                                           " ORDER BY seq")]
    assert got == list(range(1, 1501)), "missing or duplicate events after restart"


async def test_restart_reloads_state_offline_until_reregistered(make_supervisor):
    sup = make_supervisor().start()
    agent = SimAgent(sup.ws_url, sup.agent_token, "keeper", [("proj", "/proj")])
    await agent.connect(sessions=[session_state("ses_k", "proj", "running", tokens={"input": 5, "output": 7})])
    await agent.send_event(1, session_id="ses_k", project="proj")
    await agent.wait_acked(1)
    await agent.close()
    sup.stop()
    sup.start()
    with sup.client() as c:
        node = c.get("/api/v1/nodes/keeper").json()["data"]
        assert node["status"] == "offline" and node["projects"] == ["proj"]
        s = c.get("/api/v1/sessions/ses_k").json()["data"]
        assert s["status"] == "unreachable" and s["tokens"] == {"input": 5, "output": 7, "total": 12}
    back = SimAgent(sup.ws_url, sup.agent_token, "keeper", [("proj", "/proj")])
    reg = await back.connect(sessions=[session_state("ses_k", "proj", "idle")])
    try:
        assert reg.resume_from_seq == 1
        with sup.client() as c:
            assert c.get("/api/v1/nodes/keeper").json()["data"]["status"] == "online"
            assert c.get("/api/v1/sessions/ses_k").json()["data"]["status"] == "idle"
    finally:
        await back.close()


async def test_rows_with_bad_timestamps_are_tolerated_on_start(make_supervisor):
    sup = make_supervisor().start()
    sup.stop()
    db = sqlite3.connect(sup.db_path)
    db.execute("INSERT INTO nodes(id, hostname, status, last_heartbeat) VALUES ('good', 'g', 'online', 1700000000)")
    db.execute("INSERT INTO nodes(id, hostname, status, last_heartbeat) VALUES ('bad', 'b', 'online', 'yesterday')")
    db.execute("INSERT INTO sessions(id, node_id, project, status, started_at) VALUES ('s-ok','good','p','running',"
               "'2026-01-02T03:04:05Z')")
    db.execute("INSERT INTO sessions(id, node_id, project, status, started_at) VALUES ('s-bad','good','p','running',"
               "'not a time')")
    db.execute("INSERT INTO sessions(id, node_id, project, status) VALUES ('s-weird','good','p','exploded')")
    db.commit()
    db.close()
    sup.start()
    with sup.client() as c:
        ids = [n["id"] for n in c.get("/api/v1/nodes").json()["data"]]
        assert ids == ["good"]
        sessions = c.get("/api/v1/sessions").json()
        assert [s["id"] for s in sessions["data"]] == ["s-ok"]
        assert sessions["data"][0]["status"] == "unreachable"
        assert sessions["data"][0]["started_at"] == "2026-01-02T03:04:05.000Z"
    log = sup.log_path.read_text()
    assert "skipped unreadable row" in log and "yesterday" in log and "exploded" in log


async def test_session_state_events_drive_the_tracker(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "st", [("p", "/p")])
    await agent.connect()
    try:
        await agent.send_event(1, "session.state", session_id="ses_t", project="p",
                               data=session_state("ses_t", "p", "running", model="fake/fake-model",
                                                  tokens={"input": 10, "output": 3, "total": 13}, cost_usd=0.01))
        await agent.send_event(2, "session.state", session_id="ses_t", project="p",
                               data=session_state("ses_t", "p", "waiting_input", compaction_count=2,
                                                  current_task="Fix the build"))
        await agent.wait_acked(2)
        with supervisor.client() as c:
            s = c.get("/api/v1/sessions/ses_t").json()["data"]
        assert s["status"] == "waiting_input"
        assert s["model"] == "fake/fake-model"
        assert s["tokens"] == {"input": 10, "output": 3, "total": 13}
        assert s["compaction_count"] == 2 and s["current_task"] == "Fix the build"
        assert s["cost_usd"] == 0.01
        stored = rows(supervisor.db_path, "SELECT status, tokens_total FROM sessions WHERE id='ses_t'")
        assert stored == [("waiting_input", 13)]
    finally:
        await agent.close()


async def test_sigterm_flushes_and_exits_cleanly(make_supervisor):
    """SIGTERM right after a burst, acks not awaited: every ack the agent got is stored, none twice, and
    the supervisor refuses new agent connections while it shuts down."""
    sup = make_supervisor().start()
    agent = SimAgent(sup.ws_url, sup.agent_token, "term")
    await agent.connect()
    for seq in range(1, 2001):
        await agent.send_event(seq)
    assert sup.proc is not None
    sup.proc.send_signal(signal.SIGTERM)
    refused_while_running = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            async with connect(sup.ws_url, additional_headers={"Authorization": f"Bearer {sup.agent_token}"},
                               open_timeout=2):
                pass  # shutdown not started yet
        except (OSError, InvalidStatus, InvalidHandshake, TimeoutError):
            refused_while_running = sup.proc.poll() is None
            break
        await asyncio.sleep(0.01)
    rc = await asyncio.to_thread(sup.stop)
    assert agent.ws is not None
    await asyncio.wait_for(agent.ws.wait_closed(), 10)  # the supervisor closed the agent's link itself
    assert agent.ws.close_code == 1001, agent.ws.close_code  # going away, not 1011 from a killed handler
    acked = agent.acked
    await agent.close()
    assert rc == 0
    assert refused_while_running is True, "a new connection was not refused while the supervisor shut down"
    stored = [r[0] for r in rows(sup.db_path, "SELECT seq FROM events WHERE node_id='term' AND seq IS NOT NULL")]
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert set(range(1, acked + 1)) <= set(stored), f"acked up to {acked}, but not all of it is stored"
    assert acked > 0
    agent.assert_acks_monotonic()
    assert "supervisor stopped" in sup.log_path.read_text()
