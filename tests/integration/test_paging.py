"""Cursor paging against the real supervisor (issue 22): a walk by `meta.next` returns every stored
event exactly once while an agent keeps sending; bad cursors are a 400 VALIDATION_ERROR on every paged
route; the SSE catch-up replays every stored event from `since` (not one page of them), then goes live."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

import httpx
import pytest

from halswarm.core.paging import encode_cursor
from tests.support.agentsim import SimAgent

PAGED = ("/api/v1/events", "/api/v1/audit", "/api/v1/sessions", "/api/v1/nodes")


async def _get(sup: Any, path: str, **params: Any) -> httpx.Response:
    def call() -> httpx.Response:
        with sup.client() as c:
            return c.get(path, params=params)

    return await asyncio.to_thread(call)


async def _send(agent: SimAgent, seqs: range) -> None:
    for seq in seqs:
        await agent.send_event(seq, "message.part.delta", session_id="ses_p", project="p")
    await agent.wait_acked(seqs[-1], timeout=30)


@pytest.mark.timeout(120)
async def test_cursor_walk_returns_each_event_once_while_an_agent_sends(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    try:
        await _send(agent, range(1, 301))
        stored = {e["id"] for e in (await _get(supervisor, "/api/v1/events", node_id="n1", limit=1000)).json()["data"]}
        assert len(stored) >= 300  # the agent's events and the hub's own about the node
        sending = asyncio.create_task(_send(agent, range(301, 601)))
        seen: list[dict[str, Any]] = []
        params: dict[str, Any] = {"node_id": "n1", "limit": 9}
        pages = 0
        while True:
            body = (await _get(supervisor, "/api/v1/events", **params)).json()
            seen += body["data"]
            pages += 1
            if body["meta"]["next"] is None:
                break
            params["after"] = body["meta"]["next"]
        await sending
    finally:
        await agent.close()
    ids = Counter(e["id"] for e in seen)
    assert max(ids.values()) == 1, "an event was returned twice"
    assert stored <= set(ids), f"{len(stored - set(ids))} stored events were skipped"
    # The walk is in (timestamp, id) order at full precision; the answer shows timestamps cut to the
    # millisecond, so within one millisecond the ids may come in any order (agent clocks, not ids, rule).
    stamps = [e["timestamp"] for e in seen]
    assert stamps == sorted(stamps)
    assert pages > 300 // 9


@pytest.mark.parametrize("path", PAGED)
async def test_bad_cursors_are_validation_errors(supervisor, path):
    good = encode_cursor((1.0, 1) if path in ("/api/v1/events", "/api/v1/audit") else
                         (1.0, "x") if path == "/api/v1/sessions" else ("x",))
    bad = [{"after": "%%%"}, {"before": "bm90IGpzb24"}, {"after": encode_cursor((1.0, "x", 3))},
           {"after": "A" * 600}, {"after": good, "before": good}, {"after": good, "offset": 3}]
    for params in bad:
        r = await _get(supervisor, path, **params)
        assert r.status_code == 400, (path, params, r.status_code, r.text)
        assert r.json()["code"] == "VALIDATION_ERROR", r.text
    r = await _get(supervisor, path, after=good)
    assert r.status_code == 200 and {"next", "prev", "total_is_estimate"} <= set(r.json()["meta"])


def _read_stream(sup: Any, params: dict[str, Any], want: int, connected: threading.Event,
                 got: list[dict[str, Any]], done: threading.Event) -> None:
    """In a daemon thread: a test that fails while this still reads never hangs its own teardown."""
    try:
        with httpx.stream("GET", sup.api + "/api/v1/events/stream", params=params,
                          headers={"Authorization": f"Bearer {sup.token}"}, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    if len(got) == want:
                        return
    finally:
        done.set()


@pytest.mark.timeout(120)
async def test_stream_replays_every_stored_event_from_since_then_goes_live(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    got: list[dict[str, Any]] = []
    connected, done = threading.Event(), threading.Event()
    try:
        await _send(agent, range(1, 1201))  # more than the old single replay page of 1000
        threading.Thread(target=_read_stream, daemon=True, args=(
            supervisor, {"node_id": "n1", "type": "message.part.*", "since": "0"}, 1205, connected, got, done)).start()
        assert await asyncio.to_thread(connected.wait, 60), f"the replay never finished ({len(got)} events)"
        await _send(agent, range(1201, 1206))
        assert await asyncio.to_thread(done.wait, 60), f"only {len(got)} events arrived"
    finally:
        await agent.close()
    assert [e["seq"] for e in got] == list(range(1, 1206))
