"""Dependency DAG (pure): cycle rejection with its path, ready/blocked, which dependents start."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import parse_supervisor_config
from halswarm.supervisor.features.dependencies.service import Graph, Signal, latest_signal, project_states, to_start
from halswarm.supervisor.features.dependencies.settings import DependencySettings

TOKEN = "a" * 40
DEPS = {"ai-os-l0": {"depends_on": ["ai-os-interfaces"]}, "ai-os-l1": ["ai-os-interfaces"],
        "ai-os-rom": {"depends_on": ["ai-os-l0", "ai-os-l1"]}}


def test_cycle_is_rejected_with_its_path() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_supervisor_config({"auth_token": TOKEN, "dependencies": {"a": ["b"], "b": {"depends_on": ["c"]},
                                                                       "c": ["a"], "d": ["d"]}})
    messages = sorted(str(p) for p in exc.value.problems)
    assert any("dependencies.a" in m and "cycle detected: a -> b -> c -> a" in m for m in messages), messages
    assert any("cycle detected: d -> d" in m for m in messages), messages


def test_acyclic_config_loads_with_autostart_flag() -> None:
    cfg, warnings = parse_supervisor_config({"auth_token": TOKEN, "dependencies": DEPS,
                                             "dependencies_autostart": True})
    assert cfg.raw["dependencies_autostart"] is True
    assert not [w for w in warnings if "dependencies" in str(w)]


def test_graph_edges_and_states() -> None:
    g = Graph(DependencySettings.parse(DEPS).edges)
    assert g.projects == ["ai-os-interfaces", "ai-os-l0", "ai-os-l1", "ai-os-rom"]
    assert g.dependents("ai-os-interfaces") == ["ai-os-l0", "ai-os-l1"] and g.deps("ai-os-rom") == ["ai-os-l0",
                                                                                                      "ai-os-l1"]
    states = {s["project"]: s for s in project_states(g, {"ai-os-interfaces": True, "ai-os-l0": True},
                                                      {"ai-os-l1": 1})}
    assert states["ai-os-interfaces"]["state"] == "completed"
    assert states["ai-os-l1"]["state"] == "running" and states["ai-os-l1"]["ready"]
    assert states["ai-os-rom"]["state"] == "blocked" and states["ai-os-rom"]["blocked_by"] == ["ai-os-l1"]
    assert project_states(g, {}, {})[0]["state"] == "ready"  # no dependencies


def test_a_completed_upstream_starts_its_ready_dependents_once() -> None:
    g = Graph(DependencySettings.parse(DEPS).edges)
    markers = {"ai-os-interfaces": "session:s1"}
    handled = {p: "" for p in g.projects}
    starts, marks = to_start(g, markers, handled, {})
    assert starts == [("ai-os-l0", "ai-os-interfaces", "session:s1"), ("ai-os-l1", "ai-os-interfaces", "session:s1")]
    assert marks == {"ai-os-interfaces": "session:s1"}
    handled.update(marks)
    assert to_start(g, markers, handled, {}) == ([], {})  # same completion: nothing again
    # l0 completes; rom still waits for l1.
    markers["ai-os-l0"] = "session:s2"
    starts, marks = to_start(g, markers, handled, {})
    assert starts == [] and marks == {"ai-os-l0": "session:s2"}
    handled.update(marks)
    markers["ai-os-l1"] = "event:e9"
    starts, _ = to_start(g, markers, handled, {"ai-os-rom": 0})
    assert starts == [("ai-os-rom", "ai-os-l1", "event:e9")]
    # A dependent that already has a live session is not started twice.
    assert to_start(g, markers, {**handled, "ai-os-l1": ""}, {"ai-os-rom": 1})[0] == []


def test_latest_signal_newest_wins() -> None:
    sessions = [SimpleNamespace(id="s1", project="p", status="completed", last_activity=100.0, started_at=1.0),
                SimpleNamespace(id="s2", project="p", status="running", last_activity=300.0, started_at=1.0)]
    assert latest_signal("p", sessions, None) == Signal(True, "session:s1", 100.0)
    reopened = Signal(False, "event:e1", 200.0)
    assert latest_signal("p", sessions, reopened) == reopened
    assert latest_signal("p", sessions, Signal(True, "event:e0", 50.0)).marker == "session:s1"
    assert latest_signal("q", sessions, None) is None
