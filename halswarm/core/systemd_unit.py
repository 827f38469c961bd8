"""Which systemd service a process runs as, and its restart count, from text (no I/O here).

The runbook's "monitor the systemd restart count" reads `NRestarts`; each daemon reports its own unit's
figure. A process started by hand (tests, a shell) has no unit of its own: no figure, never a made-up 0.
"""

from __future__ import annotations

import re

_UNIT = re.compile(r"[A-Za-z0-9:_.\\@-]{1,200}\.service")


def unit_from_cgroup(proc_self_cgroup: str) -> str | None:
    """The `.service` unit of this process from /proc/self/cgroup (v2 line first, else v1 systemd line)."""
    v2 = named = None
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif parts[1] == "name=systemd":
            named = parts[2]
    for path in (v2, named):
        if path:
            last = path.rstrip("/").rsplit("/", 1)[-1]
            if _UNIT.fullmatch(last):
                return last
    return None


def parse_show(text: str, pid: int) -> int | None:
    """`NRestarts` from `systemctl show -p MainPID -p NRestarts` output, only when the unit's main process is
    `pid` (a child of some service, like a test runner, must not report that service's count as its own)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    if fields.get("MainPID") != str(pid):
        return None
    raw = fields.get("NRestarts", "")
    return int(raw) if raw.isdigit() else None
