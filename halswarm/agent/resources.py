"""Node resource sample for `register` and `heartbeat` (SPEC 4: exactly these five keys)."""

from __future__ import annotations

import logging

import psutil

log = logging.getLogger(__name__)

RESOURCE_KEYS = ("cpu_percent", "ram_used_mb", "ram_total_mb", "disk_used_gb", "disk_total_gb")
_MIB = 1024**2
_GIB = 1024**3


def prime_cpu() -> None:
    """Start psutil's CPU window: ``cpu_percent(interval=None)`` reports usage since the last call."""
    psutil.cpu_percent(interval=None)


def sample_resources(disk_path: str = "/") -> dict[str, float]:
    """Return the SPEC resource dict. Never blocks: CPU is measured since the previous call.

    RAM "used" is ``total - available`` (what an operator means by used; psutil's own ``used``
    leaves out reclaimable caches on some kernels and includes them on others). A missing
    ``disk_path`` falls back to ``/`` instead of failing the heartbeat.
    """
    vm = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(disk_path)
    except OSError as exc:
        log.debug("disk_usage(%s) failed (%s); using /", disk_path, exc)
        disk = psutil.disk_usage("/")
    return {
        "cpu_percent": round(float(psutil.cpu_percent(interval=None)), 1),
        "ram_used_mb": round((vm.total - vm.available) / _MIB, 1),
        "ram_total_mb": round(vm.total / _MIB, 1),
        "disk_used_gb": round(disk.used / _GIB, 2),
        "disk_total_gb": round(disk.total / _GIB, 2),
    }


prime_cpu()
