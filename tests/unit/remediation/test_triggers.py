"""The pure built-in trigger detectors (core.remediation.triggers): series in, fire/quiet out."""

from __future__ import annotations

import pytest

from halswarm.core.remediation.triggers import (
    CostProviderFacts,
    Streak,
    agent_memory_percent,
    cost_failures,
    memory_percent,
    next_streak,
)


def feed(series: list[float | None], threshold: float = 80, needed: int = 3) -> list[int]:
    """Indexes of the heartbeats at which the trigger fires."""
    streak, fired = Streak(), []
    for i, pct in enumerate(series):
        streak, fire = next_streak(streak, pct, threshold, needed)
        if fire:
            fired.append(i)
    return fired


def test_fires_on_the_kth_consecutive_heartbeat_above() -> None:
    assert feed([50, 85, 90, 95]) == [3]


def test_quiet_when_below_or_never_k_in_a_row() -> None:
    assert feed([50, 60, 79.9, 70] * 5) == []
    assert feed([85, 90, 50, 85, 90, 50, 85]) == []  # a clear drop restarts the count


def test_hysteresis_a_dip_just_under_neither_counts_nor_clears() -> None:
    assert feed([85, 78, 85, 77, 85]) == [4]  # 78 and 77 are within 5 points: the count holds at 1, 2, 3
    assert feed([85, 85, 74, 85, 85]) == []  # 74 is below 80 - 5: cleared


def test_a_lasting_condition_fires_again_only_after_another_k() -> None:
    assert feed([90] * 7) == [2, 5]


def test_unknown_share_leaves_the_streak_alone() -> None:
    assert feed([90, None, 90, None, 90]) == [4]


@pytest.mark.parametrize(("resources", "expected"), [
    ({"ram_used_mb": 800.0, "ram_total_mb": 1000.0}, 80.0),
    ({"ram_used_mb": 2000.0, "ram_total_mb": 1000.0}, 100.0),
    ({"ram_used_mb": 800.0}, None),
    ({"ram_used_mb": 800.0, "ram_total_mb": 0.0}, None),
    ({"ram_used_mb": float("nan"), "ram_total_mb": 1000.0}, None),
    ({"ram_used_mb": -1.0, "ram_total_mb": 1000.0}, None),
    ({}, None),
])
def test_memory_percent_from_heartbeat_resources(resources: dict[str, float], expected: float | None) -> None:
    assert memory_percent(resources) == expected


def test_cost_fires_once_per_degradation_episode_at_n_failures() -> None:
    ok, two, three = (CostProviderFacts("openai", 0, None), CostProviderFacts("anthropic", 2, 100.0),
                      CostProviderFacts("anthropic", 3, 100.0))
    assert cost_failures([ok, two], 3, set()) == []
    ((episode, reason),) = cost_failures([ok, three], 3, set())
    assert episode == ("anthropic", 100.0) and "3 failed polls in a row" in reason
    assert cost_failures([three], 3, {episode}) == []  # decided already
    assert cost_failures([CostProviderFacts("anthropic", 3, 500.0)], 3, {episode})  # a new episode


def test_agent_figures_rule_over_node_ram_when_both_are_reported() -> None:
    node = {"ram_used_mb": 500, "ram_total_mb": 1000}  # the node is at 50%
    assert agent_memory_percent({"rss_bytes": 900, "memory_max_bytes": 1000}, node) == (90.0, "agent RSS of MemoryMax")
    assert agent_memory_percent({}, node) == (50.0, "node RAM")
    assert agent_memory_percent({"rss_bytes": 900}, node) == (50.0, "node RAM")  # no limit: no share
    assert agent_memory_percent({"rss_bytes": 900, "memory_max_bytes": 0}, node) == (50.0, "node RAM")
    assert agent_memory_percent({"rss_bytes": -1, "memory_max_bytes": 10}, node) == (50.0, "node RAM")
    assert agent_memory_percent({"rss_bytes": 5e9, "memory_max_bytes": 1e9}, {}) == (100.0, "agent RSS of MemoryMax")
