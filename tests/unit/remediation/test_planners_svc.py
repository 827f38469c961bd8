"""Planner fixtures of the service incidents (svc): crashed and high-memory, edge cases."""

from __future__ import annotations

from halswarm.core.remediation.planners import GiB, plan

ACTIVE = {"load_state": "loaded", "active_state": "active", "sub_state": "running", "n_restarts": 0}
RESTARTING = {"load_state": "loaded", "active_state": "activating", "sub_state": "auto-restart", "n_restarts": 2}
STOPPED = {"load_state": "loaded", "active_state": "inactive", "sub_state": "dead", "n_restarts": 0}


def names(p) -> list[str]:
    return [a.name for a in p.actions]


def test_auto_restart_wait_is_a_crash() -> None:
    p = plan("agent-crashed", {"agent": RESTARTING, "config_valid": True})
    assert p.decision == "present" and names(p) == ["restart_service"]


def test_journal_errors_are_reported_not_acted_on() -> None:
    p = plan("supervisor-crashed", {"supervisor": STOPPED, "config_valid": True,
                                    "journal_errors": ["a", "x: Failed to start hal-supervisor.service"]})
    assert names(p) == ["restart_service"]
    assert any("2 recent journal error(s)" in r and "Failed to start" in r for r in p.reasons)


def test_invalid_config_restores_the_planned_backup_before_restart() -> None:
    p = plan("agent-crashed", {"agent": STOPPED, "config_valid": False,
                               "config_backup": "/etc/hal-o-swarm/backups/agent.config.json.1.0.20260101T000000Z"})
    assert names(p) == ["restore_config", "restart_service"]
    assert p.actions[0].params["backup"].endswith("20260101T000000Z")


def test_unknown_config_validity_still_restarts_without_restore() -> None:
    p = plan("supervisor-crashed", {"supervisor": STOPPED, "config_valid": None})
    assert names(p) == ["restart_service"] and any("validity unknown" in r for r in p.reasons)


def test_running_with_few_restarts_is_not_present_even_with_invalid_config() -> None:
    p = plan("supervisor-crashed", {"supervisor": ACTIVE | {"n_restarts": 3}, "config_valid": False})
    assert p.decision == "not_present"


def test_configured_threshold_overrides_the_80_percent_rule() -> None:
    facts = {"agent": ACTIVE | {"memory_current": 50 * 2**20, "memory_max": 4 * GiB}}
    assert plan("agent-high-memory", facts).decision == "not_present"
    p = plan("agent-high-memory", facts | {"memory_threshold": 2**20})
    assert p.decision == "present" and "configured threshold" in p.reasons[0]
    new = p.actions[0].params["memory_max"]
    assert new == 8 * GiB and names(p) == ["set_memory_max", "daemon_reload"]


def test_memory_threshold_zero_or_garbage_means_the_runbook_rule() -> None:
    facts = {"supervisor": ACTIVE | {"memory_current": GiB, "memory_max": 2 * GiB}}
    for t in (0, "", None, "x"):
        assert plan("supervisor-high-memory", facts | {"memory_threshold": t}).decision == "not_present"


def test_new_limit_covers_usage_above_the_old_limit() -> None:
    facts = {"supervisor": ACTIVE | {"memory_current": 10 * GiB, "memory_max": 2 * GiB}}
    p = plan("supervisor-high-memory", facts)
    new = next(a for a in p.actions if a.name == "set_memory_max").params["memory_max"]
    assert new > 10 * GiB / 0.8 and names(p)[-1] == "restart_service"


def test_stopped_service_is_not_high_memory_even_without_memory_facts() -> None:
    for inc, role in (("supervisor-high-memory", "supervisor"), ("agent-high-memory", "agent")):
        p = plan(inc, {role: STOPPED | {"memory_current": None}})
        assert p.decision == "not_present" and "crashed" in p.reasons[0]


def test_running_service_without_memory_measure_is_unknown() -> None:
    assert plan("agent-high-memory", {"agent": ACTIVE | {"memory_current": None}}).decision == "unknown"


def test_old_events_are_archived_first_on_the_supervisor() -> None:
    facts = {"supervisor": ACTIVE | {"memory_current": 2 * GiB, "memory_max": 2 * GiB}, "old_events": 5}
    assert names(plan("supervisor-high-memory", facts)) == [
        "archive_events", "set_memory_max", "daemon_reload", "restart_service"]
