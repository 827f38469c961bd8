"""This daemon's systemd `NRestarts` (read once: the count cannot change while this process lives,
since a restart of the unit replaces the process)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from halswarm.core.systemd_unit import parse_show, unit_from_cgroup

log = logging.getLogger(__name__)

SYSTEMCTL_TIMEOUT_SEC = 5.0


def read_own_nrestarts(proc: Path = Path("/proc/self")) -> int | None:
    """Blocking (runs `systemctl`): call it off the event loop. None when not the main process of a unit."""
    try:
        unit = unit_from_cgroup((proc / "cgroup").read_text())
    except OSError:
        return None
    systemctl = shutil.which("systemctl")
    if unit is None or systemctl is None:
        return None
    try:
        # An argument list, no shell; the unit name was checked against systemd's unit-name characters.
        done = subprocess.run([systemctl, "show", "-p", "MainPID", "-p", "NRestarts", "--", unit],
                              capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_SEC, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("systemctl show %s failed: %s", unit, exc)
        return None
    if done.returncode != 0:
        return None
    return parse_show(done.stdout, os.getpid())
