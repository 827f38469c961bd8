"""Built-in remediation triggers that read what the supervisor already knows (pure: facts in, decision out).

`agent-high-memory`: the memory share a node reports in its heartbeats (``ram_used_mb / ram_total_mb``,
the only memory figure agents send today) at or above a percentage for K consecutive heartbeats. A
streak ends at the first heartbeat below the clear level (hysteresis: a share hovering at the threshold
does not restart the count), so one long episode fires once per K heartbeats at most, and the engine's
persisted throttle turns that into one run per window.

`cost-data-discrepancy`: a cost provider whose polls failed N times in a row (the aggregator's own
count, reset by a successful poll). One degradation episode (provider, degraded since) fires once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

HYSTERESIS_POINTS = 5.0  # a streak survives dips to threshold - 5 points; lower ends it


def memory_percent(resources: Mapping[str, float]) -> float | None:
    """The node's used memory in percent of its total, None when the heartbeat does not tell."""
    used, total = resources.get("ram_used_mb"), resources.get("ram_total_mb")
    if not isinstance(used, int | float) or not isinstance(total, int | float):
        return None
    if not (math.isfinite(used) and math.isfinite(total)) or total <= 0 or used < 0:
        return None
    return min(100.0, used * 100.0 / total)


def agent_memory_percent(process: Mapping[str, float], resources: Mapping[str, float]) -> tuple[float | None, str]:
    """What the agent-high-memory trigger compares with its threshold, and which figure it is: the agent's
    own RSS against its unit's MemoryMax when the agent reports both (the runbook's "80% of the limit"),
    else the node's used RAM against its total."""
    rss, limit = process.get("rss_bytes"), process.get("memory_max_bytes")
    if isinstance(rss, int | float) and isinstance(limit, int | float) and math.isfinite(rss) \
            and math.isfinite(limit) and limit > 0 and rss >= 0:
        return min(100.0, rss * 100.0 / limit), "agent RSS of MemoryMax"
    return memory_percent(resources), "node RAM"


@dataclass(frozen=True)
class Streak:
    """Consecutive heartbeats counted as above the threshold (`count`) and the newest share seen."""
    count: int = 0
    last_percent: float | None = None


def next_streak(streak: Streak, percent: float | None, threshold: float, needed: int) -> tuple[Streak, bool]:
    """Feed one heartbeat's share: the new streak and whether the trigger fires now. It fires when the
    count reaches `needed`; the count then starts over so a lasting condition fires again only after
    another `needed` heartbeats. Unknown shares leave the streak as it is."""
    if percent is None:
        return streak, False
    if percent >= threshold:
        count = streak.count + 1
    elif streak.count and percent >= threshold - HYSTERESIS_POINTS:
        count = streak.count  # a dip just under the threshold neither counts nor clears
    else:
        count = 0
    if count >= needed:
        return Streak(0, percent), True
    return Streak(count, percent), False


@dataclass(frozen=True)
class CostProviderFacts:
    name: str
    failures: int  # consecutive failed polls (0 after a success)
    degraded_since: float | None


def cost_failures(providers: list[CostProviderFacts], needed: int, decided: set[tuple[str, float]]
                  ) -> list[tuple[tuple[str, float], str]]:
    """Degradation episodes that reach `needed` failed polls and were not decided yet: (episode, reason)."""
    out = []
    for p in sorted(providers, key=lambda p: p.name):
        if p.degraded_since is None or p.failures < needed:
            continue
        episode = (p.name, p.degraded_since)
        if episode not in decided:
            out.append((episode, f"cost provider {p.name}: {p.failures} failed polls in a row "
                                 f"(threshold {needed})"))
    return out
