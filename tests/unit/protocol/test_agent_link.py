"""AgentLinkCore (sans-I/O agent side of SPEC 4 "Delivery"), driven by scripted frames and a fake clock.

No socket and no outbox database: the tests feed the core what the wrapper would (acks, seq_gap
messages, registrations, clock readings) and check what it answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from halswarm.protocol.agent_link import (
    GAP_REWIND_HOLDOFF,
    AgentLinkCore,
    ConnState,
    IllegalTransition,
    Resync,
    Rewind,
    clamp_ack,
    parse_expected_seq,
    plan_resume,
)
from halswarm.protocol.backoff import Backoff
from halswarm.protocol.hub_link import ACCEPTED, DUPLICATE, HubLinkCore, gap_message, rewind_message
from tests.support.protocol_strategies import PROPS

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ready_core(
    resume: int = 0, *, outbox_acked: int | None = None, max_in_flight: int = 1000, clock: FakeClock | None = None,
    heartbeat: float = 30.0, rng_seed: int = 1,
) -> AgentLinkCore:
    core = AgentLinkCore(
        max_in_flight=max_in_flight,
        backoff=Backoff(0.1, 60.0, rng=random.Random(rng_seed)),
        auth_backoff=Backoff(1.0, 300.0, floor=1.0, rng=random.Random(rng_seed)),
        clock=clock or FakeClock(),
    )
    connect(core, resume, resume if outbox_acked is None else outbox_acked, heartbeat)
    return core


def connect(core: AgentLinkCore, resume: int, outbox_acked: int, heartbeat: float = 30.0) -> None:
    core.transition(ConnState.CONNECTING)
    core.transition(ConnState.REGISTERING)
    core.register_sent()
    core.registered(resume, outbox_acked, heartbeat)
    core.transition(ConnState.READY)


def send(core: AgentLinkCore, upto: int) -> list[int]:
    """What the wrapper's sender does with an outbox holding every seq up to ``upto``."""
    gen = core.generation
    seqs = list(range(core.next_to_send, min(upto, core.next_to_send - 1 + core.room()) + 1))
    for seq in seqs:
        core.sent(seq, gen)
    return seqs


# ---------------------------------------------------------------- states


def test_the_legal_path_through_the_states() -> None:
    core = AgentLinkCore()
    assert core.state is ConnState.DISCONNECTED
    for new in ("connecting", "registering", "ready", "disconnected", "connecting", "disconnected", "closed"):
        core.transition(ConnState(new))
        assert core.state == new


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], ConnState.READY),
        ([], ConnState.REGISTERING),
        ([ConnState.CONNECTING], ConnState.READY),
        ([ConnState.CONNECTING, ConnState.REGISTERING, ConnState.READY], ConnState.CONNECTING),
        ([ConnState.CLOSED], ConnState.CONNECTING),
        ([ConnState.CLOSED], ConnState.CLOSED),
    ],
)
def test_an_illegal_transition_raises_and_keeps_the_state(path: list[ConnState], illegal: ConnState) -> None:
    core = AgentLinkCore()
    for new in path:
        core.transition(new)
    before = core.state
    with pytest.raises(IllegalTransition, match="illegal connection state transition"):
        core.transition(illegal)
    assert core.state is before
    assert issubclass(IllegalTransition, RuntimeError)  # what SupervisorConnection always raised


def test_registered_and_register_sent_only_while_registering() -> None:
    core = AgentLinkCore()
    with pytest.raises(IllegalTransition):
        core.register_sent()
    with pytest.raises(IllegalTransition):
        core.registered(0, 0, 30)
    core.transition(ConnState.CONNECTING)
    with pytest.raises(IllegalTransition):
        core.registered(0, 0, 30)


# ---------------------------------------------------------------- window and acks


def test_registration_starts_the_window_after_what_both_sides_hold() -> None:
    core = ready_core(resume=7, outbox_acked=5)
    assert (core.acked, core.next_to_send, core.applied) == (7, 8, 5)
    assert core.ack_to_apply() == 7  # the outbox still holds 6..7: delete them
    core.ack_applied(7)
    assert core.ack_to_apply() is None
    # The outbox may know more than the supervisor answered (it renumbered): it wins.
    core2 = ready_core(resume=3, outbox_acked=9)
    assert (core2.acked, core2.next_to_send) == (9, 10)


def test_acks_in_order_advance_the_window() -> None:
    core = ready_core(max_in_flight=5)
    assert send(core, 100) == [1, 2, 3, 4, 5]
    assert core.room() == 0  # window full: nothing more until an ack
    assert core.on_ack(2) is True
    assert (core.acked, core.room()) == (2, 2)
    assert send(core, 100) == [6, 7]
    assert core.on_ack(7) is True
    assert core.ack_to_apply() == 7
    assert core.room() == 5


def test_duplicate_and_old_acks_change_nothing() -> None:
    core = ready_core()
    send(core, 10)
    assert core.on_ack(6) is True
    gen = core.generation
    for stale in (6, 5, 0, -1):
        assert core.on_ack(stale) is False
    assert (core.acked, core.next_to_send, core.generation) == (6, 11, gen)


def test_an_ack_past_what_was_sent_skips_ahead_and_stales_the_batch() -> None:
    core = ready_core(resume=0)
    gen = core.generation
    core.sent(1, gen)
    core.sent(2, gen)
    assert core.on_ack(5) is True  # the supervisor had 3..5 already (sent before a reconnect)
    assert (core.next_to_send, core.generation) == (6, gen + 1)
    core.sent(3, gen)  # the rest of a batch read before the ack: ignored
    assert core.next_to_send == 6


# ---------------------------------------------------------------- seq_gap


def test_gap_rewinds_once_per_burst_then_again_after_the_holdoff() -> None:
    clock = FakeClock()
    core = ready_core(clock=clock)
    send(core, 40)
    core.on_ack(2)
    gen = core.generation
    assert core.on_seq_gap("seq gap: expected seq 3, got 4") == Rewind(3)
    assert (core.next_to_send, core.generation) == (3, gen + 1)
    assert send(core, 9) == [3, 4, 5, 6, 7, 8, 9]
    for got in range(5, 41):  # the other frames sent behind the hole earn their own seq_gap
        assert core.on_seq_gap(f"seq gap: expected seq 3, got {got}") is None
    assert core.next_to_send == 10
    assert core.on_seq_gap("expected seq 12, got 13") is None  # not sent yet: nothing to do
    assert core.on_seq_gap("expected seq 6, got 9") == Rewind(6)  # a new hole
    send(core, 9)
    clock.advance(GAP_REWIND_HOLDOFF / 2)
    assert core.on_seq_gap("expected seq 6, got 9") is None
    clock.advance(GAP_REWIND_HOLDOFF)
    assert core.on_seq_gap("expected seq 6, got 9") == Rewind(6)  # rewind again rather than stall


def test_gap_at_an_acked_seq_asks_for_a_resync() -> None:
    core = ready_core()
    send(core, 10)
    core.on_ack(5)
    action = core.on_seq_gap("seq gap: expected seq 3 (events after it were not stored)")
    assert action == Resync(3, 5)
    assert "expects seq 3 but acked up to 5" in str(action)
    assert core.next_to_send == 11  # nothing moved: the wrapper re-registers
    assert core.on_seq_gap("expected seq 5") == Resync(5, 5)  # the last acked seq itself
    assert core.on_seq_gap("expected seq 6") == Rewind(6)


def test_gap_without_a_number_resends_after_the_last_ack() -> None:
    core = ready_core()
    send(core, 10)
    core.on_ack(4)
    assert core.on_seq_gap("gap") == Rewind(5)


def test_parse_expected_seq() -> None:
    assert parse_expected_seq("expected seq 42, got 50") == 42
    assert parse_expected_seq("seq gap: expected=7") == 7
    assert parse_expected_seq("gap before 13") == 13
    assert parse_expected_seq("no number") is None
    assert parse_expected_seq("") is None


# ---------------------------------------------------------------- reconnect


def test_reconnect_resends_every_unacked_event_in_order() -> None:
    core = ready_core(max_in_flight=100)
    assert send(core, 10) == list(range(1, 11))
    core.on_ack(4)
    core.ack_applied(4)
    core.transition(ConnState.DISCONNECTED)  # 5..10 were in flight: lost with the socket
    connect(core, resume=6, outbox_acked=6)  # the supervisor had stored 5..6 before the cut
    assert send(core, 12) == [7, 8, 9, 10, 11, 12]


# ---------------------------------------------------------------- backoff


def test_backoff_bounds_and_reset_on_registration() -> None:
    core = AgentLinkCore(backoff=Backoff(0.1, 60.0, rng=random.Random(3)),
                         auth_backoff=Backoff(1.0, 300.0, floor=1.0, rng=random.Random(3)))
    ceilings = []
    for _ in range(40):
        ceilings.append(core.backoff.ceiling())
        assert 0.1 <= core.retry_delay() <= max(0.1, ceilings[-1]) <= 60.0
    assert ceilings[:3] == pytest.approx([0.1, 0.2, 0.4]) and ceilings[-1] == 60.0
    for _ in range(40):
        assert 1.0 <= core.retry_delay(refused=True) <= 300.0
    assert core.backoff.attempt == 40 and core.auth_backoff.attempt == 40
    connect(core, 0, 0)
    assert core.backoff.attempt == 0 and core.auth_backoff.attempt == 0


def test_jitter_comes_from_the_injected_rng() -> None:
    def delays(seed: int) -> list[float]:
        core = AgentLinkCore(backoff=Backoff(0.1, 60.0, rng=random.Random(seed)))
        return [core.retry_delay() for _ in range(20)]

    assert delays(5) == delays(5)
    assert delays(5) != delays(6)


# ---------------------------------------------------------------- keepalive and deadlines


def test_heartbeat_due_at_once_then_every_interval() -> None:
    clock = FakeClock()
    core = ready_core(clock=clock, heartbeat=30.0)
    assert core.heartbeat_delay() == 0.0
    core.heartbeat_sent()
    assert core.heartbeat_delay() == 30.0
    clock.advance(29.5)
    assert core.heartbeat_delay() == pytest.approx(0.5)
    clock.advance(5)
    assert core.heartbeat_delay() == 0.0  # late: send now, never a negative sleep


def test_registered_must_arrive_before_the_deadline() -> None:
    clock = FakeClock()
    core = AgentLinkCore(registered_timeout=10.0, clock=clock)
    core.transition(ConnState.CONNECTING)
    core.transition(ConnState.REGISTERING)
    core.register_sent()
    assert core.register_time_left() == 10.0
    clock.advance(9.0)
    assert core.register_time_left() == pytest.approx(1.0)
    clock.advance(1.5)
    assert core.register_time_left() == 0.0  # timed out: the wrapper gives up this attempt


# ---------------------------------------------------------------- outbox numbering


def test_clamp_ack() -> None:
    assert clamp_ack(5, 2, 10) == 5
    assert clamp_ack(2, 2, 10) is None and clamp_ack(1, 2, 10) is None
    assert clamp_ack(50, 2, 10) == 9  # never past the last assigned seq
    assert clamp_ack(50, 9, 10) is None


def test_plan_resume() -> None:
    assert plan_resume(4, 2, 10) is None and plan_resume(2, 2, 10) is None and plan_resume(9, 2, 10) is None
    assert plan_resume(0, 5, 10) == -5  # supervisor restored from a backup
    assert plan_resume(40, 0, 3) == 40  # our outbox restarted at 1
    with pytest.raises(ValueError):
        plan_resume(-1, 0, 1)


# ---------------------------------------------------------------- property: no loss, no duplicate


@dataclass
class Model:
    """An agent (its core and an in-memory outbox) and a hub (its core, a commit queue and the stored
    events), joined by two ordered wires carrying the real seq_gap texts."""

    core: AgentLinkCore
    batch: int = 3
    pending: dict[int, str] = field(default_factory=dict)  # outbox: seq -> event id
    last_acked: int = 0
    next_seq: int = 1
    appended: list[str] = field(default_factory=list)
    hub: HubLinkCore = field(default_factory=HubLinkCore)
    queued: list[tuple[int, str]] = field(default_factory=list)  # accepted, commit pending
    stored: list[str] = field(default_factory=list)
    up: list[tuple[int, str]] = field(default_factory=list)
    down: list[tuple[str, int | str]] = field(default_factory=list)

    @property
    def committed(self) -> int:
        return self.hub.state(NODE).committed

    def append(self) -> None:
        eid = f"e{len(self.appended)}"
        self.appended.append(eid)
        self.pending[self.next_seq] = eid
        self.next_seq += 1

    def outbox_ack(self, seq: int) -> None:
        through = clamp_ack(seq, self.last_acked, self.next_seq)
        if through is not None:
            for s in [s for s in self.pending if s <= through]:
                del self.pending[s]
            self.last_acked = through

    def send(self) -> None:
        """The wrapper's sender: read a batch after next_to_send - 1, send while the generation holds."""
        if self.core.state is not ConnState.READY or self.core.room() <= 0:
            return
        gen = self.core.generation
        after = self.core.next_to_send - 1
        for seq in sorted(s for s in self.pending if s > after)[: min(self.core.room(), self.batch)]:
            if gen != self.core.generation:
                break
            self.up.append((seq, self.pending[seq]))
            self.core.sent(seq, gen)

    def hub_receive(self) -> None:
        if not self.up:
            return
        seq, eid = self.up.pop(0)
        verdict, n = self.hub.offer(NODE, seq)
        if verdict == ACCEPTED:
            self.queued.append((seq, eid))
        elif verdict == DUPLICATE:
            if HubLinkCore.acks_duplicate(n, seq):
                self.down.append(("ack", n))
        else:
            self.down.append(("error", gap_message(n, seq)))

    def hub_commit(self, ok: bool) -> None:
        if not self.queued:
            return
        if ok:
            self.stored.extend(eid for _, eid in self.queued)
            self.down.append(("ack", self.hub.committed(NODE, self.queued[-1][0])))
        else:  # the transaction failed: nothing stored, the agent is asked to resend
            self.down.append(("error", rewind_message(self.hub.rollback(NODE))))
        self.queued.clear()

    def agent_receive(self) -> None:
        if not self.down or self.core.state is not ConnState.READY:
            return
        kind, value = self.down.pop(0)
        if kind == "ack":
            assert isinstance(value, int)
            self.core.on_ack(value)
        else:
            assert isinstance(value, str)
            if isinstance(self.core.on_seq_gap(value), Resync):
                self.reconnect()

    def apply_ack(self) -> None:
        target = self.core.ack_to_apply()
        if target is not None:
            self.outbox_ack(target)
            self.core.ack_applied(target)

    def reconnect(self) -> None:
        """The socket dies (frames on the wire are lost) and the agent registers again.

        What the hub had accepted stays queued and may still commit (its ack then goes out on the
        new connection, as the real hub's cumulative ack does)."""
        if self.core.state is ConnState.READY:
            self.core.transition(ConnState.DISCONNECTED)
            self.outbox_ack(self.core.acked)  # the wrapper persists the last ack heard
        self.up.clear()
        self.down.clear()
        self.core.transition(ConnState.CONNECTING)
        self.core.transition(ConnState.REGISTERING)
        self.core.register_sent()
        resume = self.hub.registered(NODE, self.committed).committed
        assert plan_resume(resume, self.last_acked, self.next_seq) is None  # this hub never loses acked events
        self.outbox_ack(resume)
        self.core.registered(resume, self.last_acked, 30.0)
        self.core.transition(ConnState.READY)

    def check(self) -> None:
        assert len(self.stored) == len(set(self.stored)), "an event was stored twice"
        assert self.stored == self.appended[: len(self.stored)], "stored out of order"
        assert self.last_acked <= self.committed and self.core.acked <= self.committed, "acked an event not stored"
        deleted = set(self.appended) - set(self.pending.values())
        assert deleted <= set(self.stored), "an event left the outbox without being stored"
        assert sorted(self.pending) == list(range(self.last_acked + 1, self.next_seq)), "outbox range has a hole"


NODE = "n1"


class AgentAgainstHub(RuleBasedStateMachine):
    """The agent core against the hub core: whatever the order of sends, commits, failed commits,
    acks (also stale ones), seq_gaps and reconnects, no acked event is lost and none is stored twice;
    once the network behaves, every appended event is stored exactly once, in order."""

    @initialize(max_in_flight=st.integers(1, 6))
    def start(self, max_in_flight: int) -> None:
        self.clock = FakeClock()
        self.m = Model(AgentLinkCore(max_in_flight=max_in_flight, clock=self.clock,
                                     backoff=Backoff(0.1, 60.0, rng=random.Random(0))))
        self.m.reconnect()

    @rule(n=st.integers(1, 4))
    def append(self, n: int) -> None:
        for _ in range(n):
            self.m.append()

    @rule()
    def send(self) -> None:
        self.m.send()

    @rule(n=st.integers(1, 4))
    def hub_receives(self, n: int) -> None:
        for _ in range(n):
            self.m.hub_receive()

    @rule(ok=st.booleans())
    def hub_commits(self, ok: bool) -> None:
        self.m.hub_commit(ok)

    @rule(n=st.integers(1, 4))
    def agent_receives(self, n: int) -> None:
        for _ in range(n):
            self.m.agent_receive()

    @rule()
    def acker(self) -> None:
        self.m.apply_ack()

    @rule()
    def stale_ack(self) -> None:
        self.m.down.append(("ack", self.m.committed // 2))  # an old ack arriving late changes nothing

    @rule()
    def reconnect(self) -> None:
        self.m.reconnect()

    @rule()
    def tick(self) -> None:
        self.clock.advance(GAP_REWIND_HOLDOFF / 2)

    @invariant()
    def nothing_lost_nothing_twice(self) -> None:
        self.m.check()

    def teardown(self) -> None:
        m = getattr(self, "m", None)
        if m is None:
            return
        for _ in range(10 * (len(m.appended) + 2)):
            m.send()
            while m.up or m.down or m.queued:
                m.hub_receive()
                if not m.up:
                    m.hub_commit(ok=True)
                m.agent_receive()
                m.apply_ack()
                m.send()
            m.check()
            if m.stored == m.appended and not m.pending:
                break
            self.clock.advance(GAP_REWIND_HOLDOFF)
            if m.core.next_to_send > m.committed + 1:
                m.reconnect()  # a rewind swallowed by the hold-off with nothing behind it: healed by a reconnect
        assert m.stored == m.appended
        assert not m.pending and m.last_acked == m.committed == len(m.appended)


AgentAgainstHub.TestCase.settings = settings(PROPS, max_examples=300, stateful_step_count=40)
test_no_interleaving_of_acks_gaps_and_reconnects_loses_or_duplicates_an_event = AgentAgainstHub.TestCase
