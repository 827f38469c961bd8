"""Remediation counters and the time to repair (features/remediations/metrics.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from halswarm.core.alerts import alert_time
from halswarm.supervisor.features.remediations.metrics import MAX_AGE_SECONDS, RemediationMetrics

T0 = 1_800_000_000.0


def iso(t: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def report(incident: str, status: str, hosts: list[str], started: float, finished: float) -> dict[str, Any]:
    return {"incident": incident, "status": status, "hosts": hosts, "started_at": iso(started),
            "finished_at": iso(finished), "duration_s": finished - started, "check": status == "check"}


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_every_series_exists_from_the_start() -> None:
    reg = CollectorRegistry()
    RemediationMetrics(reg)
    assert value(reg, "hal_o_swarm_remediations_total", incident="agent-crashed", outcome="verified") == 0
    assert value(reg, "hal_o_swarm_remediations_total", incident="supervisor-db-corruption", outcome="escalated") == 0
    assert value(reg, "hal_o_swarm_remediation_duration_seconds_count", incident="agent-crashed") == 0


def test_verified_after_an_alert_measures_from_its_start_and_only_once() -> None:
    reg, clock = CollectorRegistry(), Clock()
    m = RemediationMetrics(reg, clock)
    m.detected("agent-crashed", "worker-1", T0 - 100)
    m.detected("agent-crashed", "worker-1", T0 - 50)  # a repeat of the same alert keeps the earliest start
    m.detected("agent-crashed", "worker-2", T0 - 10)  # another node: its own detection
    clock.t = T0 + 20
    assert m.recorded(report("agent-crashed", "verified", ["worker-1"], T0, T0 + 20)) == 120
    assert value(reg, "hal_o_swarm_remediations_total", incident="agent-crashed", outcome="verified") == 1
    assert value(reg, "hal_o_swarm_remediation_duration_seconds_sum", incident="agent-crashed") == 120
    # The detection was used up: the next verified run on worker-1 is measured by its own duration.
    assert m.recorded(report("agent-crashed", "verified", ["worker-1"], T0 + 30, T0 + 35)) == 5
    assert m.recorded(report("agent-crashed", "verified", ["worker-2"], T0, T0 + 15)) == 25


def test_failures_count_but_do_not_close_the_detection() -> None:
    reg, clock = CollectorRegistry(), Clock()
    m = RemediationMetrics(reg, clock)
    m.detected("agent-crashed", "w", T0)
    assert m.recorded(report("agent-crashed", "failed", ["w"], T0 + 1, T0 + 2)) is None
    assert m.recorded(report("agent-crashed", "check", ["w"], T0 + 3, T0 + 4)) is None
    assert value(reg, "hal_o_swarm_remediations_total", incident="agent-crashed", outcome="failed") == 1
    assert value(reg, "hal_o_swarm_remediation_duration_seconds_count", incident="agent-crashed") == 0
    assert m.recorded(report("agent-crashed", "verified", ["w"], T0 + 5, T0 + 60)) == 60


def test_supervisor_incidents_match_whatever_host_the_report_names() -> None:
    m = RemediationMetrics(CollectorRegistry(), Clock())
    m.detected("supervisor-high-memory", "hal_supervisors", T0 - 30)
    assert m.recorded(report("supervisor-high-memory", "verified", ["sup-1"], T0, T0 + 10)) == 40


def test_resolved_alert_is_replaced_by_the_next_firing_one() -> None:
    m = RemediationMetrics(CollectorRegistry(), Clock())
    m.detected("agent-crashed", "w", T0 - 500)
    m.resolved("agent-crashed", "w")
    m.detected("agent-crashed", "w", T0 - 10)  # a new episode, not the old start
    assert m.recorded(report("agent-crashed", "verified", ["w"], T0, T0 + 5)) == 15


def test_resolved_before_the_report_still_measures_from_the_alert() -> None:
    m = RemediationMetrics(CollectorRegistry(), Clock())
    m.detected("agent-crashed", "w", T0 - 10)
    m.resolved("agent-crashed", "w")
    assert m.recorded(report("agent-crashed", "verified", ["w"], T0, T0 + 5)) == 15


def test_stale_future_and_unknown_inputs() -> None:
    reg, clock = CollectorRegistry(), Clock()
    m = RemediationMetrics(reg, clock)
    m.detected("agent-crashed", "w", T0 + 3600)  # from the future: counted from now
    clock.t = T0 + 10
    assert m.recorded(report("agent-crashed", "verified", ["w"], T0 + 5, T0 + 10)) == 10
    m.detected("agent-crashed", "w", T0)
    clock.t = T0 + MAX_AGE_SECONDS + 1  # forgotten: the run's own duration
    assert m.recorded(report("agent-crashed", "verified", ["w"], clock.t - 3, clock.t)) == 3
    assert m.recorded({"incident": "nope", "status": "verified"}) is None
    assert m.recorded({"incident": "agent-crashed", "status": "weird"}) is None
    assert value(reg, "hal_o_swarm_remediations_total", incident="agent-crashed", outcome="verified") == 2


def test_alert_time() -> None:
    assert alert_time("2026-12-07T07:50:00.123456789Z") == alert_time("2026-12-07T07:50:00.123456Z")
    assert alert_time("2026-12-07T08:50:00+01:00") == alert_time("2026-12-07T07:50:00Z")
    for bad in ("0001-01-01T00:00:00Z", "2026-12-07T07:50:00", "yesterday", "", None):
        assert alert_time(bad) is None
