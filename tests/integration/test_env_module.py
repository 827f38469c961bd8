"""The collection module halswarm.ops.hal_env_item: ansible-test sanity (on a copy of the collection, like the
data-safety plugins), and real runs through ansible-runner on localhost: check mode runs nothing, `creates` /
`check` make it idempotent, a failing command fails the task with its output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from halswarm.ops.runner import PlaybookRun, run_playbook

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "collections/ansible_collections/halswarm/ops"
ANSIBLE_TEST = Path(sys.executable).parent / "ansible-test"
MODULE = "plugins/modules/hal_env_item.py"


def _play(tmp: Path, tasks: list[dict]) -> tuple[Path, Path]:
    inv = tmp / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    play = tmp / f"play-{len(list(tmp.glob('play-*.yml')))}.yml"
    play.write_text(yaml.safe_dump([{"name": "hal_env_item", "hosts": "localhost", "gather_facts": False,
                                     "tasks": tasks}], sort_keys=False))
    return play, inv


def _results(artifacts: Path) -> dict[str, tuple[str, dict]]:
    out = {}
    for p in sorted((artifacts / "job_events").glob("*.json")):
        ev = json.loads(p.read_text())
        data = ev.get("event_data") or {}
        if ev.get("event") in ("runner_on_ok", "runner_on_failed"):
            out[data.get("task")] = (ev["event"], data.get("res") or {})
    return out


@pytest.mark.timeout(240)
def test_module_through_ansible_runner(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    item = {"name": "p:tools:x", "command": f"touch {marker}", "creates": str(marker)}
    play, inv = _play(tmp_path, [
        {"name": "check mode", "halswarm.ops.hal_env_item": item, "check_mode": True},
        {"name": "run", "halswarm.ops.hal_env_item": item},
        {"name": "again", "halswarm.ops.hal_env_item": item},
        {"name": "check passes", "halswarm.ops.hal_env_item": {"name": "p:tools:sh", "command": "false",
                                                               "check": ["sh", "-c", "exit 0"]}},
        {"name": "shell", "halswarm.ops.hal_env_item": {"name": "p:disk:x", "command": "echo a | tr a b",
                                                        "shell": True, "chdir": str(tmp_path)}},
        {"name": "fails", "halswarm.ops.hal_env_item": {"name": "p:libs:y", "command": "sh -c 'echo oops >&2; exit 4'"},
         "ignore_errors": True},
    ])
    res = run_playbook(PlaybookRun(playbook=str(play), inventories=[str(inv)], state_dir=tmp_path / "state"),
                       emit=lambda _line: None)
    assert res.status == "successful", res.failures
    r = _results(res.artifact_dir)
    assert r["check mode"][0] == "runner_on_ok" and r["check mode"][1]["changed"] is True
    assert r["run"][1]["changed"] is True and r["run"][1]["rc"] == 0 and r["run"][1]["item"] == "p:tools:x"
    assert r["again"][1]["changed"] is False and r["again"][1]["skipped_reason"] == f"{marker} exists"
    assert r["check passes"][1]["changed"] is False and "succeeded" in r["check passes"][1]["skipped_reason"]
    assert r["shell"][1]["stdout"] == "b\n"
    assert r["fails"][0] == "runner_on_failed" and r["fails"][1]["rc"] == 4 and r["fails"][1]["stderr"] == "oops\n"
    assert r["fails"][1]["msg"] == "command exited 4"
    assert marker.exists()


@pytest.mark.timeout(1200)
def test_ansible_test_sanity_on_hal_env_item(tmp_path: Path) -> None:
    if not ANSIBLE_TEST.exists():
        pytest.skip("ansible-test is not installed")
    dest = tmp_path / "ansible_collections/halswarm/ops"
    shutil.copytree(SOURCE, dest, ignore=shutil.ignore_patterns(".ansible", "output", "__pycache__", "*.pyc",
                                                                   "*.tar.gz"))
    ignore = dest / "tests/sanity/ignore-2.19.txt"
    ignore.parent.mkdir(parents=True, exist_ok=True)
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    extra = f"{MODULE} validate-modules:missing-gplv3-license"
    present = any(line.split("#", 1)[0].strip() == extra for line in lines)
    ignore.write_text("\n".join([*lines, *([] if present else [extra])]) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{ANSIBLE_TEST.parent}{os.pathsep}{env.get('PATH', '')}"
    res = subprocess.run([str(ANSIBLE_TEST), "sanity", MODULE, "--venv", "--python", "3.11", "--requirements",
                          "--color", "no"], cwd=dest, env=env, capture_output=True, text=True, timeout=1100)
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith(("ERROR", "FATAL"))]
    assert res.returncode == 0, "\n".join(errors) or res.stdout[-3000:] + res.stderr[-3000:]
