"""`retention.*` (or the Go key `security.audit.retention_days`), typed once by the config loader; the
retention job reads them from here."""

from __future__ import annotations

from dataclasses import dataclass

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig


@dataclass(frozen=True)
class RetentionSettings:
    events_days: int = 30
    audit_days: int = 90
    batch_rows: int = 2000  # most rows one writer job deletes
    batch_ms: float = 30.0  # a step stops deleting once it has worked this long (checked every 250 rows)
    pause_ms: float = 5.0  # between two steps: the writer is the ingest's
    vacuum_pages: int = 256  # pages one incremental-vacuum step gives back (1 MiB at 4 KiB pages)

    def __post_init__(self) -> None:
        for key, value in (("events_days", self.events_days), ("audit_days", self.audit_days),
                           ("batch_rows", self.batch_rows), ("vacuum_pages", self.vacuum_pages)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError.single(f"retention.{key}", f"must be an integer >= 1 (got {value!r})")
        for key, num in (("batch_ms", self.batch_ms), ("pause_ms", self.pause_ms)):
            if isinstance(num, bool) or not isinstance(num, int | float) or num < 0 or (key == "batch_ms" and num == 0):
                raise ConfigError.single(f"retention.{key}", f"must be a number > 0 (got {num!r})")

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> RetentionSettings:
        return cls(config.events_retention_days, config.audit_retention_days, config.retention_batch_rows,
                   config.retention_batch_ms)
