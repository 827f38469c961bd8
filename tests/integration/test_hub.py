"""The real supervisor process against protocol-speaking test agents: registration and liveness."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.agentsim import SimAgent, session_state
from tests.support.waiting import until


def api_get(sup, path: str, **params):  # type: ignore[no-untyped-def]
    with sup.client() as c:
        r = c.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_register_exposes_node_projects_and_resources(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "node-a",
                     [("alpha", "/srv/alpha"), ("beta", "/srv/beta")])
    reg = await agent.connect(sessions=[session_state("ses_1", "alpha", "idle", model="fake/m")])
    try:
        assert reg.node_id == "node-a"
        assert reg.resume_from_seq == 0
        assert reg.heartbeat_interval_sec == 30
        node = api_get(supervisor, "/api/v1/nodes/node-a")["data"]
        assert node["status"] == "online"
        assert node["projects"] == ["alpha", "beta"]
        assert node["hostname"] == "node-a.test"
        assert node["resources"]["ram_total_mb"] == 1000
        assert node["connected_at"] and node["last_heartbeat"]
        s = api_get(supervisor, "/api/v1/sessions/ses_1")["data"]
        assert (s["node_id"], s["project"], s["status"], s["model"]) == ("node-a", "alpha", "idle", "fake/m")
        listing = api_get(supervisor, "/api/v1/nodes")
        assert listing["meta"]["total"] == 1
        online = await until(lambda: api_get(supervisor, "/api/v1/events", type="node.online")["data"],
                                what="node.online event")
        assert online[0]["node_id"] == "node-a" and online[0]["seq"] is None
    finally:
        await agent.close()


async def test_closed_connection_marks_offline_and_sessions_unreachable(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "node-b", [("alpha", "/srv/alpha")])
    await agent.connect(sessions=[session_state("ses_b1", "alpha", "running")])
    await agent.close()
    await until(lambda: api_get(supervisor, "/api/v1/nodes/node-b")["data"]["status"] == "offline",
                   what="node offline")
    s = api_get(supervisor, "/api/v1/sessions/ses_b1")["data"]
    assert s["status"] == "unreachable"
    ev = await until(lambda: api_get(supervisor, "/api/v1/events", type="node.offline", node_id="node-b")["data"],
                        what="node.offline event")
    assert ev[0]["data"]["unreachable_sessions"] == ["ses_b1"]


async def test_heartbeat_timeout_marks_silent_node_offline(make_supervisor):
    sup = make_supervisor(server={"heartbeat_interval_sec": 1, "heartbeat_timeout_count": 2}).start()
    chatty = SimAgent(sup.ws_url, sup.agent_token, "chatty")
    silent = SimAgent(sup.ws_url, sup.agent_token, "silent", [("p", "/p")])
    await chatty.connect()
    await silent.connect(sessions=[session_state("ses_s", "p", "running")])
    try:
        started = time.monotonic()
        # WebSocket pings keep flowing underneath (library keepalive), but they do not count as liveness.
        while time.monotonic() - started < 8:
            await chatty.heartbeat()
            await asyncio.sleep(0.25)
            if api_get(sup, "/api/v1/nodes/silent")["data"]["status"] == "offline":
                break
        elapsed = time.monotonic() - started
        assert api_get(sup, "/api/v1/nodes/silent")["data"]["status"] == "offline"
        # Timeout is 1 s x 2: not before ~2 s of silence, and promptly after (slack for a loaded CI box).
        assert 1.5 < elapsed < 6
        assert api_get(sup, "/api/v1/nodes/chatty")["data"]["status"] == "online"
        assert api_get(sup, "/api/v1/sessions/ses_s")["data"]["status"] == "unreachable"
        offline = await until(lambda: api_get(sup, "/api/v1/events", type="node.offline", node_id="silent")["data"],
                                 what="node.offline event of the silent node")
        assert offline[0]["data"]["unreachable_sessions"] == ["ses_s"]
        assert "no frame for" in offline[0]["data"]["reason"]
        assert api_get(sup, "/api/v1/events", type="node.offline", node_id="chatty")["meta"]["total"] == 0
        with pytest.raises(ConnectionClosed):  # the supervisor closed the silent link
            for _ in range(50):
                await silent.heartbeat()
                await asyncio.sleep(0.1)
    finally:
        await chatty.close()
        await silent.close()


async def test_in_band_reregister_keeps_the_link_alive(make_supervisor):
    """A register frame on an open connection updates that link: heartbeats on it keep the node online."""
    from halswarm.protocol import ProjectRef, Register, encode

    sup = make_supervisor(server={"heartbeat_interval_sec": 1, "heartbeat_timeout_count": 2}).start()
    agent = SimAgent(sup.ws_url, sup.agent_token, "rereg", [("p1", "/p1")])
    await agent.connect()
    try:
        assert agent.ws is not None
        again = Register(node_id="rereg", hostname="rereg.test", version="test",
                         projects=[ProjectRef("p1", "/p1"), ProjectRef("p2", "/p2")],
                         sessions=[session_state("ses_rr", "p2", "idle")], last_acked_seq=0)
        await agent.ws.send(encode(again))
        assert (await agent.next_frame("registered")).payload.node_id == "rereg"
        # Another node_id on the same connection is refused; the connection stays usable.
        await agent.ws.send(encode(Register(node_id="someone-else", hostname="x", version="test")))
        err = await agent.next_frame("error")
        assert err.payload.code == "bad_payload" and "registered as rereg" in err.payload.message
        # Heartbeats for well over the 2 s timeout: the node must stay online throughout.
        started = time.monotonic()
        while time.monotonic() - started < 5:
            await agent.heartbeat()
            await asyncio.sleep(0.25)
            assert api_get(sup, "/api/v1/nodes/rereg")["data"]["status"] == "online", \
                f"went offline {time.monotonic() - started:.1f} s after an in-band re-register"
        node = api_get(sup, "/api/v1/nodes/rereg")["data"]
        assert node["projects"] == ["p1", "p2"]
        assert api_get(sup, "/api/v1/sessions/ses_rr")["data"]["status"] == "idle"
        assert api_get(sup, "/api/v1/nodes")["meta"]["total"] == 1  # no node "someone-else"
        assert api_get(sup, "/api/v1/events", type="node.offline")["meta"]["total"] == 0
        await agent.send_event(1)
        await agent.wait_acked(1)
    finally:
        await agent.close()


async def test_reregister_replaces_old_connection(supervisor):
    first = SimAgent(supervisor.ws_url, supervisor.agent_token, "node-r", [("p1", "/p1")])
    second = SimAgent(supervisor.ws_url, supervisor.agent_token, "node-r", [("p1", "/p1"), ("p2", "/p2")])
    await first.connect()
    await second.connect()
    try:
        assert first.ws is not None
        await asyncio.wait_for(first.ws.wait_closed(), 5)
        assert first.ws.close_code == 4000
        await asyncio.sleep(0.3)
        node = api_get(supervisor, "/api/v1/nodes/node-r")["data"]
        assert node["status"] == "online"  # the old link closing must not take the node offline
        assert node["projects"] == ["p1", "p2"]
        await second.send_event(1)
        await second.wait_acked(1)
    finally:
        await first.close()
        await second.close()


async def test_wrong_token_is_refused_and_stores_nothing(supervisor):
    with pytest.raises(InvalidStatus) as info:
        async with connect(supervisor.ws_url, additional_headers={"Authorization": "Bearer " + "x" * 64}):
            pass
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as info:
        async with connect(supervisor.ws_url):
            pass
    assert info.value.response.status_code == 401
    assert api_get(supervisor, "/api/v1/nodes")["meta"]["total"] == 0
    db = sqlite3.connect(supervisor.db_path)
    try:
        assert db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    finally:
        db.close()
    metrics = (await asyncio.to_thread(httpx.get, supervisor.api + "/metrics")).text
    assert 'hal_o_swarm_connections_total{status="unauthorized"} 2.0' in metrics


async def test_repeated_auth_failures_are_throttled(supervisor):
    statuses = []
    for _ in range(22):
        try:
            async with connect(supervisor.ws_url, additional_headers={"Authorization": "Bearer nope"}):
                pass
        except InvalidStatus as exc:
            statuses.append(exc.response.status_code)
    assert statuses[:20] == [401] * 20
    assert statuses[20:] == [429, 429]
    # ...but a valid agent token from the same address still connects (issue 14: no lockout).
    hdr = {"Authorization": f"Bearer {supervisor.agent_token}"}
    async with connect(supervisor.ws_url, additional_headers=hdr):
        pass


async def test_first_frame_must_be_register(supervisor):
    hdr = {"Authorization": f"Bearer {supervisor.agent_token}"}
    async with connect(supervisor.ws_url, additional_headers=hdr) as ws:
        from halswarm.protocol import Heartbeat, decode, encode

        await ws.send(encode(Heartbeat({})))
        env = decode(await asyncio.wait_for(ws.recv(), 5))
        assert env.type == "error" and env.payload.code == "not_registered"
    assert api_get(supervisor, "/api/v1/nodes")["meta"]["total"] == 0


async def test_per_node_token_only_registers_its_node(make_supervisor):
    node_token = "n" * 40
    sup = make_supervisor(security={"agent_tokens": {"owner": node_token}}).start()
    good = SimAgent(sup.ws_url, node_token, "owner")
    await good.connect()
    await good.close()
    thief = SimAgent(sup.ws_url, node_token, "other")
    with pytest.raises((AssertionError, ConnectionClosed)):
        await thief.connect()
    await thief.close()
    assert [n["id"] for n in api_get(sup, "/api/v1/nodes")["data"]] == ["owner"]


def _raw_http(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send one raw HTTP/1.1 request to loopback and read until the server closes or the body is complete."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next((int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n")
                               if ln.lower().startswith(b"content-length:")), None)
                if length is not None and len(body) >= length:
                    return data
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


async def test_plain_http_get_on_the_hub_port_says_what_it_is(supervisor):
    """Runbook "Test connectivity": `curl -v http://host:8420/` gets a short text, not a handshake error."""
    raw = await asyncio.to_thread(_raw_http, supervisor.ws_port,
                                  b"GET / HTTP/1.1\r\nHost: supervisor-host:8420\r\nUser-Agent: curl/8.5.0\r\n"
                                  b"Accept: */*\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    text = body.decode()
    assert "hal-supervisor agent hub" in text and "/ws/agent" in text
    assert f"port {supervisor.http_port}" in text
    assert supervisor.token not in text


async def test_tokenless_upgrade_is_explained_and_not_throttled(supervisor):
    """`curl ws://host:8420` sends an upgrade without a token: 401 with the same explanation, and repeating
    it (the runbook's `watch -n 60 curl ...`) never throttles the host."""
    req = (b"GET / HTTP/1.1\r\nHost: supervisor-host:8420\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    for _ in range(22):
        raw = await asyncio.to_thread(_raw_http, supervisor.ws_port, req)
        assert raw.startswith(b"HTTP/1.1 401"), raw
    assert b"/ws/agent" in raw and f"port {supervisor.http_port}".encode() in raw
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "after-curl")
    await agent.connect()  # not throttled
    await agent.close()


async def test_curl_on_the_hub_port(supervisor):
    """The runbook's probe with the real curl: http:// always; ws:// when this curl speaks WebSocket
    (curl >= 7.86 built with it; Debian bookworm's 7.88 is not)."""
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("no curl on this host")
    protocols = (await asyncio.to_thread(subprocess.run, [curl, "--version"], capture_output=True, text=True,
                                         timeout=10)).stdout
    schemes = ["http"] + (["ws"] if " ws " in f" {protocols.split('Protocols:')[-1].splitlines()[0]} " else [])
    for scheme in schemes:
        url = f"{scheme}://127.0.0.1:{supervisor.ws_port}/"
        res = await asyncio.to_thread(subprocess.run, [curl, "-s", "-m", "10", url], capture_output=True, text=True,
                                      timeout=30)
        assert "hal-supervisor agent hub" in res.stdout and "/ws/agent" in res.stdout, (scheme, res)
