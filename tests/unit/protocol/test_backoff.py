"""Backoff: exponential growth, full jitter, cap, floor, reset (SPEC 4: 0.1 s .. 60 s)."""

from __future__ import annotations

import random

import pytest

from halswarm.protocol.backoff import Backoff


def test_defaults_match_spec() -> None:
    b = Backoff()
    assert (b.base, b.cap, b.floor) == (0.1, 60.0, 0.1)


def test_ceiling_grows_exponentially_then_caps() -> None:
    b = Backoff(0.1, 60.0, rng=random.Random(1))
    ceilings = []
    for _ in range(15):
        ceilings.append(b.ceiling())
        b.next_delay()
    assert ceilings[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert ceilings[9] == pytest.approx(51.2)
    assert ceilings[10:] == [60.0] * 5


def test_delays_within_floor_and_ceiling() -> None:
    b = Backoff(0.1, 60.0, rng=random.Random(7))
    for _ in range(2000):
        ceiling = b.ceiling()
        d = b.next_delay()
        assert 0.1 <= d <= max(0.1, ceiling) <= 60.0


def test_full_jitter_spreads_over_the_whole_window() -> None:
    """At the cap, delays must cover [0, cap] roughly uniformly (not +-25 % around the cap)."""
    rng = random.Random(42)
    b = Backoff(0.1, 60.0, rng=rng)
    for _ in range(20):
        b.next_delay()
    samples = [b.next_delay() for _ in range(5000)]
    assert min(samples) < 3.0
    assert max(samples) > 57.0
    mean = sum(samples) / len(samples)
    assert 27.0 < mean < 33.0  # uniform(0, 60) has mean 30
    low = sum(1 for s in samples if s < 30.0)
    assert 0.45 < low / len(samples) < 0.55


def test_seeded_rng_is_deterministic() -> None:
    a = Backoff(rng=random.Random(3))
    b = Backoff(rng=random.Random(3))
    assert [a.next_delay() for _ in range(20)] == [b.next_delay() for _ in range(20)]


def test_reset_restarts_growth() -> None:
    b = Backoff(0.1, 60.0, rng=random.Random(5))
    for _ in range(12):
        b.next_delay()
    assert b.attempt == 12 and b.ceiling() == 60.0
    b.reset()
    assert b.attempt == 0
    assert b.ceiling() == pytest.approx(0.1)
    assert b.next_delay() == pytest.approx(0.1)  # uniform(0, 0.1) floored at 0.1


def test_floor_prevents_spinning_on_zero_draws() -> None:
    class Zero(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return 0.0

    b = Backoff(0.1, 60.0, rng=Zero())
    assert all(b.next_delay() == 0.1 for _ in range(50))
    assert Backoff(1.0, 300.0, floor=5.0, rng=Zero()).next_delay() == 5.0


def test_huge_attempt_counts_do_not_overflow() -> None:
    b = Backoff(0.1, 60.0, rng=random.Random(0))
    for _ in range(5000):
        assert b.next_delay() <= 60.0


@pytest.mark.parametrize(
    ("base", "cap", "floor"), [(0, 1, None), (-1, 1, None), (2, 1, None), (0.1, 1, 2.0), (0.1, 1, -1.0)]
)
def test_invalid_parameters(base: float, cap: float, floor: float | None) -> None:
    with pytest.raises(ValueError):
        Backoff(base, cap, floor=floor)
