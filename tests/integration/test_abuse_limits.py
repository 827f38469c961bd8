"""Abuse limits (issue 14): trickling connections are closed after the read timeout on both ports, and
event types chosen by an agent cannot grow `/metrics` without bound."""

from __future__ import annotations

import asyncio
import re
import select
import socket
import time

import httpx
import pytest

from tests.support.agentsim import SimAgent

READ_TIMEOUT = 1.5
GIVE_UP = 20.0  # the old code never closes: stop trickling after this


def _trickle(port: int, payload: bytes, interval: float = 0.2) -> tuple[float, bytes] | None:
    """Send `payload` one byte per `interval` on a fresh loopback connection, until the server answers
    or closes: (seconds it took, what it sent), or None if it still listened after GIVE_UP seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        started = time.monotonic()
        for i in range(len(payload)):
            try:
                s.sendall(payload[i:i + 1])
            except OSError:  # reset by the server
                return time.monotonic() - started, b""
            if select.select([s], [], [], interval)[0]:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                return time.monotonic() - started, data
            if time.monotonic() - started > GIVE_UP:
                return None
    raise AssertionError("payload too short for the test")


@pytest.fixture
def sup(make_supervisor):  # type: ignore[no-untyped-def]
    return make_supervisor(server={"read_timeout_sec": READ_TIMEOUT}).start()


@pytest.mark.parametrize("payload", [
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 400,  # headers never end
    b"POST /api/v1/cost/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 400\r\n\r\n" + b" " * 400,  # the body never ends
], ids=["headers", "body"])
def test_trickling_http_request_is_closed(sup, payload):  # type: ignore[no-untyped-def]
    got = _trickle(sup.http_port, payload)
    assert got is not None, f"HTTP API still reading a trickling request after {GIVE_UP} s"
    took, data = got
    assert READ_TIMEOUT * 0.8 <= took < READ_TIMEOUT + 6, took
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
    # A normal client is unaffected, also on a kept-alive connection.
    with httpx.Client(base_url=sup.api) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz").status_code == 200


def test_silent_http_connection_is_closed(sup):  # type: ignore[no-untyped-def]
    with socket.create_connection(("127.0.0.1", sup.http_port), timeout=5) as s:
        started = time.monotonic()
        ready = select.select([s], [], [], GIVE_UP)[0]
        assert ready, "a connection that sends nothing is held open"
        assert s.recv(4096).startswith((b"", b"HTTP/1.1 408"))
        assert time.monotonic() - started < READ_TIMEOUT + 6


def test_trickling_websocket_handshake_is_closed(sup):  # type: ignore[no-untyped-def]
    payload = (b"GET /ws/agent HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"X-Pad: " + b"a" * 400)
    got = _trickle(sup.ws_port, payload)
    assert got is not None, f"agent hub still reading a trickling handshake after {GIVE_UP} s"
    assert got[0] < READ_TIMEOUT + 6, got


async def test_agent_chosen_event_types_do_not_grow_metrics(supervisor):  # type: ignore[no-untyped-def]
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "noisy")
    await agent.connect()
    try:
        n = 3000
        for seq in range(1, n + 1):
            await agent.send_event(seq, f"made.up.type{seq}", data={})
        await agent.send_event(n + 1, "session.idle", data={})
        await agent.wait_acked(n + 1, timeout=60)
    finally:
        await agent.close()
    text = (await asyncio.to_thread(httpx.get, supervisor.api + "/metrics", timeout=10)).text
    types = set(re.findall(r'^hal_o_swarm_events_total\{type="([^"]*)"\}', text, re.M))
    assert types <= {"other", "session.idle", "node.online", "node.offline"}, sorted(types)[:10]
    assert {"other", "session.idle"} <= types
    labels = set(re.findall(r'type="([^"]*)"', text))
    assert len(labels) < 200  # every event type label, plus the other metrics' `type` labels
    assert len(text.encode()) < 200_000, len(text.encode())
