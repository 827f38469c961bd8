"""Sans-I/O core of the hub's side of the agent link (SPEC 4 "Delivery" and "Liveness").

``HubLinkCore`` holds, per node, what the supervisor expects next and what it has stored, and
decides what an event frame gets: stored (``ACCEPTED``), acknowledged again (``DUPLICATE``) or
refused with ``seq_gap`` (``GAP``). It does no I/O: the hub and the ingestor feed it registrations,
event seqs and commit results, and send what it answers. ``Liveness`` is the offline rule, fed
clock readings.

Per node: ``committed`` is the highest seq durably stored (what an ``ack`` may say), ``accepted``
the highest seq queued for storage (``>= committed``); the next event must be ``accepted + 1``.
A failed commit rolls ``accepted`` back to ``committed`` and the agent is asked to resend from
``committed + 1`` (a ``rewind``, the same ``seq_gap`` it gets for any hole).

This is the hot path of ingestion: ``offer`` allocates nothing but its answer tuple.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCEPTED, DUPLICATE, GAP = "accepted", "duplicate", "gap"


@dataclass(slots=True)
class SeqState:
    """One node's seq marks."""

    committed: int = 0  # highest seq durably stored
    accepted: int = 0  # highest seq queued for storage (>= committed)


def gap_message(expected: int, got: int) -> str:
    """The ``seq_gap`` text for an event that leaves a hole (agents parse the expected seq)."""
    return f"seq gap: expected seq {expected}, got {got}"


def rewind_message(expected: int) -> str:
    """The ``seq_gap`` text asking an agent to resend after a failed commit."""
    return f"seq gap: expected seq {expected} (events after it were not stored)"


class HubLinkCore:
    """Seq expectations of every node. No I/O."""

    __slots__ = ("seqs",)

    def __init__(self) -> None:
        self.seqs: dict[str, SeqState] = {}

    def state(self, node_id: str) -> SeqState:
        st = self.seqs.get(node_id)
        if st is None:
            st = self.seqs[node_id] = SeqState()
        return st

    # ----- registration -----

    def registered(self, node_id: str, stored: int) -> SeqState:
        """At registration: what is durably stored is the new base; anything queued stays queued.

        ``committed`` is then the ``resume_from_seq`` to answer.
        """
        st = self.state(node_id)
        if stored > st.committed:
            st.committed = stored
        if st.committed > st.accepted:
            st.accepted = st.committed
        return st

    # ----- events -----

    def expects(self, node_id: str, seq: int) -> bool:
        """``seq`` is the next one in line for this node (it would be accepted)."""
        return seq == self.state(node_id).accepted + 1

    def offer(self, node_id: str, seq: int) -> tuple[str, int]:
        """(ACCEPTED, seq) and mark it queued | (DUPLICATE, committed) | (GAP, expected)."""
        st = self.seqs.get(node_id)
        if st is None:
            st = self.seqs[node_id] = SeqState()
        accepted = st.accepted
        if seq <= accepted:
            return DUPLICATE, st.committed
        if seq != accepted + 1:
            return GAP, accepted + 1
        st.accepted = seq
        return ACCEPTED, seq

    @staticmethod
    def acks_duplicate(committed: int, seq: int) -> bool:
        """A duplicate is acknowledged again only once it is stored (never ahead of the commit)."""
        return committed >= seq

    # ----- commits -----

    def committed(self, node_id: str, seq: int) -> int:
        """The transaction holding ``seq`` committed: the cumulative ack to send."""
        st = self.state(node_id)
        if seq > st.committed:
            st.committed = seq
        return st.committed

    def is_committed(self, node_id: str, seq: int) -> bool:
        return seq <= self.state(node_id).committed

    def rollback(self, node_id: str) -> int:
        """A commit failed: forget what was queued above ``committed``; resend from the returned seq."""
        st = self.state(node_id)
        st.accepted = st.committed
        return st.committed + 1


@dataclass(frozen=True, slots=True)
class Liveness:
    """SPEC 4 "Liveness": a node from which no application frame arrived for
    ``heartbeat_interval_sec * heartbeat_timeout_count`` is offline."""

    heartbeat_interval: float = 30.0
    heartbeat_timeout_count: int = 3

    @property
    def timeout(self) -> float:
        return self.heartbeat_interval * self.heartbeat_timeout_count

    @property
    def tick(self) -> float:
        """How often the rule is checked."""
        return min(1.0, self.heartbeat_interval / 4)

    def silent(self, last_frame: float, now: float) -> bool:
        return now - last_frame > self.timeout
