"""Fixture tests of the cost and auth planners (cost-data-discrepancy, manual-auth-required, credential-drift)
with the fact shapes the playbooks gather (GET /api/v1/cost/status, /nodes/{id}/auth, /auth/drift)."""

from __future__ import annotations

from typing import Any

from halswarm.core.remediation import planners
from halswarm.core.remediation.planners import plan

HEALTHY_COST: dict[str, Any] = {"providers_configured": ["anthropic", "openai"], "poll_interval_s": 3600,
                                "last_update_age_s": 120.0, "missing_dates": [], "degraded_providers": [],
                                "aggregator_running": True, "api_reachable": True}


def names(p: planners.Plan) -> list[str]:
    return [a.name for a in p.actions]


# ----- cost-data-discrepancy -----

def test_cost_fresh_is_not_present() -> None:
    p = plan("cost-data-discrepancy", HEALTHY_COST)
    assert p.decision == planners.NOT_PRESENT and not p.actions


def test_cost_degraded_provider_is_repolled_with_key_guidance() -> None:
    p = plan("cost-data-discrepancy", HEALTHY_COST | {"degraded_providers": ["openai"]})
    assert p.decision == planners.PRESENT
    assert names(p) == ["force_repoll"]
    assert any("openai" in g and "API key" in g for g in p.guidance)
    assert "no degraded provider" in p.verify


def test_cost_never_updated_with_gaps_backfills() -> None:
    missing = [f"2026-01-{d:02d}" for d in range(1, 31)]
    p = plan("cost-data-discrepancy", HEALTHY_COST | {"last_update_age_s": None, "missing_dates": missing,
                                                      "degraded_providers": ["anthropic"]})
    assert names(p) == ["force_repoll", "backfill"]
    assert p.actions[1].params["dates"] == missing
    assert any("never updated" in r for r in p.reasons)
    assert any("30 missing date(s)" in r and "(+25 more)" in r for r in p.reasons)


def test_cost_stale_threshold_is_twice_the_interval() -> None:
    assert plan("cost-data-discrepancy", HEALTHY_COST | {"last_update_age_s": 7000}).decision == planners.NOT_PRESENT
    p = plan("cost-data-discrepancy", HEALTHY_COST | {"last_update_age_s": 7300})
    assert p.decision == planners.PRESENT and any("stale" in r for r in p.reasons)


def test_cost_aggregator_not_running_restarts_first() -> None:
    p = plan("cost-data-discrepancy", HEALTHY_COST | {"aggregator_running": False})
    assert names(p) == ["restart_service", "force_repoll"]
    assert p.actions[0].params["unit"] == "hal-supervisor.service"


def test_cost_api_down_uses_config_providers_and_restarts() -> None:
    p = plan("cost-data-discrepancy", {"providers_configured": ["anthropic"], "api_reachable": False,
                                       "aggregator_running": False, "last_update_age_s": None})
    assert names(p) == ["restart_service", "force_repoll"]
    assert any("not reachable" in r for r in p.reasons)


def test_cost_unknown_and_unconfigured() -> None:
    assert plan("cost-data-discrepancy", {}).decision == planners.UNKNOWN
    assert plan("cost-data-discrepancy", {"providers_configured": [], "aggregator_running": False}).decision \
        == planners.NOT_PRESENT


# ----- manual-auth-required -----

UNAUTH_BOTH = {"node_id": "n1", "node_status": "online",
               "auth_states": {"claude_code": {"status": "unauthenticated", "reason": "Not logged in"},
                               "codex": {"status": "unauthenticated"}, "opencode": {"status": "not_installed"}}}


def test_manual_auth_plans_device_flow_only_for_tools_that_have_one() -> None:
    p = plan("manual-auth-required", UNAUTH_BOTH)
    assert p.decision == planners.MANUAL and p.present
    assert [(a.name, a.params["tool"]) for a in p.actions] == [("trigger_oauth", "codex")]
    g = "\n".join(p.guidance)
    assert "[claude_code] Run the login command: claude auth login" in g
    assert "halctl auth login n1 claude_code --ssh" in g
    assert "opencode" not in g  # not installed is not unauthenticated
    assert "claude_code on n1: unauthenticated (Not logged in)" in p.reasons


def test_manual_auth_challenge_goes_into_the_guidance() -> None:
    p = plan("manual-auth-required", UNAUTH_BOTH | {"oauth_challenges": {"codex": {
        "status": "challenge", "challenge_url": "https://auth.openai.com/codex/device", "user_code": "K7QH-2XWPM"}}})
    assert p.decision == planners.MANUAL
    g = "\n".join(p.guidance)
    assert "[codex] Device flow started on n1: open https://auth.openai.com/codex/device and enter the code " \
           "K7QH-2XWPM" in g
    assert "codex login --device-auth" not in g  # no SSH steps needed for codex then
    assert "claude auth login" in g


def test_manual_auth_failed_trigger_falls_back_to_ssh_steps() -> None:
    p = plan("manual-auth-required", UNAUTH_BOTH | {"oauth_challenges": {"codex": {
        "status": "failure", "reason": "error sending request"}}})
    g = "\n".join(p.guidance)
    assert "[codex] Remote OAuth did not start (failure: error sending request); log in manually:" in g
    assert "[codex] Run the login command: codex login --device-auth" in g


def test_manual_auth_not_present_unknown_offline() -> None:
    ok = plan("manual-auth-required", {"node_id": "n1", "auth_states": {
        "claude_code": {"status": "authenticated"}, "codex": {"status": "not_installed"}}})
    assert ok.decision == planners.NOT_PRESENT and not ok.actions
    assert plan("manual-auth-required", {"node_id": "n1", "auth_states": {}}).decision == planners.UNKNOWN
    assert plan("manual-auth-required", {"node_id": "n1", "node_status": "offline",
                                         "auth_states": UNAUTH_BOTH["auth_states"]}).decision == planners.UNKNOWN


# ----- credential-drift -----

def rows(*specs: tuple[str, str, int | None, str]) -> list[dict[str, Any]]:
    return [{"node_id": n, "credential_sync": s, "credential_version": v, "status": st} for n, s, v, st in specs]


def test_drift_pushes_only_to_configured_online_nodes() -> None:
    p = plan("credential-drift", {"expected_version": 5, "credentials_configured": False,
                                  "configured_agents": ["a", "c"], "nodes": rows(("a", "drift_detected", 0, "online"),
                                                ("b", "drift_detected", 0, "online"),
                                                ("c", "drift_detected", 2, "offline"),
                                                ("d", "in_sync", 5, "online"))})
    assert p.decision == planners.PRESENT
    assert [(a.name, a.params["target_node"]) for a in p.actions] == [("push_credentials", "a")]
    assert p.verify == [f"a: credential_sync = in_sync within {planners.VERIFY_TIMEOUT}s"]
    g = "\n".join(p.guidance)
    assert "No credentials configured in the supervisor for b" in g and "informational" in g
    assert "node c is offline" in g
    assert len(p.reasons) == 3


def test_drift_defaults_env_covers_every_node() -> None:
    p = plan("credential-drift", {"expected_version": 5, "credentials_configured": True,
                                  "nodes": rows(("a", "drift_detected", 0, "online"),
                                                ("b", "drift_detected", 0, "online"))})
    assert [a.params["target_node"] for a in p.actions] == ["a", "b"]
    assert not any("informational" in g for g in p.guidance)


def test_drift_none_or_unknown() -> None:
    p = plan("credential-drift", {"nodes": rows(("a", "unknown", None, "online"), ("b", "in_sync", 1, "online"))})
    assert p.decision == planners.NOT_PRESENT
    assert plan("credential-drift", {"nodes": []}).decision == planners.NOT_PRESENT
    assert plan("credential-drift", {"nodes": None}).decision == planners.UNKNOWN


def test_drift_without_configured_credentials_is_informational_manual() -> None:
    p = plan("credential-drift", {"expected_version": 6, "nodes": rows(("a", "drift_detected", 5, "online"))})
    assert p.decision == planners.MANUAL and p.actions == []
    assert p.guidance[0].startswith("Expected after a manual login: informational only")
    assert "node a: credential_version 5 != supervisor's 6" in p.reasons
