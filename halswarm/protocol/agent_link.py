"""Sans-I/O core of the agent's link to the supervisor (SPEC 4 "Delivery").

``AgentLinkCore`` holds every decision of the agent side and does no I/O: the asyncio wrapper
(``halswarm.agent.connection``) feeds it what happened (connected, ``registered``, ``ack``,
``seq_gap``, an event sent, a clock reading) and does what it answers (which seqs to read from the
outbox and send, which ack to persist, rewind or re-register, how long to wait). Tests drive it
with scripted frames and a fake clock, no socket.

Connection states (every change goes through ``transition``, which rejects illegal ones)::

    disconnected -> connecting -> registering -> ready -> disconnected -> ...
    (connecting | registering) -> disconnected     failed attempt
    any -> closed                                   close(); terminal

Send window: seqs ``acked + 1 .. next_to_send - 1`` are on the wire, unacked; at most
``max_in_flight`` of them. Acks are cumulative; an ack at or below ``acked`` changes nothing.
``generation`` is bumped whenever someone other than the sender moves ``next_to_send`` (ack past
it, rewind, registration): a batch read from the outbox under an older generation is stale and
its remaining events are not sent.

Numbering rules of the durable outbox (which assigns seqs: per node, from 1, gap-free) are the
pure functions ``clamp_ack`` and ``plan_resume``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from halswarm.protocol.backoff import Backoff

GAP_REWIND_HOLDOFF = 1.0  # seconds before the same seq_gap may trigger another rewind
_EXPECTED_RE = re.compile(r"expected\D{0,20}?(\d+)", re.IGNORECASE)


class ConnState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    REGISTERING = "registering"
    READY = "ready"
    CLOSED = "closed"


TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    ConnState.DISCONNECTED: frozenset({ConnState.CONNECTING, ConnState.CLOSED}),
    ConnState.CONNECTING: frozenset({ConnState.REGISTERING, ConnState.DISCONNECTED, ConnState.CLOSED}),
    ConnState.REGISTERING: frozenset({ConnState.READY, ConnState.DISCONNECTED, ConnState.CLOSED}),
    ConnState.READY: frozenset({ConnState.DISCONNECTED, ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the link's state machine does not allow (a bug in the caller)."""


@dataclass(frozen=True, slots=True)
class Rewind:
    """Resend from ``seq`` (the supervisor did not store it)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Resync:
    """Re-register: the supervisor expects a seq it had acked already (it lost events)."""

    expected: int
    acked: int

    def __str__(self) -> str:
        return f"supervisor expects seq {self.expected} but acked up to {self.acked}"


def parse_expected_seq(message: str) -> int | None:
    """Pull the expected seq out of a ``seq_gap`` message ("... expected seq 42 ...")."""
    m = _EXPECTED_RE.search(message or "")
    if m is None:
        m = re.search(r"\d+", message or "")
        return int(m.group(0)) if m else None
    return int(m.group(1))


def clamp_ack(seq: int, last_acked: int, next_seq: int) -> int | None:
    """The seq an ack may delete through, or None when it deletes nothing.

    An ack beyond the last assigned seq (``next_seq - 1``) is clamped to it: nothing unassigned
    can be acknowledged.
    """
    if seq <= last_acked:
        return None
    seq = min(seq, next_seq - 1)
    return seq if seq > last_acked else None


def plan_resume(resume: int, last_acked: int, next_seq: int, *, same_store: bool = True) -> int | None:
    """What ``registered.resume_from_seq`` means for the outbox: None or a renumbering offset.

    None: normal (``last_acked <= resume < next_seq``), delete through ``resume``. Otherwise the
    pending events are renumbered by the returned offset to follow ``resume``: the supervisor
    lost acked events (``resume < last_acked``, negative offset) or our numbering restarted
    (``resume >= next_seq``, positive offset).

    ``same_store=False`` (the agent failed over to a supervisor that did not ack its events,
    ``halswarm.protocol.failover``): a ``resume`` above ``last_acked`` may count another store's
    events, so nothing pending is deleted on its word; the pending events are renumbered to follow it.
    """
    if resume < 0:
        raise ValueError("resume seq must be >= 0")
    if resume == last_acked:
        return None
    if last_acked < resume < next_seq and same_store:
        return None
    return resume - last_acked


class AgentLinkCore:
    """State, send window, acks, rewinds, backoff and deadlines of one agent link. No I/O."""

    def __init__(
        self,
        *,
        max_in_flight: int = 1000,
        backoff: Backoff | None = None,
        auth_backoff: Backoff | None = None,
        registered_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.max_in_flight = max_in_flight
        self.backoff = backoff or Backoff(0.1, 60.0)
        # 401/403/429 are not going to heal in 100 ms; retry slowly (but forever, never spin).
        self.auth_backoff = auth_backoff or Backoff(1.0, 300.0, floor=1.0)
        self.registered_timeout = registered_timeout
        self.clock = clock
        self.state = ConnState.DISCONNECTED
        self.acked = 0  # highest cumulative ack heard
        self.applied = 0  # highest ack persisted to the outbox
        self.next_to_send = 1
        self.generation = 0
        self.heartbeat_interval = 0.0
        self.register_deadline = 0.0
        self.next_heartbeat_at = 0.0
        self._gap_rewind: int | None = None
        self._gap_rewind_at = 0.0

    # ------------------------------------------------------------------ states

    def transition(self, new: ConnState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"illegal connection state transition {self.state} -> {new}")
        self.state = new

    def register_sent(self) -> None:
        """The ``register`` frame is out: ``registered`` must arrive before ``register_deadline``."""
        if self.state is not ConnState.REGISTERING:
            raise IllegalTransition(f"register sent in state {self.state}")
        self.register_deadline = self.clock() + self.registered_timeout

    def register_time_left(self) -> float:
        return max(0.0, self.register_deadline - self.clock())

    def registered(self, resume_from_seq: int, outbox_last_acked: int, heartbeat_interval: float) -> None:
        """``registered`` arrived and the outbox applied ``resume_from_seq``: set up to stream.

        The window restarts after what both sides hold; the first heartbeat is due at once (the
        supervisor sees the outbox backlog without waiting an interval); the backoffs restart.
        The caller then moves to ``READY``.
        """
        if self.state is not ConnState.REGISTERING:
            raise IllegalTransition(f"registered in state {self.state}")
        self.acked = max(resume_from_seq, outbox_last_acked)
        self.applied = outbox_last_acked
        self.next_to_send = self.acked + 1
        self.generation += 1
        self._gap_rewind = None
        self.heartbeat_interval = heartbeat_interval
        self.next_heartbeat_at = self.clock()
        self.backoff.reset()
        self.auth_backoff.reset()

    def retry_delay(self, *, refused: bool = False, round_done: bool = True) -> float:
        """Delay before the next connection attempt; ``refused`` for 401/403/429 (slow backoff).

        ``round_done=False``: a hop to the next supervisor of a failover round
        (``halswarm.protocol.failover.Rotation``); it waits only the backoff's floor and does not
        grow the backoff, which keeps counting whole rounds.
        """
        if not round_done:
            return self.backoff.floor
        return (self.auth_backoff if refused else self.backoff).next_delay()

    # ------------------------------------------------------------------ receiving

    def on_ack(self, seq: int) -> bool:
        """Apply a cumulative ack; True when it moved ``acked`` (the sender and acker have work)."""
        if seq <= self.acked:
            return False
        self.acked = seq
        if seq >= self.next_to_send:
            # The supervisor already has these (e.g. acked before we resent them): skip ahead.
            self.next_to_send = seq + 1
            self.generation += 1
        return True

    def on_seq_gap(self, message: str) -> Rewind | Resync | None:
        """A ``seq_gap`` error: rewind (once per burst), re-register, or nothing to do."""
        expected = parse_expected_seq(message)
        if expected is None:
            expected = self.acked + 1
        if expected >= self.next_to_send:
            return None  # not sent (again) yet: nothing to do
        now = self.clock()
        if expected == self._gap_rewind and now - self._gap_rewind_at < GAP_REWIND_HOLDOFF:
            # Every frame sent behind a hole earns its own seq_gap; rewind once per burst,
            # not once per error (that would resend the window quadratically).
            return None
        if expected <= self.acked:
            # It acked that seq already, so it lost events; we may no longer hold them.
            # Re-register: the outbox renumbers what we still have to follow its state.
            return Resync(expected, self.acked)
        self._gap_rewind = expected
        self._gap_rewind_at = now
        self.next_to_send = expected
        self.generation += 1
        return Rewind(expected)

    # ------------------------------------------------------------------ sending

    def room(self) -> int:
        """How many more events may go on the wire now (unacked window)."""
        return self.max_in_flight - (self.next_to_send - 1 - self.acked)

    def sent(self, seq: int, generation: int) -> None:
        """Event ``seq`` of a batch read under ``generation`` is on the wire."""
        if generation == self.generation:
            self.next_to_send = seq + 1

    def ack_to_apply(self) -> int | None:
        """The ack the outbox should persist (delete through), or None when it is up to date."""
        return self.acked if self.acked > self.applied else None

    def ack_applied(self, seq: int) -> None:
        self.applied = max(self.applied, seq)

    # ------------------------------------------------------------------ keepalive

    def heartbeat_delay(self) -> float:
        """Seconds until the next heartbeat is due (0: send now)."""
        return max(0.0, self.next_heartbeat_at - self.clock())

    def heartbeat_sent(self) -> None:
        self.next_heartbeat_at = self.clock() + self.heartbeat_interval
