"""A periodic check of the daemon's RSS against its cgroup `memory.max` (systemd MemoryMax)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from halswarm.core.memory_limit import cgroup_paths, over_share, parse_limit, rss_from_status, warning_text

log = logging.getLogger("halswarm.memory")

CHECK_INTERVAL = 30.0
REPEAT_EVERY = 600.0  # while above the share, say it again at most this often


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_memory_max(cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self")) -> int | None:
    """This process's cgroup memory limit in bytes (v2 memory.max, else v1), None when unlimited/unknown."""
    text = _read(proc / "cgroup")
    if text is None:
        return None
    v2, v1 = cgroup_paths(text)
    # In a container with its own cgroup namespace the listed path may not exist below the mount: the
    # controller's root directory is then this process's cgroup.
    candidates = []
    if v2 is not None:
        candidates += [cgroup_root / v2.lstrip("/") / "memory.max", cgroup_root / "memory.max"]
    if v1 is not None:
        candidates += [cgroup_root / "memory" / v1.lstrip("/") / "memory.limit_in_bytes",
                       cgroup_root / "memory" / "memory.limit_in_bytes"]
    for path in candidates:
        raw = _read(path)
        if raw is not None:
            return parse_limit(raw)
    return None


def read_rss(proc: Path = Path("/proc/self")) -> int | None:
    text = _read(proc / "status")
    return rss_from_status(text) if text is not None else None


class MemoryWatch:
    """Logs a warning naming memory (with the figures) when RSS passes `percent` of the limit, again every
    REPEAT_EVERY seconds while it stays there, and an info line once it is back below."""

    def __init__(self, percent: int, *, limit_fn: Callable[[], int | None] = read_memory_max,
                 rss_fn: Callable[[], int | None] = read_rss, interval: float = CHECK_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.percent = percent
        self.limit_fn, self.rss_fn, self.interval, self.clock = limit_fn, rss_fn, interval, clock
        self._last_warn: float | None = None
        self._task: asyncio.Task[None] | None = None

    def check(self) -> bool:
        """One check (cheap procfs/cgroupfs reads); True when above the share."""
        limit, rss = self.limit_fn(), self.rss_fn()
        if rss is None or limit is None:
            return False
        if over_share(rss, limit, self.percent):
            now = self.clock()
            if self._last_warn is None or now - self._last_warn >= REPEAT_EVERY:
                log.warning(warning_text(rss, limit, self.percent))
                self._last_warn = now
            return True
        if self._last_warn is not None:
            log.info("memory: RSS back to %d%% of MemoryMax (%d of %d bytes)", rss * 100 // limit, rss, limit)
            self._last_warn = None
        return False

    async def run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # never let the watch take the daemon down
                log.exception("memory check failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="memory-watch")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
