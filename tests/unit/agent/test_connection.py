"""SupervisorConnection against a small supervisor speaking the real wire format (tests/support/fake_supervisor.py).

The fake supervisor (127.0.0.1, port 0) follows SPEC 4: answers `register` with `registered`
(resume_from_seq = its stored high-water mark), stores events once and gap-free, acks
cumulatively, answers a gap with `error` seq_gap, can drop the connection, refuse the upgrade
(401/503) and send commands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.connection import SupervisorConnection
from halswarm.agent.outbox import AsyncOutbox
from halswarm.protocol import (
    Ack,
    AuthState,
    AuthStateEntry,
    Command,
    CommandResult,
    CredentialSync,
    ErrorMsg,
    Event,
    Heartbeat,
    Register,
    Registered,
)
from halswarm.protocol.agent_link import ConnState, parse_expected_seq
from halswarm.protocol.backoff import Backoff
from halswarm.protocol.errors import SEQ_GAP
from halswarm.protocol.messages import OutboxStats
from tests.support.fake_supervisor import FakeSupervisor, append
from tests.support.waiting import on_loop

pytestmark = [pytest.mark.process, pytest.mark.timeout(20)]  # a fake supervisor's WebSocket server on loopback

TOKEN = "t" * 40
RESOURCES = {"cpu_percent": 1.0, "ram_used_mb": 2.0, "ram_total_mb": 3.0, "disk_used_gb": 4.0, "disk_total_gb": 5.0}


@pytest.fixture
async def sup() -> AsyncIterator[FakeSupervisor]:
    s = FakeSupervisor()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[AsyncOutbox]:
    box = await AsyncOutbox.open(tmp_path)
    try:
        yield box
    finally:
        await box.close()


Handler = Callable[[Command], Any]


@pytest.fixture
async def make_conn(sup: FakeSupervisor, outbox: AsyncOutbox) -> AsyncIterator[Callable[..., SupervisorConnection]]:
    conns: list[SupervisorConnection] = []

    def factory(**kw: Any) -> SupervisorConnection:
        kw.setdefault("register_builder", lambda: Register(node_id="node-1", hostname="host-1", version="0.1"))
        kw.setdefault("backoff", Backoff(0.01, 0.05))
        kw.setdefault("auth_backoff", Backoff(0.2, 0.4, floor=0.2))
        kw.setdefault("resources_fn", lambda: dict(RESOURCES))
        kw.setdefault("registered_timeout", 2.0)
        conn = SupervisorConnection(sup.url, TOKEN, outbox, **kw)
        conns.append(conn)
        return conn

    try:
        yield factory
    finally:
        for c in conns:
            await c.close()


# ------------------------------------------------------------------ registration


async def test_register_is_first_frame_with_token_and_last_acked_seq(
    sup: FakeSupervisor, outbox: AsyncOutbox, make_conn: Callable[..., SupervisorConnection]
) -> None:
    await append(outbox, 5)
    await outbox.ack(3)
    sup.high = 3
    ready: list[Registered] = []
    conn = make_conn(on_ready=ready.append)
    assert conn.state is ConnState.DISCONNECTED
    conn.start()
    await conn.wait_ready(5)
    assert conn.state is ConnState.READY
    await on_loop(lambda: sup.high == 5, what="events 4, 5")
    first = sup.connections[0][0]
    assert first.type == "register"
    reg: Register = first.payload
    assert reg.node_id == "node-1" and reg.hostname == "host-1"
    assert reg.last_acked_seq == 3
    assert reg.resources == RESOURCES
    assert sup.auth_headers == [f"Bearer {TOKEN}"]
    assert sup.received_seqs == [4, 5]
    assert ready and ready[0].resume_from_seq == 3 and conn.registered == ready[0]


async def test_async_register_builder_returning_a_dict(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    async def build() -> dict[str, Any]:
        return {
            "node_id": "node-9",
            "projects": [{"name": "alpha", "directory": "/srv/alpha"}],
            "resources": RESOURCES,
            "last_acked_seq": 99,
        }

    conn = make_conn(register_builder=build)
    conn.start()
    await conn.wait_ready(5)
    reg = sup.registers[0]
    assert reg.node_id == "node-9" and reg.projects[0].name == "alpha"
    assert reg.last_acked_seq == 0  # the outbox is the authority, not the builder


async def test_no_registered_reply_times_out_and_retries(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    sup.answer_register = False
    conn = make_conn(registered_timeout=0.2)
    conn.start()
    await on_loop(lambda: len(sup.registers) >= 3, what="register retries")
    assert conn.state is not ConnState.READY
    assert conn.counters["registrations"] == 0
    sup.answer_register = True
    await conn.wait_ready(5)


# ------------------------------------------------------------------ delivery


async def test_pending_events_resent_from_resume_from_seq_after_reconnect(
    sup: FakeSupervisor, outbox: AsyncOutbox, make_conn: Callable[..., SupervisorConnection]
) -> None:
    await append(outbox, 5)
    sup.high = 2  # the supervisor already stored 1..2 (acks were lost)
    sup.auto_ack = False
    conn = make_conn()
    conn.start()
    await on_loop(lambda: sup.high == 5, what="3..5 delivered")
    assert sup.received_seqs == [3, 4, 5]
    assert [e.seq for e in await outbox.pending()] == [3, 4, 5]  # resume_from deleted 1..2
    # Supervisor crashes having committed only up to 3; the connection drops.
    sup.high = 3
    sup.stored = sup.stored[:1]
    sup.auto_ack = True
    await sup.drop()
    await on_loop(lambda: len(sup.connections) == 2 and sup.high == 5, what="resend after reconnect")
    assert [f.type for f in sup.connections[1] if f.type != "heartbeat"][:3] == ["register", "event", "event"]
    assert [f.payload.seq for f in sup.connections[1] if f.type == "event"] == [4, 5]
    assert [e.seq for e in sup.stored] == [3, 4, 5]
    await on_loop(lambda: outbox.core.size() == 0, what="acked and deleted")
    assert conn.counters["reconnects"] == 1


async def test_events_appended_while_disconnected_are_delivered_once_in_order(
    sup: FakeSupervisor, outbox: AsyncOutbox, make_conn: Callable[..., SupervisorConnection]
) -> None:
    conn = make_conn()
    conn.start()
    await conn.wait_ready(5)
    await append(outbox, 3)
    await on_loop(lambda: sup.high == 3, what="first events")
    sup.reject_status = 503  # supervisor down
    await sup.drop()
    await on_loop(lambda: conn.state is not ConnState.READY, what="disconnect")
    await append(outbox, 5)
    await on_loop(lambda: len(sup.attempt_times) >= 3, what="refused reconnects")
    assert sup.high == 3
    sup.reject_status = None
    await on_loop(lambda: sup.high == 8, what="backlog delivered")
    await asyncio.sleep(0.1)
    assert [e.seq for e in sup.stored] == list(range(1, 9))
    assert sup.received_seqs == list(range(1, 9))  # exactly once each, in order
    await on_loop(lambda: outbox.core.size() == 0, what="outbox drained")


async def test_new_events_stream_while_ready(
    sup: FakeSupervisor, outbox: AsyncOutbox, make_conn: Callable[..., SupervisorConnection]
) -> None:
    conn = make_conn()
    conn.start()
    await conn.wait_ready(5)

    async def producer() -> None:
        for _ in range(100):
            await append(outbox, 1)
            await asyncio.sleep(0)

    await producer()
    await on_loop(lambda: sup.high == 100, what="100 events")
    assert sup.received_seqs == list(range(1, 101))
    assert conn.counters["events_sent"] == 100


async def test_ack_deletes_from_outbox(
    sup: FakeSupervisor, outbox: AsyncOutbox, make_conn: Callable[..., SupervisorConnection]
) -> None:
    sup.auto_ack = False
    conn = make_conn()
    conn.start()
    await conn.wait_ready(5)
    await append(outbox, 6)
    await on_loop(lambda: sup.high == 6, what="events")
    assert await outbox.size() == 6
    await sup.send(Ack(4))
    await on_loop(lambda: outbox.last_acked_seq == 4, what="ack applied")
    assert [e.seq for e in await outbox.pending()] == [5, 6]
    await sup.send(Ack(6))
    await on_loop(lambda: outbox.core.size() == 0, what="all acked")
    assert conn.counters["acks"] == 2


async def test_in_flight_window_bounds_unacked_events(
    sup: FakeSupervisor, outbox: AsyncOutbox, make_conn: Callable[..., SupervisorConnection]
) -> None:
    sup.auto_ack = False
    await append(outbox, 50)
    conn = make_conn(max_in_flight=10, batch_size=4)
    conn.start()
    await on_loop(lambda: len(sup.received_seqs) == 10, what="first window")
    await asyncio.sleep(0.2)
    assert sup.received_seqs == list(range(1, 11))
    await sup.send(Ack(10))
    await on_loop(lambda: len(sup.received_seqs) == 20, what="second window")
    await asyncio.sleep(0.1)
    assert sup.received_seqs == list(range(1, 21))


async def test_seq_gap_error_makes_the_agent_resend_from_the_expected_seq(
    sup: FakeSupervisor, outbox: AsyncOutbox, make_conn: Callable[..., SupervisorConnection]
) -> None:
    sup.lose_seq_once = 3
    await append(outbox, 40)
    conn = make_conn()
    conn.start()
    await on_loop(lambda: sup.high == 40, what="gap repaired")
    assert [e.seq for e in sup.stored] == list(range(1, 41))
    # Every event behind the hole earns a seq_gap error; the agent rewinds once, not per error.
    assert 1 <= conn.counters["seq_gap_rewinds"] <= 2
    assert len(sup.received_seqs) < 2 * 40 + 5
    await on_loop(lambda: outbox.core.size() == 0, what="acked")


async def test_seq_gap_rewinds_once_per_burst_and_resyncs_when_the_seq_was_acked(
    make_conn: Callable[..., SupervisorConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    from halswarm.agent import connection as mod
    from halswarm.protocol import agent_link

    conn = make_conn()
    conn.core.acked, conn.core.next_to_send = 2, 41
    conn._on_error(ErrorMsg(SEQ_GAP, "expected seq 3, got 4", None))
    assert (conn.core.next_to_send, conn.counters["seq_gap_rewinds"]) == (3, 1)
    conn.core.next_to_send = 10  # the sender has resent 3..9 meanwhile
    for got in range(5, 41):  # the rest of the burst of errors for the old frames
        conn._on_error(ErrorMsg(SEQ_GAP, f"expected seq 3, got {got}", None))
    assert (conn.core.next_to_send, conn.counters["seq_gap_rewinds"]) == (10, 1)
    conn._on_error(ErrorMsg(SEQ_GAP, "expected seq 12, got 13", None))  # not sent yet: nothing to do
    assert conn.core.next_to_send == 10
    conn._on_error(ErrorMsg(SEQ_GAP, "expected seq 6, got 9", None))  # a new hole
    assert (conn.core.next_to_send, conn.counters["seq_gap_rewinds"]) == (6, 2)
    # The same hole again after the hold-off: rewind again rather than stall.
    monkeypatch.setattr(agent_link, "GAP_REWIND_HOLDOFF", 0.0)
    conn.core.next_to_send = 10
    conn._on_error(ErrorMsg(SEQ_GAP, "expected seq 6, got 9", None))
    assert (conn.core.next_to_send, conn.counters["seq_gap_rewinds"]) == (6, 3)
    # A seq the supervisor had acked: we may not hold it any more; re-register to resync.
    with pytest.raises(mod._Resync):
        conn._on_error(ErrorMsg(SEQ_GAP, "expected seq 2", None))


async def test_supervisor_restored_from_backup_keeps_the_stream_going(
    sup: FakeSupervisor,
    outbox: AsyncOutbox,
    make_conn: Callable[..., SupervisorConnection],
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = make_conn()
    conn.start()
    await conn.wait_ready(5)
    await append(outbox, 5)
    await on_loop(lambda: outbox.last_acked_seq == 5, what="acked")
    sup.reject_status = 503
    await sup.drop()
    await on_loop(lambda: conn.state is not ConnState.READY, what="disconnect")
    ids = [(await outbox.append(f"late-{i}", "session.status")).event_id for i in range(2)]  # type: ignore[union-attr]
    sup.high = 2  # restored from a backup: 3..5 are gone on both sides
    sup.stored = sup.stored[:2]
    sup.reject_status = None
    with caplog.at_level(logging.WARNING):
        await on_loop(lambda: sup.high == 4, what="renumbered events stored")
    assert sup.registers[-1].last_acked_seq == 5
    assert [e.event_id for e in sup.stored[2:]] == ids
    assert "restored from backup" in caplog.text
    assert outbox.next_seq == 5


# ------------------------------------------------------------------ commands


async def test_commands_run_concurrently_and_results_are_returned(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    async def handler(cmd: Command) -> CommandResult:
        if cmd.type == "slow":
            await asyncio.sleep(0.8)
        return CommandResult(cmd.command_id, "success", output={"ran": cmd.type, "args": cmd.args})

    conn = make_conn(command_handler=handler)
    conn.start()
    await conn.wait_ready(5)
    t0 = time.monotonic()
    await sup.send(Command("c-slow", "slow", timeout_ms=5000), request_id="c-slow")
    await sup.send(Command("c-fast", "fast", args={"x": 1}, timeout_ms=5000), request_id="c-fast")
    await on_loop(lambda: "c-fast" in sup.results, what="fast result")
    assert "c-slow" not in sup.results
    assert sup.results["c-fast"][0] - t0 < 0.5
    await on_loop(lambda: "c-slow" in sup.results, what="slow result")
    at, res, rid = sup.results["c-fast"]
    assert res.status == "success" and res.output == {"ran": "fast", "args": {"x": 1}} and rid == "c-fast"
    assert sup.results["c-slow"][0] > at
    assert conn.counters["commands"] == 2


async def test_command_timeout_returns_timeout_result(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    cancelled = asyncio.Event()

    async def handler(cmd: Command) -> CommandResult:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return CommandResult(cmd.command_id, "success")

    conn = make_conn(command_handler=handler)
    conn.start()
    await conn.wait_ready(5)
    t0 = time.monotonic()
    await sup.send(Command("c-1", "prompt_session", timeout_ms=200))
    await on_loop(lambda: "c-1" in sup.results, what="timeout result")
    at, res, rid = sup.results["c-1"]
    assert res.status == "timeout" and "200 ms" in (res.error or "")
    assert 0.15 < at - t0 < 1.5
    assert rid == "c-1"
    await asyncio.wait_for(cancelled.wait(), 2)
    assert conn.counters["commands_timed_out"] == 1


async def test_handler_exception_becomes_failure(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    async def handler(cmd: Command) -> Any:
        if cmd.type == "boom":
            raise RuntimeError("kaboom")
        if cmd.type == "plain":
            return {"answer": 42}
        return CommandResult("wrong-id", "bogus")

    conn = make_conn(command_handler=handler)
    conn.start()
    await conn.wait_ready(5)
    await sup.send(Command("c-1", "boom"))
    await sup.send(Command("c-2", "plain"))
    await sup.send(Command("c-3", "bad-status"))
    await on_loop(lambda: len(sup.results) == 3, what="three results")
    r1, r2, r3 = (sup.results[c][1] for c in ("c-1", "c-2", "c-3"))
    assert r1.status == "failure" and "kaboom" in (r1.error or "") and "RuntimeError" in (r1.error or "")
    assert r2.status == "success" and r2.output == {"answer": 42}
    assert r3.status == "failure" and r3.command_id == "c-3"
    assert conn.state is ConnState.READY  # the connection survived


async def test_no_command_handler_answers_failure(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    conn = make_conn()
    conn.start()
    await conn.wait_ready(5)
    await sup.send(Command("c-1", "env_check"))
    await on_loop(lambda: "c-1" in sup.results, what="result")
    assert sup.results["c-1"][1].status == "failure"


async def test_oversized_command_output_is_truncated_to_fit_a_frame(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    async def handler(cmd: Command) -> CommandResult:
        return CommandResult(cmd.command_id, "success", output="z" * (2 * 1024 * 1024))

    conn = make_conn(command_handler=handler)
    conn.start()
    await conn.wait_ready(5)
    await sup.send(Command("c-big", "agentmd_diff"))
    await on_loop(lambda: "c-big" in sup.results, what="result")
    res = sup.results["c-big"][1]
    assert res.output["truncated"] is True and res.output["original_bytes"] > 2 * 1024 * 1024
    assert "truncated" in (res.error or "")


# ------------------------------------------------------------------ heartbeat, frames, errors


async def test_heartbeat_sent_at_once_then_at_the_registered_interval(
    sup: FakeSupervisor, outbox: AsyncOutbox, make_conn: Callable[..., SupervisorConnection]
) -> None:
    sup.heartbeat_interval = 1
    conn = make_conn()
    conn.start()
    await conn.wait_ready(5)
    t0 = time.monotonic()
    await on_loop(lambda: len(sup.heartbeats) >= 3, timeout=5, what="three heartbeats")
    (t1, hb1), (t2, _), (t3, _) = sup.heartbeats[:3]
    assert t1 - t0 < 0.5  # the first right after registration
    assert 0.8 < t2 - t1 < 1.5
    assert 0.8 < t3 - t2 < 1.5
    assert hb1.resources == RESOURCES
    assert hb1.outbox == OutboxStats(pending=0, max_events=outbox.core.max_events, refused_total=0)
    assert conn.counters["heartbeats_sent"] >= 3


async def test_heartbeat_reports_the_outbox_backlog_and_refused_events(
    sup: FakeSupervisor, tmp_path: Path, make_conn: Callable[..., SupervisorConnection]
) -> None:
    """Filled while the supervisor is unreachable: the first heartbeat after connecting shows the
    refused count and the backlog; a later one shows the backlog drained."""
    box = await AsyncOutbox.open(tmp_path / "small", max_events=4, low_priority_reserve=0.5)
    conn = SupervisorConnection(sup.url, TOKEN, box, register_builder=lambda: Register(node_id="node-1"),
                                backoff=Backoff(0.01, 0.05), resources_fn=lambda: dict(RESOURCES))
    try:
        sup.heartbeat_interval = 1
        deltas = [await box.append(None, "message.part.delta", data={"i": i}) for i in range(3)]
        states = [await box.append(None, "session.status", data={"i": i}) for i in range(4)]
        # Deltas are refused from half full on, everything at 4; nothing stored is dropped.
        assert [e is not None for e in deltas] == [True, True, False]
        assert [e is not None for e in states] == [True, True, False, False]
        assert box.stats() == OutboxStats(pending=4, max_events=4, refused_total=3)
        conn.start()
        await on_loop(lambda: sup.heartbeats, what="first heartbeat")
        first = sup.heartbeats[0][1].outbox
        assert first is not None and first.refused_total == 3 and first.max_events == 4
        await on_loop(lambda: sup.high == 4, what="backlog delivered")
        await on_loop(lambda: sup.heartbeats[-1][1].outbox.pending == 0, timeout=5, what="pending 0 reported")
        assert sup.heartbeats[-1][1].outbox.refused_total == 3
    finally:
        await conn.close()
        await box.close()


async def test_send_frame_is_queued_until_ready(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    conn = make_conn()
    conn.send_frame(CredentialSync(3))
    conn.send_frame(AuthState([AuthStateEntry("codex", "authenticated", "", 1.0)]))
    with pytest.raises(TypeError):
        conn.send_frame(Event(1, "e", "t"))
    conn.start()
    await on_loop(lambda: len(sup.connections) == 1 and len(sup.connections[0]) >= 3, what="queued frames")
    types = [f.type for f in sup.connections[0]]
    assert types[0] == "register"
    assert types.index("credential_sync") < types.index("auth_state")
    conn.send_frame(CredentialSync(4))
    await on_loop(lambda: sum(f.type == "credential_sync" for f in sup.connections[0]) == 2, what="live frame")


async def test_bad_frames_from_supervisor_get_an_error_reply_and_the_connection_survives(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    async def handler(cmd: Command) -> CommandResult:
        return CommandResult(cmd.command_id, "success")

    conn = make_conn(command_handler=handler)
    conn.start()
    await conn.wait_ready(5)
    assert sup.ws is not None
    await sup.ws.send("this is not json")
    await sup.ws.send('{"version":2,"type":"ack","request_id":"r-2","timestamp":1,"payload":{"seq":1}}')
    await sup.send(Register(node_id="x"))  # a valid frame the agent does not accept
    await sup.send(Heartbeat(resources=RESOURCES))  # ignored
    await sup.send(ErrorMsg("internal_error", "something odd", None))  # logged
    await on_loop(lambda: len(sup.errors) == 3, what="error replies")
    assert [e.code for e in sup.errors] == ["bad_json", "unsupported_version", "unexpected_type"]
    assert sup.errors[1].request_id == "r-2"
    await sup.send(Command("c-1", "x"))
    await on_loop(lambda: "c-1" in sup.results, what="still working")
    assert conn.counters["bad_frames"] == 3 and conn.counters["errors_received"] == 1
    assert len(sup.connections) == 1


async def test_401_retries_with_backoff_without_spinning(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection], caplog: pytest.LogCaptureFixture
) -> None:
    sup.reject_status = 401
    conn = make_conn()  # auth_backoff floor 0.2 s
    with caplog.at_level(logging.ERROR):
        conn.start()
        await asyncio.sleep(1.0)
    attempts = len(sup.attempt_times)
    assert 2 <= attempts <= 6, attempts  # >= 0.2 s apart: no spin, but still retrying
    gaps = [b - a for a, b in zip(sup.attempt_times, sup.attempt_times[1:], strict=False)]
    assert all(g >= 0.18 for g in gaps), gaps
    assert conn.counters["auth_failures"] == attempts
    assert conn.state is not ConnState.READY
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert lines and all("rejected the agent token (HTTP 401)" in m and "\n" not in m for m in lines)
    assert TOKEN not in caplog.text
    sup.reject_status = None
    await conn.wait_ready(5)  # recovers once the token is accepted


def test_default_auth_backoff_is_slow() -> None:
    # Without a test override, a rejected token is retried at most about once a second.
    async def build() -> Register:
        return Register(node_id="n")

    conn = SupervisorConnection("ws://127.0.0.1:1", TOKEN, _DummyOutbox(), register_builder=build)  # type: ignore[arg-type]
    assert conn.core.auth_backoff.floor >= 1.0 and conn.core.auth_backoff.cap >= 60.0
    assert (conn.core.backoff.base, conn.core.backoff.cap) == (0.1, 60.0)


class _DummyOutbox:
    def on_append(self, cb: object) -> None:
        pass


async def test_state_machine_and_counters_over_a_reconnect(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    conn = make_conn()
    seen: list[ConnState] = []
    original = conn._set_state

    def spy(new: ConnState) -> None:
        original(new)
        seen.append(new)

    conn._set_state = spy  # type: ignore[method-assign]
    conn.start()
    await conn.wait_ready(5)
    await sup.drop()
    await on_loop(lambda: conn.counters["registrations"] == 2, what="re-registration")
    await conn.close()
    assert seen == [
        "connecting",
        "registering",
        "ready",
        "disconnected",
        "connecting",
        "registering",
        "ready",
        "disconnected",
        "closed",
    ]
    assert conn.state is ConnState.CLOSED
    assert conn.counters["reconnects"] == 1 and conn.counters["connect_attempts"] == 2
    with pytest.raises(RuntimeError):
        conn.send_frame(CredentialSync(1))


async def test_illegal_state_transition_is_rejected(make_conn: Callable[..., SupervisorConnection]) -> None:
    conn = make_conn()
    with pytest.raises(RuntimeError, match="illegal"):
        conn._set_state(ConnState.READY)
    assert conn.state is ConnState.DISCONNECTED


async def test_close_cancels_running_commands_and_closes_the_socket(
    sup: FakeSupervisor, make_conn: Callable[..., SupervisorConnection]
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(cmd: Command) -> CommandResult:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return CommandResult(cmd.command_id, "success")

    conn = make_conn(command_handler=handler)
    conn.start()
    await conn.wait_ready(5)
    await sup.send(Command("c-long", "x", timeout_ms=60_000))
    await asyncio.wait_for(started.wait(), 5)
    t0 = time.monotonic()
    await conn.close()
    assert time.monotonic() - t0 < 3
    assert cancelled.is_set()
    assert sup.ws is not None
    await asyncio.wait_for(sup.ws.wait_closed(), 3)
    await conn.close()  # idempotent


def test_parse_expected_seq() -> None:
    assert parse_expected_seq("expected seq 42, got 50") == 42
    assert parse_expected_seq("seq gap: expected=7") == 7
    assert parse_expected_seq("gap before 13") == 13
    assert parse_expected_seq("no number") is None
