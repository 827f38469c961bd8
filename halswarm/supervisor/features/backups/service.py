"""Backup metrics and events: every `backup.check_interval_sec` the two status files of the backup directory
(`backup-status.json` from the backup timer, `restore-test.json` from the restore-test timer) are read in
a thread, parsed strictly, and kept; a Prometheus collector exports the kept values at scrape time (no
I/O in the scrape), and a size anomaly or a failed restore test is emitted once per backup name as a
routed event (`backup.anomaly`, `backup.restore_test_failed`)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from halswarm.core.backup_status import (
    MAX_FILE_BYTES,
    RESULT_FILE,
    STATUS_FILE,
    BackupStatus,
    BadStatusFile,
    RestoreTest,
    due_events,
    parse_backup_status,
    parse_restore_test,
)
from halswarm.supervisor.features.backups.settings import BackupSettings
from halswarm.supervisor.runtime.periodic import PeriodicEngine

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], object]


def read_bounded(directory: str, name: str) -> bytes | None:
    """The file `name` directly in `directory` (no symlink followed, regular files only, at most
    MAX_FILE_BYTES + 1 bytes read); None when it does not exist. Blocking."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            raise BadStatusFile(f"{name}: is a symbolic link") from None
        raise BadStatusFile(f"{name}: cannot read ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadStatusFile(f"{name}: not a regular file")
        return os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadStatusFile(f"{name}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)


@dataclass
class Snapshot:
    status: BackupStatus | None = None
    result: RestoreTest | None = None
    problems: list[str] = field(default_factory=list)


def read_snapshot(directory: str) -> Snapshot:
    """Both files of the backup directory, parsed; a bad file becomes a problem, never an exception."""
    snap = Snapshot()
    for name, parse, slot in ((STATUS_FILE, parse_backup_status, "status"),
                              (RESULT_FILE, parse_restore_test, "result")):
        try:
            raw = read_bounded(directory, name)
            if raw is not None:
                setattr(snap, slot, parse(raw))
        except BadStatusFile as exc:
            snap.problems.append(f"{directory}/{exc}")
    return snap


class BackupWatch(PeriodicEngine):
    """Reads the backup directory's status files periodically (off the event loop) and emits events."""

    def __init__(self, settings: BackupSettings, emit: Emit) -> None:
        super().__init__()
        self.settings = settings
        self.emit = emit
        self.snapshot = Snapshot()
        self._sent: set[tuple[str, str]] = set()
        self._logged: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.settings.dir is not None

    async def refresh(self) -> Snapshot:
        assert self.settings.dir is not None
        snap = await asyncio.to_thread(read_snapshot, self.settings.dir)
        for problem in snap.problems:
            if problem not in self._logged:  # a bad file is said once, not every interval
                log.warning("backup metrics: %s", problem)
        self._logged = set(snap.problems)
        self.snapshot = snap
        for ev_type, key, data in due_events(snap.status, snap.result, self._sent):
            self._sent.add((ev_type, key))
            self.emit(ev_type, data)
        return snap

    async def check(self) -> Snapshot:
        return await self.refresh()

    async def start(self) -> None:
        """Read once now (the metrics are there from the first scrape), then every check interval."""
        if not self.enabled:
            return
        try:
            await self.refresh()
        except Exception as exc:  # keep watching: the next turn may read the files again
            log.warning("backup metrics: reading %s failed: %s", self.settings.dir, exc)
        self._start_loop(self.settings.check_interval_sec, "backup-watch", log)

    async def stop(self) -> None:
        await self._stop_loop(0)


class BackupCollector(Collector):
    """The kept snapshot as gauges; a file not (validly) there exports none of its series."""

    def __init__(self, watch: BackupWatch) -> None:
        self.watch = watch

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.watch.snapshot
        if snap.status is not None:
            s = snap.status
            yield GaugeMetricFamily("hal_backup_last_success_timestamp_seconds",
                                    "Unix time the newest database backup was written", value=s.timestamp)
            yield GaugeMetricFamily("hal_backup_size_bytes", "Size of the newest database backup", value=s.size)
            yield GaugeMetricFamily("hal_backup_size_anomaly",
                                    "1 when the newest backup's size is far from the median of the previous ones",
                                    value=1 if s.anomaly else 0)
        if snap.result is not None:
            r = snap.result
            yield GaugeMetricFamily("hal_restore_test_last_timestamp_seconds",
                                    "Unix time of the last backup restore test", value=r.timestamp)
            yield GaugeMetricFamily("hal_restore_test_success", "1 when the last backup restore test passed",
                                    value=1 if r.ok else 0)


def register(watch: BackupWatch, registry: CollectorRegistry) -> BackupCollector | None:
    """Register the collector when a backup directory is configured (else no backup metrics at all)."""
    if not watch.enabled:
        return None
    collector = BackupCollector(watch)
    registry.register(collector)
    return collector
