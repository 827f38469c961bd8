"""The collection's ansible-rulebook event source (`halswarm.ops.event_stream`, issue 18 point 5) against
the real supervisor: its `main(queue, args)` is run as ansible-rulebook runs it, a simulated agent sends
the events over the real WebSocket, and each test checks them by agent seq: none lost, none twice."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.agent_proc import TcpProxy
from tests.support.agentsim import SimAgent
from tests.support.supervisor_proc import REPO

PLUGIN = REPO / "collections/ansible_collections/halswarm/ops/extensions/eda/plugins/event_source/event_stream.py"
TYPES = ["message.part.*"]


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("halswarm_eda_event_stream", PLUGIN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


event_stream = load_plugin()


class Source:
    """The plugin's `main()` as a task with its own queue."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.create_task(event_stream.main(self.queue, args))
        self.got: list[dict[str, Any]] = []

    async def take(self, n: int, timeout: float = 90) -> list[dict[str, Any]]:
        """Wait until `n` events in all arrived (the source must not have failed)."""
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            if self.task.done():
                self.task.result()  # raises the source's error
                raise AssertionError(f"the source ended after {len(self.got)} events")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {len(self.got)}/{n} events within {timeout}s")
            with contextlib.suppress(TimeoutError):
                self.got.append(await asyncio.wait_for(self.queue.get(), min(left, 1.0)))
        return self.got

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def send(agent: SimAgent, seqs: range) -> None:
    for seq in seqs:
        await agent.send_event(seq, "message.part.delta", session_id="ses_e", project="p")
    await agent.wait_acked(seqs[-1], timeout=60)


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


def assert_state(path: Path, value: int) -> None:
    """A stopped source has finished its last state write: the file names the last event handed over."""
    assert path.read_text().strip() == str(value), f"the state file holds {path.read_text()!r}, not {value}"


@pytest.mark.timeout(240)
async def test_a_restarted_source_resumes_from_its_state_file_without_loss_or_duplicates(supervisor, tmp_path):
    state = tmp_path / "last-id"
    args = {"url": supervisor.api, "token": supervisor.token, "types": TYPES, "node_id": "n1",
            "state_file": str(state), "last_event_id": 0, "reconnect_min": 0.2, "reconnect_max": 1}
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    try:
        first = Source(args)
        await send(agent, range(1, 101))
        await first.take(60)
        await first.stop()  # mid-stream: the server had sent more than was taken
        handed = first.got + [first.queue.get_nowait() for _ in range(first.queue.qsize())]
        assert_state(state, handed[-1]["id"])
        assert all(e["id"] == int(e["id"]) and e["type"] == "message.part.delta" for e in handed)

        second = Source({**args, "last_event_id": None})  # the state file wins over last_event_id
        await send(agent, range(101, 201))
        rest = await second.take(200 - len(handed))
        await second.stop()
    finally:
        await agent.close()
    assert seqs(handed) + seqs(rest) == list(range(1, 201)), "resuming lost or repeated events"
    assert_state(state, rest[-1]["id"])
    assert not list(tmp_path.glob(".event_stream.*")), "a temporary state file was left behind"


@pytest.mark.timeout(240)
async def test_the_source_survives_a_supervisor_restart_and_resumes(supervisor):
    """The source reads through a loopback relay that stays cut while the supervisor restarts and the
    agent sends more: those events were committed while the source was away, so only a resume with
    `Last-Event-ID` delivers them."""
    relay = TcpProxy(supervisor.http_port).start()
    args = {"url": f"http://127.0.0.1:{relay.port}", "token": supervisor.token, "types": TYPES, "node_id": "n1",
            "last_event_id": 0, "reconnect_min": 0.2, "reconnect_max": 1}
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    source = Source(args)
    try:
        await send(agent, range(1, 51))
        await source.take(50)
        relay.cut()
        await agent.close()
        await asyncio.to_thread(supervisor.stop)
        await asyncio.to_thread(supervisor.start)  # same ports, same database
        agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n1", [("p", "/p")])
        await agent.connect(last_acked_seq=50)
        await send(agent, range(51, 101))  # acked: committed while the source cannot connect
        relay.restore()
        got = await source.take(100, timeout=90)
        assert not source.task.done(), "the source gave up instead of reconnecting"
    finally:
        await source.stop()
        await agent.close()
        relay.close()
    assert seqs(got) == list(range(1, 101)), "the reconnect lost or repeated events"
    assert source.queue.empty()
    assert relay.accepted >= 2


@pytest.mark.timeout(60)
async def test_a_refused_token_stops_the_source_with_a_clear_error_that_does_not_show_it(supervisor):
    bad = "not-the-token-" + "z" * 40
    queue: asyncio.Queue[Any] = asyncio.Queue()
    with pytest.raises(event_stream.StreamError) as err:
        await asyncio.wait_for(event_stream.main(queue, {"url": supervisor.api, "token": bad}), 30)
    assert "refused the token (HTTP 401" in str(err.value)
    assert bad not in str(err.value)


@pytest.mark.timeout(150)
async def test_several_types_are_filtered_by_the_source(supervisor):
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "n2", [("p", "/p")])
    await agent.connect()
    source = Source({"url": supervisor.api, "token": supervisor.token, "node_id": "n2", "last_event_id": 0,
                     "types": ["session.*", "message.part.delta"]})
    try:
        await agent.send_event(1, "tool.call", session_id="ses_f", project="p")
        await agent.send_event(2, "message.part.delta", session_id="ses_f", project="p")
        await agent.send_event(3, "session.idle", session_id="ses_f", project="p")
        await agent.wait_acked(3)
        got = await source.take(2)
    finally:
        await source.stop()
        await agent.close()
    assert [(e["seq"], e["type"]) for e in got] == [(2, "message.part.delta"), (3, "session.idle")]


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return crt, key


@pytest.mark.timeout(150)
async def test_over_tls_the_source_verifies_with_ca_file_and_stops_on_an_unverified_certificate(make_supervisor,
                                                                                                  cert):
    crt, key = cert
    sup = make_supervisor(security={"tls": {"enabled": True, "cert_path": str(crt), "key_path": str(key)}})
    sup.tls_ca = crt
    await asyncio.to_thread(sup.start)
    assert sup.api.startswith("https://")
    base = {"url": sup.api, "token": sup.token, "node_id": "n3", "last_event_id": 0, "types": TYPES}
    with pytest.raises(event_stream.StreamError, match=r"failed verification .*set ca_file"):
        await asyncio.wait_for(event_stream.main(asyncio.Queue(), base), 30)
    agent = SimAgent(sup.ws_url, sup.agent_token, "n3", [("p", "/p")])
    await agent.connect(ssl=sup.verify)
    source = Source({**base, "ca_file": str(crt)})
    try:
        await send(agent, range(1, 11))
        got = await source.take(10)
    finally:
        await source.stop()
        await agent.close()
    assert seqs(got) == list(range(1, 11))
