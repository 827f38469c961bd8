"""Supervisor-side helpers of the env feature: manifest validation with template files, the approval play,
reading the module's result from ansible-runner job events, store migrations; halctl renderers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml

from halswarm.cli.env_cmd import render_check, render_provision
from halswarm.store.migrations import migrate
from halswarm.supervisor.features.env.approvals import approval_play, module_result
from halswarm.supervisor.features.env.service import drift_rows, worst
from halswarm.supervisor.features.env.validation import manifest_problems


def test_manifest_problems_reads_template_files(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "AGENT.md").write_text("# {{project}} from a file\n")
    doc = {"version": "1.0", "projects": {"a": {"agent_config": {"AGENT.md": "templates/AGENT.md"}},
                                          "b": {"agent_config": {"AGENT.md": "missing.md"}}}}
    errors, warnings, inlined = manifest_problems(doc, tmp_path / "templates")
    assert errors == ["projects.b.agent_config[\"AGENT.md\"]: template 'missing.md' not found (not in templates, no "
                      "such file on the supervisor)"]
    assert inlined == {"templates/AGENT.md": "# {{project}} from a file\n"} and warnings == []
    errors, warnings, _ = manifest_problems({"version": "1.0", "requirements": {}, "colour": "blue"}, tmp_path)
    assert errors == [] and warnings == ["colour: unknown key"]
    assert manifest_problems(["x"], tmp_path)[0] == ["(root): manifest must be a JSON object"]


def test_approval_play_is_yaml_with_the_module() -> None:
    row = {"id": "p:tools:rg", "command": "apt-get install -y ripgrep", "become": True, "check": ["rg", "--version"],
           "chdir": ""}
    play = yaml.safe_load(approval_play(row))
    task = play[0]["tasks"][0]
    assert play[0]["hosts"] == "{{ hal_env_target }}" and play[0]["gather_facts"] is False
    assert task["become"] is True
    assert task["halswarm.ops.hal_env_item"] == {"name": "p:tools:rg", "command": "apt-get install -y ripgrep",
                                                 "shell": False, "check": ["rg", "--version"]}
    shell = yaml.safe_load(approval_play({"id": "x", "command": "make clean && rm -rf build", "chdir": "/srv/p"}))
    args = shell[0]["tasks"][0]["halswarm.ops.hal_env_item"]
    assert args["shell"] is True and args["chdir"] == "/srv/p"
    assert yaml.safe_load(approval_play({"id": "x", "command": "echo 'unbalanced"}))[0]["tasks"][0][
        "halswarm.ops.hal_env_item"]["shell"] is True


def test_module_result_from_job_events(tmp_path: Path) -> None:
    ev = tmp_path / "job_events"
    ev.mkdir()
    (ev / "1-a.json").write_text(json.dumps({"event": "playbook_on_task_start", "event_data": {}}))
    (ev / "2-b.json").write_text(json.dumps({"event": "runner_on_ok", "event_data": {
        "host": "n1", "task_action": "halswarm.ops.hal_env_item", "res": {"rc": 0, "changed": True}}}))
    (ev / "3-c.json").write_text("not json")
    assert module_result(tmp_path) == ("n1", "runner_on_ok", {"rc": 0, "changed": True})
    assert module_result(tmp_path / "nothing") is None


def test_migrations_create_the_env_tables() -> None:
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    applied = migrate(conn)
    assert "005_env_manifest.sql" in applied and "006_env_status.sql" in applied
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"env_manifests", "env_status", "env_runs", "env_pending"} <= tables


def test_drift_rows_and_worst() -> None:
    rows = [{"node_id": "n", "project": "p", "checked_at": 0.0, "result": {"details": {"drift": [
        {"category": "docs", "item": "A", "status": "pass"}, {"category": "docs", "item": "B", "status": "warn"}]}}}]
    assert [(d["item"], d["status"]) for d in drift_rows(rows)] == [("B", "warn")]
    assert worst(["ready", "degraded"]) == "degraded" and worst(["missing", "ready"]) == "missing"
    assert worst([]) == "unknown"


def test_cli_renderers() -> None:
    check = {"node_id": "n1", "results": [{"project": "p", "status": "missing", "summary": {"pass": 1, "fail": 1},
                                           "details": {"drift": [
                                               {"category": "tools", "item": "rg", "expected": "installed",
                                                "actual": "not found", "status": "fail", "fix": "risky"},
                                               {"category": "docs", "item": "A", "status": "pass"}]}}]}
    assert render_check(check) == ("n1/p: missing (pass 1, fail 1, warn 0)\n"
                                   "  fail  tools:rg  expected installed, actual not found [fix: risky]")
    prov = {"node_id": "n1", "results": [{"project": "p", "dry_run": True, "details": {
        "planned": [{"action": "create", "category": "docs", "item": "A", "path": "/p/A"}],
        "pending": [{"id": "p:tools:rg", "command": "apt-get install -y rg", "reason": "missing"}],
        "conflicts": [{"category": "agent_config", "item": "AGENT.md", "reason": "modified", "diff": "-a\n+b\n"}],
        "manual": []}}]}
    assert render_provision(prov).splitlines() == [
        "n1/p: plan (dry run, nothing changed)", "  would create docs:A  /p/A",
        "  pending p:tools:rg: apt-get install -y rg  (missing; approve with `halctl env approve n1 p:tools:rg`)",
        "  conflict agent_config:AGENT.md: modified", "    -a", "    +b"]
