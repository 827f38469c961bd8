"""What the env feature takes from the supervisor config, parsed once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from halswarm.config.supervisor import SupervisorConfig

TEMPLATE_DIR = "templates"
APPROVALS_DIR = "env-approvals"
WATCH_INTERVAL_S = 1.0  # how often the watcher looks for (re-)registered nodes
RECHECK_INTERVAL_S = 1800.0  # every online node is checked again this often


@dataclass(frozen=True)
class EnvSettings:
    # AGENT.md templates a manifest names by file: `templates/` next to the config file (or the cwd)
    template_dir: Path
    # `remediation.inventory` (relative to the config file's directory): where approved items run
    inventory: str | None
    # ansible-runner's plays and artifacts of approval runs: `env-approvals/` next to the database
    approvals_dir: Path
    watch_interval: float = WATCH_INTERVAL_S
    recheck_interval: float = RECHECK_INTERVAL_S

    @classmethod
    def from_config(cls, cfg: SupervisorConfig) -> EnvSettings:
        base = os.path.dirname(cfg.source_path) if cfg.source_path else None
        inventory = cfg.remediation_inventory
        if inventory and not os.path.isabs(inventory) and cfg.source_path:
            inventory = os.path.join(os.path.dirname(cfg.source_path), inventory)
        db = cfg.database_path
        state = Path(db).parent if db and db != ":memory:" else Path.cwd()
        return cls(template_dir=Path(base or os.getcwd()) / TEMPLATE_DIR, inventory=inventory or None,
                   approvals_dir=state / APPROVALS_DIR)
