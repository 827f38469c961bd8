"""The safe horizon of a shared PostgreSQL's events (halswarm.core.event_horizon): a reader that reads by
id only up to it never skips an event that commits later, whatever order the writers commit in."""

from __future__ import annotations

import random

import pytest

from halswarm.core.event_horizon import MAX_PENDING, Horizon


def test_with_no_writer_in_flight_the_last_id_handed_out_is_safe_at_once() -> None:
    h = Horizon()
    assert h.probe(10, []) == 10 and not h.waiting
    assert h.probe(10, []) == 10


def test_ids_of_a_transaction_still_open_hold_the_horizon_until_it_ends() -> None:
    h = Horizon()
    assert h.probe(100, []) == 100
    # T1 drew 101..200 and is still open; T2 drew 201..300 and committed: 300 is not safe yet.
    assert h.probe(300, ["1/7"]) == 100 and h.waiting
    assert h.probe(300, ["1/7"]) == 100
    # T1 ended (committed or rolled back): every id up to 300 is settled.
    assert h.probe(300, []) == 300 and not h.waiting


def test_a_transaction_that_began_after_a_probe_does_not_hold_back_that_probes_value() -> None:
    h = Horizon()
    assert h.probe(300, ["1/7"]) is None  # nothing known to be safe yet
    assert h.probe(350, ["2/9"]) == 300  # 1/7 ended; 2/9 drew ids after 300
    assert h.probe(360, ["2/9", "3/4"]) == 300
    assert h.probe(360, ["3/4"]) == 350
    assert h.probe(360, []) == 360


def test_the_horizon_never_goes_down_and_a_long_transaction_keeps_the_candidates_bounded() -> None:
    h = Horizon()
    h.probe(50, [])
    for i in range(10 * MAX_PENDING):
        assert h.probe(100 + i, ["long", f"t{i}"]) == 50
    assert len(h._pending) <= MAX_PENDING
    assert h.probe(10, []) == 100 + 10 * MAX_PENDING - 1  # every candidate resolved; a lower value is ignored


@pytest.mark.parametrize("seed", range(20))
def test_a_reader_following_the_horizon_never_skips_an_event_committed_later(seed: int) -> None:
    """Writers draw ids from one sequence and commit (or roll back) in random order; a reader probes
    between their steps and reads every visible id up to the horizon. At the end it has read every
    committed id exactly once, in increasing order."""
    rnd = random.Random(seed)
    seq = 0
    open_tx: dict[str, list[int]] = {}  # vxid -> ids drawn
    committed: set[int] = set()
    h, cursor, read = Horizon(), 0, []
    n_tx = 0
    for _ in range(3000):
        action = rnd.random()
        if action < 0.3 and len(open_tx) < 4:  # a transaction begins and takes its lock
            n_tx += 1
            open_tx[f"x{n_tx}"] = []
        elif action < 0.55 and open_tx:  # an open transaction draws ids
            tx = rnd.choice(list(open_tx))
            for _ in range(rnd.randint(1, 5)):
                seq += 1
                open_tx[tx].append(seq)
        elif action < 0.8 and open_tx:  # one ends: mostly a commit, sometimes a rollback (a hole in the ids)
            tx = rnd.choice(list(open_tx))
            ids = open_tx.pop(tx)
            if rnd.random() < 0.85:
                committed.update(ids)
        else:  # the reader: the sequence first, then the lock holders, then every visible id up to the horizon
            assigned = seq
            safe = h.probe(assigned, list(open_tx))
            if safe is not None and safe > cursor:
                read.extend(sorted(i for i in committed if cursor < i <= safe))
                cursor = safe
    for tx in list(open_tx):
        committed.update(open_tx.pop(tx))
    safe = h.probe(seq, [])
    read.extend(sorted(i for i in committed if cursor < i <= (safe or 0)))
    assert read == sorted(committed)
