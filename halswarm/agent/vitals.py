"""The agent's own figures for the heartbeat's `process` object (halswarm.core.agent_vitals.VITAL_KEYS)."""

from __future__ import annotations

from halswarm.memwatch import read_memory_max, read_rss


def sample_vitals(restarts: int | None, opencode_restarts: int | None) -> dict[str, float]:
    """RSS and cgroup memory limit of this process (procfs reads: call it off the event loop), the unit's
    NRestarts and the restarts of the opencode serve it supervises; a figure that is unknown is left out."""
    figures = {"rss_bytes": read_rss(), "memory_max_bytes": read_memory_max(), "restarts": restarts,
               "opencode_restarts": opencode_restarts}
    return {k: float(v) for k, v in figures.items() if v is not None}
