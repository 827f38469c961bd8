"""Fixture tests of the pure planners: facts in, plan out, for every incident (present and not present)."""

from __future__ import annotations

from typing import Any

import pytest

from halswarm.core.remediation import catalog, planners
from halswarm.core.remediation.planners import GiB, plan

ACTIVE = {"load_state": "loaded", "active_state": "active", "sub_state": "running", "n_restarts": 0}
DEAD = {"load_state": "loaded", "active_state": "failed", "sub_state": "failed", "n_restarts": 1}


def names(p: planners.Plan) -> list[str]:
    return [a.name for a in p.actions]


# (incident, healthy facts, faulty facts, expected action names when present)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("supervisor-crashed", {"supervisor": ACTIVE}, {"supervisor": DEAD, "config_valid": True},
     ["restart_service"]),
    ("agent-crashed", {"agent": ACTIVE}, {"agent": DEAD}, ["restart_service"]),
    ("supervisor-high-memory",
     {"supervisor": ACTIVE | {"memory_current": GiB, "memory_max": 2 * GiB}},
     {"supervisor": ACTIVE | {"memory_current": 2 * GiB, "memory_max": 2 * GiB}, "old_events": 10},
     ["archive_events", "set_memory_max", "daemon_reload", "restart_service"]),
    ("agent-high-memory",
     {"agent": ACTIVE | {"memory_current": GiB, "memory_max": None}},
     {"agent": ACTIVE | {"memory_current": 5 * GiB, "memory_max": None}, "idle_sessions": ["s1"]},
     ["kill_idle_sessions", "set_memory_max", "daemon_reload"]),
    ("supervisor-db-corruption", {"db": {"integrity": "ok"}},
     {"db": {"integrity": "*** in database main ***"}, "db_backup": "/b/x.db"},
     ["stop_service", "keep_corrupt_copy", "recover_db", "install_recovered", "restore_db", "merge_recovered",
      "start_service"]),
    ("agent-cannot-connect", {"agent": ACTIVE, "node_online": True},
     {"agent": ACTIVE, "node_online": False, "supervisor": ACTIVE, "token_match": False},
     ["sync_token", "restart_service"]),
    ("supervisor-unreachable", {"supervisor": ACTIVE, "offline_agents": [], "total_agents": 2},
     {"supervisor": ACTIVE, "offline_agents": ["a1", "a2"], "total_agents": 2, "firewall_blocks": True,
      "port_reachable": False, "listening": True},
     ["allow_port", "restart_agents"]),
    ("high-latency", {"api_latency_ms": 40, "query_ms": 3},
     {"api_latency_ms": 12000, "query_ms": 9000, "old_events": 0},
     ["backup_db", "stop_service", "optimize_db", "start_service"]),
    ("lost-session-data",
     {"live_counts": {"sessions": 5, "events": 100}, "backup_counts": {"sessions": 5, "events": 90},
      "missing_rows": 0},
     {"live_counts": {"sessions": 5, "events": 10}, "backup_counts": {"sessions": 5, "events": 90},
      "missing_rows": 80, "db_backup": "/b/x.db"},
     ["stop_service", "snapshot_db", "merge_from_backup", "start_service"]),
    ("cost-data-discrepancy",
     {"providers_configured": ["anthropic"], "poll_interval_s": 300, "last_update_age_s": 100},
     {"providers_configured": ["anthropic"], "poll_interval_s": 300, "last_update_age_s": 5000,
      "missing_dates": ["2026-02-01"]},
     ["force_repoll", "backfill"]),
    ("credential-drift", {"credential_sync": "in_sync"},
     {"credential_sync": "drift_detected", "node_id": "n1", "credentials_configured": True},
     ["push_credentials"]),
    ("manual-auth-required",
     {"auth_states": {"claude_code": {"status": "authenticated"}}},
     {"auth_states": {"claude_code": {"status": "unauthenticated"}}, "node_id": "n1"}, []),
]


def test_every_catalog_incident_has_a_planner() -> None:
    assert set(planners.PLANNERS) == set(catalog.IDS)
    assert len(catalog.IDS) == 13


@pytest.mark.parametrize(("incident", "healthy", "faulty", "expected"), CASES, ids=[c[0] for c in CASES])
def test_present_and_not_present(incident: str, healthy: dict[str, Any], faulty: dict[str, Any],
                                 expected: list[str]) -> None:
    ok = plan(incident, healthy)
    assert ok.decision == planners.NOT_PRESENT, ok.reasons
    assert ok.actions == [] and not ok.present
    bad = plan(incident, faulty)
    assert bad.present, bad.reasons
    assert names(bad) == expected
    assert bad.reasons
    d = bad.to_dict()
    assert d["incident"] == incident and d["present"] is True


def test_unknown_facts_are_not_acted_on() -> None:
    for incident in catalog.IDS:
        if incident == "collect-diagnostics":
            continue
        p = plan(incident, {})
        assert p.decision == planners.UNKNOWN and p.actions == [], incident


def test_crash_restores_valid_config_backup_first() -> None:
    p = plan("supervisor-crashed", {"supervisor": DEAD, "config_valid": False, "config_backup": "/etc/x.bak"})
    assert names(p) == ["restore_config", "restart_service"]
    assert p.actions[0].params == {"backup": "/etc/x.bak"}


def test_crash_with_invalid_config_and_no_backup_escalates() -> None:
    p = plan("agent-crashed", {"agent": DEAD, "config_valid": False, "config_backup": None})
    assert p.decision == planners.ESCALATE and p.actions == []


def test_crash_loop_while_active_is_present() -> None:
    p = plan("supervisor-crashed", {"supervisor": ACTIVE | {"n_restarts": 7}})
    assert p.present and "crash loop" in " ".join(p.reasons)


def test_unit_not_installed_is_not_present() -> None:
    p = plan("supervisor-crashed", {"supervisor": {"load_state": "not-found", "active_state": "inactive"}})
    assert p.decision == planners.NOT_PRESENT and "not installed" in p.reasons[0]


def test_memory_limit_raised_and_capped() -> None:
    facts = {"supervisor": ACTIVE | {"memory_current": 2 * GiB, "memory_max": 2 * GiB}, "memory_cap": 3 * GiB}
    p = plan("supervisor-high-memory", facts)
    assert [a.params["memory_max"] for a in p.actions if a.name == "set_memory_max"] == [3 * GiB]


def test_db_corruption_without_backup_has_no_restore_step() -> None:
    p = plan("supervisor-db-corruption", {"db": {"integrity": "malformed"}})
    assert "restore_db" not in names(p) and p.present


def test_agent_not_running_is_not_cannot_connect() -> None:
    p = plan("agent-cannot-connect", {"agent": DEAD, "node_online": False})
    assert p.decision == planners.NOT_PRESENT and "agent-crashed" in p.reasons[0]


def test_supervisor_down_is_restarted_before_agent() -> None:
    p = plan("agent-cannot-connect", {"agent": ACTIVE, "node_online": False, "supervisor": DEAD,
                                      "port_reachable": False, "firewall_blocks": True})
    assert [(a.name, a.target) for a in p.actions] == [
        ("restart_service", "supervisor"), ("allow_port", "supervisor"), ("restart_service", "agent")]


def test_partial_outage_is_not_supervisor_unreachable() -> None:
    p = plan("supervisor-unreachable", {"supervisor": ACTIVE, "offline_agents": ["a1"], "total_agents": 3,
                                        "port_reachable": True})
    assert p.decision == planners.NOT_PRESENT


def test_manual_auth_never_pretends_to_fix() -> None:
    p = plan("manual-auth-required", {"auth_states": {"claude_code": {"status": "unauthenticated"},
                                                      "codex": {"status": "authenticated"}}, "node_id": "n1"})
    assert p.decision == planners.MANUAL and p.actions == []
    assert any("claude auth login" in g for g in p.guidance)
    assert not any("codex" in g for g in p.guidance)


def test_drift_without_configured_credentials_is_guidance_only() -> None:
    p = plan("credential-drift", {"credential_sync": "drift_detected", "node_id": "n1"})
    assert p.decision == planners.MANUAL and p.actions == []
    assert any("informational" in g for g in p.guidance)


def test_no_cost_provider_is_not_present() -> None:
    assert plan("cost-data-discrepancy", {"providers_configured": []}).decision == planners.NOT_PRESENT


def test_lost_data_without_backup_is_not_present() -> None:
    p = plan("lost-session-data", {"live_counts": {"sessions": 0, "events": 0}, "backup_counts": None})
    assert p.decision == planners.NOT_PRESENT


def test_collect_diagnostics_always_plans_a_bundle() -> None:
    p = plan("collect-diagnostics", {"output": "/tmp/x.tgz"})
    assert names(p) == ["collect", "bundle"]


def test_catalog_lookup_and_severity() -> None:
    assert catalog.get("supervisor_crashed").severity == "Critical"
    assert catalog.get("supervisor-crashed").response_time == "< 5 min"
    assert catalog.get("agent-crashed").response_time == "< 30 min"
    assert catalog.get("credential-drift").severity == "Low"
    assert catalog.get("supervisor-db-corruption").fqcn == "halswarm.ops.remediate_supervisor_db_corruption"
    with pytest.raises(catalog.UnknownIncident):
        catalog.get("nope")
    rows = catalog.listing()
    assert [r["id"] for r in rows] == list(catalog.IDS)
    assert all(r["response_time"] for r in rows)


AGENT_HOT = {"agent": ACTIVE | {"memory_current": 5 * GiB, "memory_max": None}}


def test_agent_high_memory_kills_idle_sessions_first_and_spares_waiting_and_busy_ones() -> None:
    """The runbook's short-term step (kill idle sessions) comes before the limit is raised; a session
    waiting for input or running is never killed, nor is a finished one touched."""
    sessions = [{"id": "s-idle", "status": "idle"}, {"id": "s-wait", "status": "waiting_input"},
                {"id": "s-busy", "status": "running"}, {"id": "s-idle2", "status": "idle"},
                {"id": "s-done", "status": "completed"}, {"id": "s-err", "status": "error"}]
    p = plan("agent-high-memory", AGENT_HOT | {"sessions": sessions})
    assert names(p) == ["kill_idle_sessions", "set_memory_max", "daemon_reload"]
    assert p.actions[0].params == {"session_ids": ["s-idle", "s-idle2"]} and p.actions[0].target == "supervisor"
    spared = next(r for r in p.reasons if "spared" in r)
    assert "s-wait" in spared and "s-busy" in spared and "s-err" in spared and "s-done" not in spared


def test_agent_high_memory_without_idle_sessions_only_raises_the_limit() -> None:
    busy = [{"id": "s-wait", "status": "waiting_input"}, {"id": "s-busy", "status": "running"}]
    for facts in (AGENT_HOT, AGENT_HOT | {"sessions": busy}, AGENT_HOT | {"sessions": [{"status": "idle"}, "x"]}):
        assert names(plan("agent-high-memory", facts)) == ["set_memory_max", "daemon_reload"]


def test_agent_high_memory_kills_nothing_when_memory_is_fine() -> None:
    facts = {"agent": ACTIVE | {"memory_current": GiB, "memory_max": 4 * GiB},
             "sessions": [{"id": "s-idle", "status": "idle"}]}
    p = plan("agent-high-memory", facts)
    assert p.decision == "not_present" and not p.actions
