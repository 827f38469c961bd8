"""Remediation counters and time to repair (MTTR) for `/metrics`.

- ``hal_o_swarm_remediations_total{incident,outcome}``: every report the supervisor stores (POSTed by
  ``halctl remediate`` or produced by the auto engine), by its status; every incident x status series
  exists from the start, so ``increase()`` sees the first one.
- ``hal_o_swarm_remediation_duration_seconds{incident}``: for each ``verified`` report, the time from the
  detection to the verified end of the run (the report's ``finished_at``). The detection is the earliest
  open one for that incident and host: a firing alert's ``startsAt`` (Alertmanager, ``POST /api/v1/alerts``)
  or the moment a built-in trigger fired. Without one (an operator ran halctl on their own) it is the run
  itself, ``finished_at - started_at``.

Detections are kept in memory (a restart forgets them; the report's own duration is used then), at most
`MAX_OPEN`, each for at most `MAX_AGE_SECONDS`. A resolved alert leaves its detection for a run that is
still going, but the next firing alert of that incident and host starts a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from halswarm.core.alerts import alert_time
from halswarm.core.remediation.catalog import BY_ID, IDS
from halswarm.core.remediation.report import STATUSES

P = "hal_o_swarm_"
# Seconds: the runbook's response times are 5 min, 30 min and 2 h; a run itself takes seconds to minutes.
MTTR_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
MAX_OPEN = 1000
MAX_AGE_SECONDS = 86400.0
AGENTS_GROUP = "hal_agents"
ANY_HOST = "*"  # supervisor-side incidents: one detection per incident (the report names the real host)


def host_key(incident: str, host: str | None) -> str:
    """Agent incidents are tracked per node; supervisor incidents per incident."""
    inc = BY_ID.get(incident)
    if inc is not None and inc.hosts == AGENTS_GROUP and host:
        return host
    return ANY_HOST


@dataclass
class _Open:
    at: float
    resolved: bool = False


class RemediationMetrics:
    """The two series above, registered in the supervisor's registry, and the open detections."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.total = Counter(P + "remediations_total", "Remediation reports stored, by incident and outcome "
                             "(the report status)", ["incident", "outcome"], registry=registry)
        self.duration = Histogram(P + "remediation_duration_seconds", "Time from the detection (alert startsAt "
                                  "or built-in trigger) to a verified remediation", ["incident"],
                                  buckets=MTTR_BUCKETS, registry=registry)
        for incident in IDS:
            self.duration.labels(incident)
            for outcome in STATUSES:
                self.total.labels(incident, outcome)
        self._open: dict[tuple[str, str], _Open] = {}

    def detected(self, incident: str, host: str | None, at: float | None) -> None:
        """A firing alert or a trigger saw `incident` on `host` at `at` (now when unknown or in the future)."""
        now = self.clock()
        self._prune(now)
        at = now if at is None or at > now else at
        key = (incident, host_key(incident, host))
        cur = self._open.get(key)
        if cur is None or cur.resolved or at < cur.at:
            if cur is None and len(self._open) >= MAX_OPEN:
                return
            self._open[key] = _Open(at)

    def resolved(self, incident: str, host: str | None) -> None:
        cur = self._open.get((incident, host_key(incident, host)))
        if cur is not None:
            cur.resolved = True

    def recorded(self, report: Mapping[str, Any], hosts: Iterable[str] = ()) -> float | None:
        """Count a stored report; for a verified one observe (and return) the time to repair."""
        incident, status = str(report.get("incident", "")), str(report.get("status", ""))
        if incident not in BY_ID or status not in STATUSES:
            return None
        self.total.labels(incident, status).inc()
        if status != "verified" or report.get("check"):
            return None
        now = self.clock()
        self._prune(now)
        keys = {(incident, host_key(incident, h)) for h in [*hosts, *(report.get("hosts") or [])]
                if isinstance(h, str)} | {(incident, ANY_HOST)}
        opened = [self._open.pop(k).at for k in keys if k in self._open]
        end = alert_time(report.get("finished_at")) or now
        start = min(opened) if opened else alert_time(report.get("started_at"))
        duration = float(report.get("duration_s") or 0.0) if start is None else max(0.0, end - start)
        self.duration.labels(incident).observe(duration)
        return duration

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._open.items() if now - v.at > MAX_AGE_SECONDS]:
            del self._open[key]
