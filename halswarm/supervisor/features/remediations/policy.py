"""When `remediation.auto` runs `agent-crashed` (pure: facts in, decisions out)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from halswarm.supervisor.features.remediations.settings import AGENT_CRASHED, AutoConfig

_PATTERN_CHARS = set("*?[]!&:,~ \t\n")


@dataclass(frozen=True)
class NodeFacts:
    node_id: str
    status: str
    offline_since: float | None  # when the engine saw it go offline (None while online)


@dataclass(frozen=True)
class Decision:
    kind: str  # "run" | "throttled"
    incident: str
    host: str
    reason: str
    episode: tuple[str, str, float]  # (incident, host, offline_since): decided once
    last_started: float | None = None
    retry_after: float | None = None


def valid_host(name: str) -> bool:
    """A node id usable as one Ansible --limit host (no pattern syntax)."""
    return bool(name) and not (set(name) & _PATTERN_CHARS)


def decide(now: float, cfg: AutoConfig, nodes: Iterable[NodeFacts],
           last_started: Mapping[tuple[str, str], float], decided: Iterable[tuple[str, str, float]] = ()
           ) -> list[Decision]:
    """Which runs to start now. A node offline >= `offline_seconds` gets a ``run`` unless the same
    incident started on that host within the window; then its offline episode (`decided` holds the
    episodes already decided) gets one ``throttled`` decision. A node that stays offline is run again
    once the window has passed."""
    if AGENT_CRASHED not in cfg.auto:
        return []
    done = set(decided)
    out: list[Decision] = []
    for n in sorted(nodes, key=lambda n: n.node_id):
        if n.status != "offline" or n.offline_since is None or not valid_host(n.node_id):
            continue
        offline = now - n.offline_since
        if offline < cfg.offline_seconds:
            continue
        episode = (AGENT_CRASHED, n.node_id, n.offline_since)
        reason = f"node {n.node_id} offline for {offline:.0f} s (threshold {cfg.offline_seconds:g} s)"
        last = last_started.get((AGENT_CRASHED, n.node_id))
        if last is None or now - last >= cfg.window_seconds:
            out.append(Decision("run", AGENT_CRASHED, n.node_id, reason, episode, last))
        elif episode not in done:
            out.append(Decision("throttled", AGENT_CRASHED, n.node_id, reason, episode, last,
                                last + cfg.window_seconds))
    return out
