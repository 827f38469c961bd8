"""`backup.*`, typed once from the config: where the backup timers write their status files."""

from __future__ import annotations

import os
from dataclasses import dataclass

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig


@dataclass(frozen=True)
class BackupSettings:
    dir: str | None = None  # resolved, absolute; None: no backup metrics
    check_interval_sec: float = 60.0

    def __post_init__(self) -> None:
        if self.dir is not None and (not isinstance(self.dir, str) or not os.path.isabs(self.dir)
                                     or "\x00" in self.dir):
            raise ConfigError.single("backup.dir", f"must be an absolute path (got {self.dir!r})")
        value = self.check_interval_sec
        if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 86400:
            raise ConfigError.single("backup.check_interval_sec", f"must be a number from 1 to 86400 (got {value!r})")

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> BackupSettings:
        section = config.section("backup") or {}
        if not isinstance(section, dict):
            raise ConfigError.single("backup", "must be an object")
        raw = section.get("dir")
        if raw is not None and (not isinstance(raw, str) or not os.path.isabs(raw)):
            raise ConfigError.single("backup.dir", f"must be an absolute path (got {raw!r})")
        # Resolved once: symlinks in the configured path are followed here, never below it.
        return cls(os.path.realpath(raw) if raw else None, section.get("check_interval_sec", 60.0))
