"""Planner fixtures of the network remediations (agent-cannot-connect, supervisor-unreachable)."""

from __future__ import annotations

from typing import Any

from halswarm.core.remediation import planners
from halswarm.core.remediation.planners import plan

ACTIVE = {"load_state": "loaded", "active_state": "active", "sub_state": "running", "n_restarts": 0}
DEAD = {"load_state": "loaded", "active_state": "failed", "sub_state": "failed", "n_restarts": 1}
NS = "net:[4026532000]"
BLOCK = "-A INPUT -p tcp -m tcp --dport 8420 -j DROP"
OTHER = ["-P INPUT ACCEPT", "-A INPUT -p tcp -m tcp --dport 9999 -j DROP",
         "-A INPUT -p udp -m udp --dport 8420 -j DROP", "-A INPUT -p tcp -m tcp --dport 8421 -j ACCEPT",
         "-A INPUT -p tcp -m tcp ! --dport 8420 -j REJECT"]


def agent_facts(**kw: Any) -> dict[str, Any]:
    base = {"agent": ACTIVE, "supervisor": ACTIVE, "node_online": False, "node_status": "offline",
            "token_match": True, "token_source": "file", "port": 8420, "port_reachable": True, "listening": True,
            "configured_port": 8420, "firewall": {"ag": {"netns": NS, "rules": OTHER},
                                                  "sup": {"netns": NS, "rules": OTHER}}}
    return base | kw


def names(p: planners.Plan) -> list[str]:
    return [a.name for a in p.actions]


def test_wrong_token_is_resynced_then_agent_restarted() -> None:
    p = plan("agent-cannot-connect", agent_facts(token_match=False))
    assert p.decision == planners.PRESENT and names(p) == ["sync_token", "restart_service"]
    assert p.actions[0].params == {"source": "file"} and p.actions[1].target == "agent"


def test_token_from_unit_environment_escalates() -> None:
    p = plan("agent-cannot-connect", agent_facts(token_match=False, token_source="env"))
    assert p.decision == planners.ESCALATE and p.actions == []


def test_only_the_blocking_rule_is_removed_once_per_namespace() -> None:
    fw = {"ag": {"netns": NS, "rules": [*OTHER, BLOCK]}, "sup": {"netns": NS, "rules": [*OTHER, BLOCK]}}
    p = plan("agent-cannot-connect", agent_facts(port_reachable=False, firewall=fw))
    assert names(p) == ["allow_port", "restart_service"]
    rules = p.actions[0].params["rules"]
    assert [(r["rule"], r["chain"]) for r in rules] == [(BLOCK, "INPUT")]
    assert rules[0]["argv"] == ["-p", "tcp", "-m", "tcp", "--dport", "8420", "-j", "DROP"]


def test_rules_in_separate_namespaces_are_each_removed() -> None:
    fw = {"ag": {"netns": "a", "rules": [BLOCK]}, "sup": {"netns": "b", "rules": [BLOCK]}}
    p = plan("agent-cannot-connect", agent_facts(port_reachable=False, firewall=fw))
    assert sorted(r["host"] for r in p.actions[0].params["rules"]) == ["ag", "sup"]


def test_multiport_range_and_reject_are_blocking() -> None:
    line = '-A OUTPUT -p tcp -m multiport --dports 22,8000:9000 -m comment --comment "x y" -j REJECT'
    p = plan("agent-cannot-connect", agent_facts(port_reachable=False, firewall={"ag": {"netns": NS, "rules": [line]}}))
    assert p.actions[0].params["rules"][0]["argv"][-4:] == ["--comment", "x y", "-j", "REJECT"]


def test_managed_rules_are_never_deleted_but_guided() -> None:
    fw = {"sup": {"netns": NS, "rules": ["-A HAL-O-SWARM -p tcp -m tcp --dport 8420 -j DROP",
                                         "-A ufw-user-input -p tcp -m tcp --dport 8420 -j DROP"]}}
    p = plan("agent-cannot-connect", agent_facts(port_reachable=False, firewall=fw))
    assert p.decision == planners.MANUAL and p.actions == []
    assert len(p.guidance) == 2 and all("hal_firewall_ws_sources" in g for g in p.guidance)


def test_unreachable_without_cause_escalates() -> None:
    p = plan("agent-cannot-connect", agent_facts(port_reachable=False, supervisor_url="ws://x:8420/ws/agent"))
    assert p.decision == planners.ESCALATE and "ws://x:8420/ws/agent" in " ".join(p.reasons)


def test_rules_are_ignored_while_the_port_is_reachable() -> None:
    fw = {"sup": {"netns": NS, "rules": [BLOCK.replace("INPUT", "INPUT -s 10.9.0.0/16")]}}
    p = plan("agent-cannot-connect", agent_facts(firewall=fw))
    assert names(p) == ["restart_service"]


def test_supervisor_on_another_port_escalates() -> None:
    p = plan("agent-cannot-connect", agent_facts(listening=False, configured_port=8430, port_reachable=False))
    assert p.decision == planners.ESCALATE


def test_supervisor_not_listening_is_restarted() -> None:
    p = plan("agent-cannot-connect", agent_facts(listening=False, port_reachable=False))
    assert [(a.name, a.target) for a in p.actions] == [("restart_service", "supervisor"), ("restart_service", "agent")]


def test_unreachable_fleet_with_rule() -> None:
    facts = {"supervisor": ACTIVE, "listening": True, "port": 8420, "configured_port": 8420, "total_agents": 1,
             "offline_agents": ["n1"], "port_reachable": False, "unreachable_from": ["ag"],
             "firewall": {"sup": {"netns": NS, "rules": [*OTHER, BLOCK]}}}
    p = plan("supervisor-unreachable", facts)
    assert names(p) == ["allow_port", "restart_agents"]
    assert p.actions[1].params == {"hosts": ["n1"]}
    healthy = facts | {"offline_agents": [], "port_reachable": True, "unreachable_from": [],
                       "firewall": {"sup": {"netns": NS, "rules": OTHER}}}
    assert plan("supervisor-unreachable", healthy).decision == planners.NOT_PRESENT


def test_unreachable_fleet_without_cause_escalates() -> None:
    facts = {"supervisor": ACTIVE, "listening": True, "total_agents": 1, "offline_agents": ["n1"],
             "port_reachable": False, "firewall": {"sup": {"netns": NS, "rules": OTHER}}}
    assert plan("supervisor-unreachable", facts).decision == planners.ESCALATE
