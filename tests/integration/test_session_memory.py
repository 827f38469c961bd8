"""Ended sessions leave the real supervisor's memory after `sessions.memory_grace_seconds` and the API
answers for them stay byte-identical; a late event brings one back (issue 22 point 4). Eviction is
observed through the supervisor's own gauges, never by waiting a fixed time."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from tests.support.agentsim import SimAgent, session_state
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)


def gauge(sup: Any, name: str) -> float:
    text = httpx.get(sup.api + "/metrics", timeout=10).text
    found = re.search(rf"^hal_o_swarm_{name} (\S+)$", text, re.M)
    assert found is not None, f"no {name} in /metrics"
    return float(found.group(1))


async def get(sup: Any, path: str, **params: Any) -> bytes:
    def call() -> bytes:
        with sup.client() as c:
            r = c.get(path, params=params)
            assert r.status_code == 200, r.text
            return r.content

    return await asyncio.to_thread(call)


async def test_an_ended_session_leaves_memory_and_reads_the_same(make_supervisor):
    sup = make_supervisor(sessions={"memory_grace_seconds": 2}).start()
    agent = SimAgent(sup.ws_url, sup.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    try:
        await agent.send_event(1, "session.state", session_id="ses_done", project="p",
                               data=session_state("ses_done", "p", "completed", started_at=1_700_000_000.5,
                                                  tokens={"input": 7, "output": 3}, cost_usd=0.125, model="m/x",
                                                  title="finished"))
        await agent.send_event(2, "session.state", session_id="ses_live", project="p",
                               data=session_state("ses_live", "p", "running", started_at=1_700_000_100.25))
        await agent.wait_acked(2, timeout=30)
        one = await get(sup, "/api/v1/sessions/ses_done")
        listed = await get(sup, "/api/v1/sessions")
        node = await get(sup, "/api/v1/nodes/n1")
        await until(lambda: gauge(sup, "sessions_evicted") >= 1, "the ended session to leave memory", 60)
        assert gauge(sup, "sessions_in_memory") == 1  # the live one stays
        assert await get(sup, "/api/v1/sessions/ses_done") == one
        assert await get(sup, "/api/v1/sessions") == listed
        assert await get(sup, "/api/v1/nodes/n1") == node

        # A late event for the evicted session: brought back with everything it had, activity moved on.
        await agent.send_event(3, "message.updated", session_id="ses_done", project="p")
        await agent.wait_acked(3, timeout=30)
        back_bytes = await get(sup, "/api/v1/sessions/ses_done")
        back = httpx.Response(200, content=back_bytes).json()["data"]
        before = httpx.Response(200, content=one).json()["data"]
        assert back["last_activity"] != before["last_activity"]
        assert {k: v for k, v in back.items() if k != "last_activity"} == {
            k: v for k, v in before.items() if k != "last_activity"}
        # ...and leaves again once the grace period has passed since that change.
        await until(lambda: gauge(sup, "sessions_evicted") >= 2, "the session to leave memory again", 60)
        assert await get(sup, "/api/v1/sessions/ses_done") == back_bytes
    finally:
        await agent.close()


async def test_a_bad_grace_period_refuses_the_start_in_one_line(make_supervisor):
    sup = make_supervisor(sessions={"memory_grace_seconds": -1})
    with pytest.raises(RuntimeError, match=r"sessions\.memory_grace_seconds"):
        sup.start(timeout=20)
