"""The process's memory against its systemd `MemoryMax` (the cgroup's `memory.max`): parsing and the rule.

The high-memory remediations compare MemoryCurrent with MemoryMax; the daemons warn by the same
figure (their cgroup's limit) so `journalctl -u hal-supervisor | grep -i memory` finds the warning.
"""

from __future__ import annotations

UNLIMITED_V1 = 1 << 62  # cgroup v1 reports "no limit" as a huge page-rounded number


def cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """(cgroup v2 path, cgroup v1 memory-controller path) from the text of /proc/self/cgroup."""
    v2 = v1 = None
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def parse_limit(text: str) -> int | None:
    """Bytes from memory.max / memory.limit_in_bytes; None for "max", unlimited or unreadable."""
    value = text.strip()
    if not value or value == "max":
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return None if n <= 0 or n >= UNLIMITED_V1 else n


def rss_from_status(status: str) -> int | None:
    """VmRSS in bytes from the text of /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            try:
                return int(fields[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def over_share(rss: int, limit: int | None, percent: int) -> bool:
    return bool(limit) and rss * 100 >= limit * percent  # type: ignore[operator]


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def warning_text(rss: int, limit: int, percent: int) -> str:
    share = rss * 100 / limit
    return (f"memory: RSS {_gib(rss)} ({rss} bytes) is {share:.0f}% of MemoryMax {_gib(limit)} ({limit} bytes), "
            f"above the {percent}% warning share (log.memory_warn_percent)")
