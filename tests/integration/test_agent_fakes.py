"""Self-tests of the agent harness's fakes (tests/support/agent_proc.py), so a broken harness fails
here, not as a mystery elsewhere."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from tests.support.agent_proc import FakeOpencode, TcpProxy


async def test_fake_opencode_speaks_what_the_agent_reads(tmp_path: Path) -> None:
    from halswarm.agent.opencode_client import OpencodeClient, OpencodeNotFound
    from halswarm.agent.opencode_events import GlobalEventStream

    fake = FakeOpencode().start()
    try:
        info = fake.add_session(str(tmp_path))
        async with OpencodeClient(fake.url) as client:
            assert (await client.health())["healthy"] is True
            assert [s["id"] for s in await client.list_sessions([str(tmp_path)])] == [info["id"]]
            assert await client.session_status_map(directory=str(tmp_path)) == {}
            try:
                await client.get_session("ses_missing")
                raise AssertionError("expected 404")
            except OpencodeNotFound:
                pass
        stream = GlobalEventStream(fake.url)
        got: list[str] = []
        async for ev in stream:
            got.append(ev.type)
            if ev.type == "server.connected":
                fake.emit("session.status", {"sessionID": info["id"], "status": {"type": "busy"}}, str(tmp_path))
            else:
                break
        assert got == ["server.connected", "session.status"]
    finally:
        fake.stop()


def test_tcp_proxy_relays_and_cuts() -> None:
    echo = socket.create_server(("127.0.0.1", 0))
    port = echo.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                c, _ = echo.accept()
            except OSError:
                return
            with c:
                while data := c.recv(1024):
                    c.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    proxy = TcpProxy(port).start()
    try:
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
        proxy.cut()
        assert s.recv(4) == b""  # dropped
        s2 = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert s2.recv(4) == b""  # refused while cut
        proxy.restore()
        s3 = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        s3.sendall(b"pong")
        assert s3.recv(4) == b"pong"
        for sock in (s, s2, s3):
            sock.close()
    finally:
        proxy.close()
        echo.close()
