"""SupervisorConnection failing over between supervisors (issue 21), against in-test supervisors that
speak the real wire format on loopback (the fake of test_connection.py: independent stores, each acks
what it stored). A "dead" supervisor drops its connection and refuses new upgrades (503)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import serve

from halswarm.agent.connection import SupervisorConnection, resolve_addresses
from halswarm.agent.outbox import AsyncOutbox
from halswarm.protocol import Register
from halswarm.protocol.agent_link import ConnState
from halswarm.protocol.backoff import Backoff
from halswarm.protocol.supervisor_urls import SupervisorUrl, parse_supervisor_url
from tests.support.fake_supervisor import FakeSupervisor, append
from tests.support.ports import free_port
from tests.support.waiting import on_loop

pytestmark = [pytest.mark.process, pytest.mark.timeout(30)]

TOKEN = "t" * 40


class BoundSupervisor(FakeSupervisor):
    """The fake supervisor on a chosen loopback address and port (two of them behind one name), optionally TLS."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.host, self.port, self.tls = host, port, tls

    async def start(self) -> None:
        self.server = await serve(self._handler, self.host, self.port, process_request=self._process_request,
                                  ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/agent"

    async def die(self) -> None:
        self.reject_status = 503
        if self.ws is not None:
            await self.drop()

    def revive(self) -> None:
        self.reject_status = None


@pytest.fixture
async def pair() -> AsyncIterator[tuple[BoundSupervisor, BoundSupervisor]]:
    a, b = BoundSupervisor(), BoundSupervisor()
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[AsyncOutbox]:
    box = await AsyncOutbox.open(tmp_path)
    try:
        yield box
    finally:
        await box.close()


@pytest.fixture
async def make_conn(outbox: AsyncOutbox) -> AsyncIterator[Callable[..., SupervisorConnection]]:
    conns: list[SupervisorConnection] = []

    def factory(url: Any, **kw: Any) -> SupervisorConnection:
        kw.setdefault("register_builder", lambda: Register(node_id="node-1", hostname="host-1", version="0.1"))
        kw.setdefault("backoff", Backoff(0.01, 0.05))
        kw.setdefault("resources_fn", dict)
        kw.setdefault("registered_timeout", 2.0)
        conn = SupervisorConnection(url, TOKEN, outbox, **kw)
        conns.append(conn)
        return conn

    try:
        yield factory
    finally:
        for c in conns:
            await c.close()


def ids(sup: FakeSupervisor) -> list[str]:
    return [e.event_id for e in sup.stored]


async def test_moves_to_the_next_supervisor_and_back_without_losing_an_event(
    pair: tuple[BoundSupervisor, BoundSupervisor], outbox: AsyncOutbox,
    make_conn: Callable[..., SupervisorConnection],
) -> None:
    a, b = pair
    conn = make_conn([a.url, b.url])
    conn.start()
    await conn.wait_ready(10)
    assert conn.current_target is not None and conn.current_target.url.url == a.url
    await append(outbox, 30)
    await on_loop(lambda: a.high == 30 and outbox.core.size() == 0, what="30 events stored and acked on A")

    await a.die()
    await on_loop(lambda: conn.state is ConnState.READY and conn.url == b.url, what="the agent on B")
    assert conn.counters["failovers"] == 1
    await append(outbox, 20)
    await on_loop(lambda: b.high == 20 and outbox.core.size() == 0, what="20 events stored and acked on B")

    await b.die()  # B dies; events keep coming while the agent has no supervisor
    await on_loop(lambda: conn.state is not ConnState.READY, what="the agent disconnected from B")
    await append(outbox, 15)
    # A (which holds 30 events of its own numbering) comes back: its resume_from_seq (30) is above what
    # B acked (20), and must not delete the 15 pending events it never saw.
    a.revive()
    await on_loop(lambda: conn.state is ConnState.READY and conn.url == a.url, what="the agent back on A")
    await on_loop(lambda: outbox.core.size() == 0, what="the 15 events acked by A")
    assert conn.counters["failovers"] == 2
    assert a.high == 45 and [e.seq for e in a.stored] == list(range(1, 46))  # gap-free on A
    on_a, on_b = ids(a), ids(b)
    assert len(on_a) == 45 and len(on_b) == 20
    assert not set(on_a) & set(on_b)  # nothing was unacked at either death: no event on both
    assert len(set(on_a) | set(on_b)) == 65  # every event produced is stored


async def test_an_event_unacked_when_its_supervisor_died_is_resent_to_the_next(
    pair: tuple[BoundSupervisor, BoundSupervisor], outbox: AsyncOutbox,
    make_conn: Callable[..., SupervisorConnection],
) -> None:
    a, b = pair
    conn = make_conn([a.url, b.url])
    conn.start()
    await conn.wait_ready(10)
    a.auto_ack = False  # A stores but its acks never reach the agent
    await append(outbox, 5)
    await on_loop(lambda: a.high == 5, what="5 events stored on A, unacked")
    await a.die()
    await on_loop(lambda: b.high == 5 and outbox.core.size() == 0, what="the same 5 events stored and acked on B")
    assert ids(a) == ids(b)  # at-least-once across independent stores: on both, because unacked on A


async def test_a_name_with_two_addresses_is_two_supervisors(tmp_path: Path) -> None:
    port = free_port()
    a, b = BoundSupervisor("127.0.0.1", port), BoundSupervisor("127.0.0.2", port)
    try:
        await a.start()
        await b.start()
    except OSError as exc:  # pragma: no cover - a loopback without 127.0.0.2
        pytest.skip(f"cannot bind 127.0.0.2: {exc}")
    lookups: list[str] = []

    async def resolver(url: SupervisorUrl) -> list[str]:
        lookups.append(url.host)
        return ["127.0.0.1", "127.0.0.2"]

    outbox = await AsyncOutbox.open(tmp_path)
    conn = SupervisorConnection(f"ws://supervisors.test:{port}/ws/agent", TOKEN, outbox,
                                register_builder=lambda: Register(node_id="n", hostname="h", version="0"),
                                backoff=Backoff(0.01, 0.05), resources_fn=dict, resolver=resolver)
    try:
        conn.start()
        await conn.wait_ready(10)
        assert conn.current_target is not None and conn.current_target.address == "127.0.0.1"
        await append(outbox, 3)
        await on_loop(lambda: a.high == 3, what="events on the first address")
        await a.die()
        await on_loop(lambda: conn.state is ConnState.READY and conn.current_target is not None
                      and conn.current_target.address == "127.0.0.2", what="the agent on the second address")
        assert conn.counters["failovers"] == 1
        assert b.auth_headers and all(h == f"Bearer {TOKEN}" for h in b.auth_headers)
        assert lookups == ["supervisors.test"]
    finally:
        await conn.close()
        await outbox.close()
        await a.stop()
        await b.stop()


async def test_a_name_that_does_not_resolve_is_skipped(
    pair: tuple[BoundSupervisor, BoundSupervisor], make_conn: Callable[..., SupervisorConnection],
) -> None:
    _, b = pair

    async def resolver(url: SupervisorUrl) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    conn = make_conn(["ws://gone.test:8420/ws/agent", b.url], resolver=resolver)
    conn.start()
    await conn.wait_ready(10)
    assert conn.url == b.url and conn.counters["resolve_failures"] == 1


def test_bad_url_lists_are_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must use ws:// or wss://"):
        SupervisorConnection(["ws://a:1/ws/agent", "http://b:1"], TOKEN, None,  # type: ignore[arg-type]
                             register_builder=dict)


async def test_the_real_resolver_returns_every_address_of_localhost() -> None:
    addresses = await resolve_addresses(parse_supervisor_url("ws://localhost:8420/ws/agent"))
    assert "127.0.0.1" in addresses or "::1" in addresses


@pytest.fixture
def name_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the name `supervisors.test` only (no IP address in it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", "/CN=supervisors.test", "-addext", "subjectAltName=DNS:supervisors.test"],
                   check=True, capture_output=True, timeout=60)
    return crt, key


async def test_wss_to_a_resolved_address_verifies_the_certificate_against_the_url_name(
        name_cert: tuple[Path, Path], make_conn: Callable[..., SupervisorConnection]) -> None:
    """The certificate names only `supervisors.test`: the handshake with 127.0.0.1 succeeds only if TLS
    checks the URL's name, not the address dialled."""
    crt, key = name_cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    sup = BoundSupervisor(tls=server_ctx)
    await sup.start()
    try:
        async def resolver(url: SupervisorUrl) -> list[str]:
            assert url.host == "supervisors.test"
            return ["127.0.0.1"]

        conn = make_conn(f"wss://supervisors.test:{sup.port}/ws/agent", resolver=resolver,
                         ssl=ssl.create_default_context(cafile=str(crt)))
        conn.start()
        await conn.wait_ready(10)
        assert conn.current_target is not None and conn.current_target.address == "127.0.0.1"
        assert sup.registers and sup.auth_headers == [f"Bearer {TOKEN}"]
    finally:
        await sup.stop()


async def test_a_peer_that_closes_before_the_upgrade_is_one_warning_line(
    pair: tuple[BoundSupervisor, BoundSupervisor], make_conn: Callable[..., SupervisorConnection],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A supervisor restarting (or a proxy) accepts the TCP connection and closes it without an HTTP answer:
    counted as a connect failure and logged as one warning, never as an error with a traceback."""
    import asyncio

    _, b = pair

    async def hang_up(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    mute = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = mute.sockets[0].getsockname()[1]
    try:
        conn = make_conn([f"ws://127.0.0.1:{port}/ws/agent", b.url])
        conn.start()
        await conn.wait_ready(10)
        assert conn.url == b.url and conn.counters["connect_failures"] >= 1
        lines = [r for r in caplog.records if r.name == "halswarm.agent.connection" and str(port) in r.getMessage()]
        assert lines and all(r.levelname == "WARNING" and r.exc_info is None for r in lines), [
            (r.levelname, r.getMessage()) for r in lines]
        assert any("cannot connect to supervisor" in r.getMessage() for r in lines)
    finally:
        mute.close()
