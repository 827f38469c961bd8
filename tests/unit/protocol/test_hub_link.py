"""HubLinkCore (sans-I/O hub side of SPEC 4 "Delivery" and "Liveness"), driven by scripted seqs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halswarm.protocol.agent_link import parse_expected_seq
from halswarm.protocol.hub_link import (
    ACCEPTED,
    DUPLICATE,
    GAP,
    HubLinkCore,
    Liveness,
    SeqState,
    gap_message,
    rewind_message,
)
from tests.support.protocol_strategies import PROPS

pytestmark = pytest.mark.timeout(60)


def test_events_in_order_are_accepted_duplicates_and_gaps_change_nothing() -> None:
    hub = HubLinkCore()
    assert hub.registered("n1", 0) == SeqState(0, 0)
    assert [hub.offer("n1", s) for s in (1, 2, 3)] == [(ACCEPTED, 1), (ACCEPTED, 2), (ACCEPTED, 3)]
    assert hub.offer("n1", 2) == (DUPLICATE, 0)  # nothing committed yet: the ack says 0
    assert hub.offer("n1", 7) == (GAP, 4)
    assert hub.state("n1") == SeqState(committed=0, accepted=3)
    assert hub.committed("n1", 3) == 3
    assert hub.offer("n1", 1) == (DUPLICATE, 3)
    assert hub.offer("n1", 4) == (ACCEPTED, 4)
    assert hub.offer("n2", 1) == (ACCEPTED, 1)  # nodes are independent


def test_a_duplicate_is_acked_again_only_once_stored() -> None:
    hub = HubLinkCore()
    hub.offer("n", 1)
    hub.offer("n", 2)
    hub.committed("n", 1)
    verdict, committed = hub.offer("n", 2)
    assert verdict == DUPLICATE and not hub.acks_duplicate(committed, 2)  # 2 is queued, not stored
    assert hub.acks_duplicate(committed, 1)


def test_registration_raises_the_base_and_never_lowers_it() -> None:
    hub = HubLinkCore()
    assert hub.registered("n", 40).committed == 40
    assert hub.expects("n", 41) and not hub.expects("n", 42)
    hub.offer("n", 41)
    hub.offer("n", 42)
    st = hub.registered("n", 40)  # a re-register while 41..42 are queued: they stay queued
    assert st == SeqState(committed=40, accepted=42)
    assert hub.registered("n", 10).committed == 40


def test_commits_are_cumulative_and_monotonic() -> None:
    hub = HubLinkCore()
    for s in range(1, 6):
        hub.offer("n", s)
    assert hub.committed("n", 3) == 3
    assert hub.committed("n", 2) == 3
    assert hub.is_committed("n", 3) and not hub.is_committed("n", 4)


def test_a_failed_commit_rolls_back_to_what_is_stored_and_asks_for_a_resend() -> None:
    hub = HubLinkCore()
    for s in range(1, 4):
        hub.offer("n", s)
    hub.committed("n", 1)
    for s in range(4, 6):
        hub.offer("n", s)
    assert hub.rollback("n") == 2
    assert hub.state("n") == SeqState(committed=1, accepted=1)
    assert hub.offer("n", 6) == (GAP, 2)
    assert hub.offer("n", 2) == (ACCEPTED, 2)


def test_the_agent_reads_the_expected_seq_from_both_seq_gap_texts() -> None:
    assert gap_message(7, 9) == "seq gap: expected seq 7, got 9"
    assert parse_expected_seq(gap_message(7, 9)) == 7
    assert rewind_message(12) == "seq gap: expected seq 12 (events after it were not stored)"
    assert parse_expected_seq(rewind_message(12)) == 12


def test_liveness_timeout_is_interval_times_count() -> None:
    rule = Liveness(heartbeat_interval=30, heartbeat_timeout_count=3)
    assert rule.timeout == 90 and rule.tick == 1.0
    assert not rule.silent(last_frame=100.0, now=190.0)
    assert rule.silent(last_frame=100.0, now=190.5)  # a fake clock: no waiting
    assert Liveness(heartbeat_interval=2).tick == 0.5


@settings(PROPS, max_examples=300)
@given(ops=st.lists(st.one_of(st.tuples(st.just("offer"), st.integers(-2, 30)),
                              st.tuples(st.sampled_from(["commit", "fail", "register"]), st.just(0))),
                    max_size=120))
def test_stored_seqs_stay_gap_free_and_never_twice(ops: list[tuple[str, int]]) -> None:
    """Whatever arrives, the hub stores each seq once, in order, and never acks beyond what it stored."""
    hub = HubLinkCore()
    queued: list[int] = []
    stored: list[int] = []
    for op, seq in ops:
        if op == "offer":
            verdict, n = hub.offer("n", seq)
            if verdict == ACCEPTED:
                queued.append(seq)
            elif verdict == GAP:
                assert n == (queued or stored or [0])[-1] + 1 and seq != n
            else:
                assert n == hub.state("n").committed and n <= (stored or [0])[-1]
        elif op == "commit" and queued:
            stored.extend(queued)
            ack = hub.committed("n", queued[-1])
            queued.clear()
            assert ack == stored[-1]
        elif op == "fail":
            assert hub.rollback("n") == (stored or [0])[-1] + 1
            queued.clear()
        elif op == "register":
            assert hub.registered("n", (stored or [0])[-1]).committed == (stored or [0])[-1]
        st_ = hub.state("n")
        assert st_.committed <= st_.accepted
        assert stored == list(range(1, len(stored) + 1))
        assert stored + queued == list(range(1, st_.accepted + 1))
