"""The live event stream against the real supervisor (issue 22 point 5, issue 18 point 5).

Readers are real HTTP clients on loopback (a raw socket with a small receive buffer, decoded with h11),
so a reader that stops reading really pushes back on the server. Each test checks the events by their
agent seq: none lost, none twice, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psutil
import pytest

from tests.support.agentsim import SimAgent
from tests.support.sse import SseReader
from tests.support.waiting import wait_for

PAYLOAD = "x" * 2000  # ~2 KB a frame: 15,000 of them overflow the shared buffer's 10,000 frames
RING_BYTES = 32 * 2**20


def metric(sup: Any, name: str) -> float:
    text = httpx.get(sup.api + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def send(agent: SimAgent, seqs: range, data: Any = None) -> None:
    for seq in seqs:
        await agent.send_event(seq, "message.part.delta", session_id="ses_s", project="p", data=data)
        if seq % 200 == 0:
            await asyncio.sleep(0)
    await agent.wait_acked(seqs[-1], timeout=120)


async def until(pred: Any, what: str, timeout: float = 60) -> None:
    await asyncio.to_thread(wait_for, pred, what, timeout)


@pytest.mark.timeout(240)
async def test_a_reader_that_stops_then_reads_slowly_catches_up_from_the_store_and_stays_open(supervisor):
    """Two rounds of `n` events (~31 MB each): a warm-up read by both streams (it fills the shared buffer
    to its bound and warms the store's cache and the allocator), then a round the stalled stream does
    not read. RSS alone cannot tell ~31 MB held for that stream from the allocator's own growth, so the
    proof is the catch-up: a server that kept writing to the stalled stream would never fall behind the
    shared buffer; one that blocks on it does, and must read the store once the reader is back."""
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    stalled = SseReader(supervisor, {"node_id": "n1", "type": "message.part.*"}).start()
    steady = SseReader(supervisor, {"node_id": "n1", "type": "message.part.*"}).start()
    n = 15_000
    proc = psutil.Process(supervisor.proc.pid)

    async def round_of(first: int) -> tuple[int, float]:
        """Send events first..first+n-1; (RSS growth once the steady stream has them all, peak buffer)."""
        before, peak = proc.memory_info().rss, 0.0
        for start in range(first, first + n, 1000):
            await send(agent, range(start, start + 1000), {"text": PAYLOAD})
            peak = max(peak, metric(supervisor, "hal_o_swarm_stream_buffer_bytes"))
        await until(lambda: len(steady.seqs()) >= first + n - 1, "the steady reader has every event", 120)
        return proc.memory_info().rss - before, peak

    try:
        await until(lambda: stalled.connected.is_set() and steady.connected.is_set(), "both streams open")
        await round_of(1)
        await until(lambda: len(stalled.seqs()) >= n, "both read the warm-up", 120)
        stalled.paused.set()
        growth, peak_ring = await round_of(n + 1)  # the steady reader is served in full meanwhile
        assert peak_ring <= RING_BYTES
        # A loose guard only (the warm-up leaves ~15 MB of allocator growth in this round).
        assert growth < 64 * 2**20, f"RSS grew by {growth / 2**20:.0f} MB for a reader that stopped"
        assert not stalled.closed.is_set(), "the server closed a stream that had stopped reading"
        catchups = metric(supervisor, "hal_o_swarm_stream_catchups_total")
        stalled.read_delay = 0.002  # then reads slowly; nothing else is sent meanwhile
        stalled.paused.clear()
        await until(lambda: len(stalled.seqs()) >= 2 * n, "the stalled reader caught up", 180)
        assert metric(supervisor, "hal_o_swarm_stream_catchups_total") > catchups, (
            "the stalled stream never fell behind the shared buffer: the server kept writing to it")
        await send(agent, range(2 * n + 1, 2 * n + 6))  # still open, and live again
        await until(lambda: len(stalled.seqs()) >= 2 * n + 5, "the caught-up reader gets live events", 60)
    finally:
        stalled.stop()
        steady.stop()
        await agent.close()
    assert stalled.seqs() == list(range(1, 2 * n + 6)), "the slow reader lost or repeated events"
    assert steady.seqs()[:2 * n] == list(range(1, 2 * n + 1))
    ids = [i for i, _ in stalled.events]
    assert ids == sorted(set(ids))
    assert not stalled.closed.is_set()


@pytest.mark.timeout(120)
async def test_each_event_is_encoded_once_whatever_the_number_of_subscribers(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    readers = [SseReader(supervisor, {"node_id": "n1"}).start() for _ in range(6)]
    try:
        await until(lambda: all(r.connected.is_set() for r in readers), "six streams open")
        encoded0 = metric(supervisor, "hal_o_swarm_stream_frames_encoded_total")
        stored0 = metric(supervisor, "hal_o_swarm_events_total")
        await send(agent, range(1, 301))
        await until(lambda: all(len(r.seqs()) >= 300 for r in readers), "every reader has every event")
        encoded = metric(supervisor, "hal_o_swarm_stream_frames_encoded_total") - encoded0
        stored = metric(supervisor, "hal_o_swarm_events_total") - stored0
    finally:
        for r in readers:
            r.stop()
        await agent.close()
    assert stored >= 300
    assert encoded == stored, f"{encoded:.0f} frames encoded for {stored:.0f} events and 6 subscribers"
    for r in readers:
        assert r.seqs() == list(range(1, 301))


@pytest.mark.timeout(180)
async def test_resume_from_last_event_id_across_a_restart_loses_and_repeats_nothing(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    first = SseReader(supervisor, {"node_id": "n1", "type": "message.part.*"}, limit=120).start()
    try:
        await until(first.connected.is_set, "stream open")
        await send(agent, range(1, 201))
        await until(lambda: len(first.seqs()) >= 120, "the first reader got some events")
    finally:
        first.stop()
        await agent.close()
    seen = list(first.events)
    last_id = seen[-1][0]
    supervisor.stop()
    supervisor.start()
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
    reg = await agent.connect(last_acked_seq=200)
    assert reg.resume_from_seq == 200
    resumed = SseReader(supervisor, {"node_id": "n1", "type": "message.part.*"}, last_event_id=str(last_id)).start()
    try:
        await until(resumed.connected.is_set, "resumed stream open")
        await send(agent, range(201, 301))
        await until(lambda: len(resumed.seqs()) >= 300 - len(seen), "the resumed reader has the rest", 60)
    finally:
        resumed.stop()
        await agent.close()
    got = [ev["seq"] for _, ev in seen] + resumed.seqs()
    assert got == list(range(1, 301)), "resuming lost or repeated events"
    assert resumed.events[0][0] > last_id


@pytest.mark.timeout(60)
async def test_a_last_event_id_that_is_not_an_id_is_a_validation_error(supervisor):
    def get(value: str) -> httpx.Response:
        with supervisor.client() as c:
            return c.get("/api/v1/events/stream", headers={"Last-Event-ID": value})

    r = await asyncio.to_thread(get, "abc")
    assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR", r.text
