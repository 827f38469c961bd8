"""`remediation.*` of the supervisor config, parsed once into `AutoConfig` (SPEC 8)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from halswarm.config.supervisor import SupervisorConfig

AGENT_CRASHED = "agent-crashed"
DB_CORRUPTION = "supervisor-db-corruption"
AGENT_HIGH_MEMORY = "agent-high-memory"
COST_DISCREPANCY = "cost-data-discrepancy"
SUPERVISORS_GROUP = "hal_supervisors"  # --limit for supervisor incidents without remediation.supervisor_host
# The incidents `remediation.auto` can start by itself, and what starts them (docs/remediation.md has
# the full table, with why the others cannot be started from inside the supervisor).
TRIGGERS = {AGENT_CRASHED: "node offline", DB_CORRUPTION: "database integrity failure at start",
            AGENT_HIGH_MEMORY: "node memory share in consecutive heartbeats",
            COST_DISCREPANCY: "consecutive failed cost polls of a provider"}
# Why the others have none (the start-up warning says it; docs/remediation.md has the table).
NO_TRIGGER = {
    "supervisor-crashed": "the supervisor is down: systemd restarts it, the repair runs from outside",
    "supervisor-high-memory": "its repair restarts the supervisor, which would kill the run it started",
    "high-latency": "its repair restarts the supervisor, which would kill the run it started",
    "supervisor-unreachable": "seen from inside only as every node offline (agent-crashed); its repair "
                              "restarts the supervisor",
    "agent-cannot-connect": "a rejected handshake names no node (the node offline is agent-crashed's trigger)",
    "credential-drift": "the drift watcher already pushes the configured credentials (credentials.auto_push)",
    "lost-session-data": "missing history is an operator's judgement against a backup",
    "manual-auth-required": "a human must complete the login",
    "collect-diagnostics": "runs by itself when a repair escalates",
}
# Triggers the engine's periodic pass looks at (the others have their own path).
PERIODIC = (AGENT_CRASHED, AGENT_HIGH_MEMORY, COST_DISCREPANCY)


@dataclass(frozen=True)
class AutoConfig:
    auto: tuple[str, ...] = ()
    inventory: str | None = None
    window_seconds: float = 3600.0
    offline_seconds: float = 120.0
    timeout_seconds: float = 900.0
    memory_percent: float = 80.0  # runbook: "alerting on memory > 80% of limit"
    memory_heartbeats: int = 3
    cost_failures: int = 3
    supervisor_host: str | None = None
    state_dir: Path = Path(".")
    database_path: str = ""
    # Where the supervisor asks root for a run (see core.remediation.requests); used when it exists.
    request_dir: Path | None = None

    @classmethod
    def from_config(cls, cfg: SupervisorConfig) -> AutoConfig:
        """From the typed config (validated there); run artifacts live beside the database."""
        return cls(auto=tuple(cfg.remediation_auto), inventory=cfg.remediation_inventory,
                   window_seconds=cfg.remediation_window_minutes * 60.0,
                   offline_seconds=cfg.remediation_offline_minutes * 60.0,
                   timeout_seconds=cfg.remediation_timeout_minutes * 60.0,
                   memory_percent=float(cfg.remediation_memory_percent),
                   memory_heartbeats=cfg.remediation_memory_heartbeats,
                   cost_failures=cfg.remediation_cost_failures,
                   supervisor_host=cfg.remediation_supervisor_host,
                   state_dir=Path(cfg.database_path).expanduser().resolve().parent / "remediation-runs",
                   database_path=cfg.database_path,
                   request_dir=Path(cfg.database_path).expanduser().resolve().parent / "remediation-requests")

    @property
    def check_interval(self) -> float:
        """How often node liveness is looked at: fine enough for the threshold, never busy."""
        return min(5.0, max(0.25, self.offline_seconds / 8))

    @property
    def supervisor_limit(self) -> str:
        return self.supervisor_host or SUPERVISORS_GROUP

    @property
    def untriggered(self) -> list[str]:
        return [i for i in self.auto if i not in TRIGGERS]
