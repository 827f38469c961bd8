"""Odd values from agents and odd stored rows (issue 15): one event's problem never fails another
event, node or batch, and the API renders every row it holds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3

import httpx

from halswarm.protocol import Event, encode
from tests.support.agentsim import SimAgent, session_state
from tests.support.waiting import until

MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z in milliseconds
MS_ISO = "2023-11-14T22:13:20.000Z"


def _ms_event(node: str, seq: int, session_id: str) -> str:
    return encode(Event(seq=seq, event_id=f"{node}-{seq}", type="message.updated", session_id=session_id,
                        project="p", data={"n": seq}, timestamp=float(MS)))


async def test_ms_timestamps_with_a_live_subscriber_do_not_rewind_a_healthy_node(supervisor):
    sup = supervisor
    headers = {"Authorization": f"Bearer {sup.token}"}
    lines: list[str] = []
    connected = asyncio.Event()

    async def read_sse() -> None:
        async with httpx.AsyncClient(base_url=sup.api, headers=headers, timeout=None) as c, \
                c.stream("GET", "/api/v1/events/stream") as r:
            async for line in r.aiter_lines():
                if line.startswith(": connected"):
                    connected.set()
                lines.append(line)

    sse = asyncio.create_task(read_sse())
    bad = SimAgent(sup.ws_url, sup.agent_token, "nodex", [("p", "/p")])
    good = SimAgent(sup.ws_url, sup.agent_token, "nodey", [("p", "/p")])
    try:
        await asyncio.wait_for(connected.wait(), 20)
        await bad.connect(sessions=[session_state("ses_ms", "p", "running", started_at=MS, last_activity=MS)])
        await good.connect()
        for seq in range(1, 139):
            await good.send_event(seq, project="p")
            if seq % 23 == 0:  # the bad node's events land in the same batches
                await bad.send_raw(_ms_event("nodex", seq // 23, "ses_ms"))
        await good.wait_acked(138, timeout=30)
        await bad.wait_acked(6, timeout=30)
        assert not [e for e in good.errors if e["code"] == "seq_gap"], good.errors[:3]
        assert not [e for e in bad.errors if e["code"] == "seq_gap"], bad.errors[:3]
        good.assert_acks_monotonic()
        def streamed() -> list[dict]:
            return [json.loads(ln[6:]) for ln in list(lines) if ln.startswith("data: ")]

        await until(lambda: sum(e["node_id"] == "nodey" for e in streamed()) >= 138, timeout=20,
                    what="the subscriber to get every event of the healthy node")
        assert any(e["node_id"] == "nodex" and e["timestamp"] == MS_ISO for e in streamed())
        with sup.client() as c:
            r = c.get("/api/v1/events", params={"node_id": "nodex", "limit": 10})
            assert r.status_code == 200, r.text
            assert {e["timestamp"] for e in r.json()["data"] if e["seq"]} == {MS_ISO}
            r = c.get("/api/v1/sessions")
            assert r.status_code == 200, r.text
            r = c.get("/api/v1/sessions/ses_ms")
            assert r.status_code == 200, r.text
            assert r.json()["data"]["started_at"] == MS_ISO
            metrics = c.get("/metrics").text
        assert ('hal_o_swarm_ingest_values_normalised_total{field="event.timestamp",reason="milliseconds"} 6.0'
                in metrics)
        assert 'field="session.started_at",reason="milliseconds"' in metrics
    finally:
        sse.cancel()
        with contextlib.suppress(BaseException):
            await sse
        await bad.close()
        await good.close()


async def test_odd_stored_rows_of_an_old_database_still_render(make_supervisor):
    sup = make_supervisor().start()
    sup.stop()
    db = sqlite3.connect(sup.db_path)
    # The epoch column is `ts` since migration 012 (`timestamp` became generated text); older: `timestamp`.
    columns = {r[1] for r in db.execute("PRAGMA table_info(events)")}
    ts_col = "ts" if "ts" in columns else "timestamp"
    odd = [MS, 1e300, -5.0, "garbage", "2026-01-02T03:04:05Z", b"\xff\x00"]
    for i, ts in enumerate(odd, 1):
        db.execute(f"INSERT INTO events(node_id, seq, event_id, session_id, project, type, data, {ts_col}, "
                   "received_at) VALUES ('old', ?, ?, 'ses_old', 'p', 'x', ?, ?, ?)",
                   (i, f"old-{i}", "not json" if i % 2 else '{"a":1}', ts, ts))
    db.execute("INSERT INTO nodes(id, hostname, status) VALUES ('old', 'o', 'offline')")
    db.execute("INSERT INTO sessions(id, node_id, project, status, started_at, last_activity) "
               "VALUES ('ses_old', 'old', 'p', 'idle', ?, ?)", (MS, MS))
    db.execute("INSERT INTO sessions(id, node_id, project, status, started_at, last_activity) "
               "VALUES ('ses_huge', 'old', 'p', 'idle', 1e300, 'soon')")
    db.commit()
    db.close()
    sup.start()
    with sup.client() as c:
        for params in ({}, {"order": "asc"}, {"node_id": "old"}, {"session_id": "ses_old"}):
            r = c.get("/api/v1/events", params=params)
            assert r.status_code == 200, (params, r.text)
        data = {e["seq"]: e for e in c.get("/api/v1/events", params={"node_id": "old"}).json()["data"]}
        assert data[1]["timestamp"] == MS_ISO and data[1]["data"] is None
        assert data[2]["timestamp"] is None and data[5]["timestamp"] == "2026-01-02T03:04:05.000Z"
        r = c.get("/api/v1/sessions")
        assert r.status_code == 200, r.text
        r = c.get("/api/v1/sessions/ses_old")
        assert r.status_code == 200 and r.json()["data"]["started_at"] == MS_ISO, r.text
        r = c.get("/api/v1/nodes/old")
        assert r.status_code == 200, r.text
