"""`hal-agent` command line: --validate exit codes and one-line start-up errors (real process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.supervisor_proc import REPO
from tests.support.waiting import wait_for

HAL_AGENT = shutil.which("hal-agent", path=str(Path(sys.executable).parent))
TOKEN = "t" * 40


def run_agent(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HAL_AUTH_TOKEN"}
    cmd = [HAL_AGENT] if HAL_AGENT else [sys.executable, "-m", "halswarm.agent.main"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


def test_console_script_is_installed() -> None:
    assert HAL_AGENT, "hal-agent console script missing from the venv"
    res = run_agent("--version")
    assert res.returncode == 0 and res.stdout.startswith("hal-agent ")


def test_validate_ok_and_invalid(tmp_path: Path) -> None:
    good = write(tmp_path / "agent.json", {"supervisor_url": "ws://127.0.0.1:8420/ws/agent", "auth_token": TOKEN,
                                           "projects": [{"name": "a", "directory": str(tmp_path)}]})
    res = run_agent("--config", str(good), "--validate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK:" in res.stdout

    bad = write(tmp_path / "bad-agent.json", {"supervisor_url": "http://nope", "auth_token": "short",
                                              "opencode_port": 70000})
    res = run_agent("--config", str(bad), "--validate")
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert any(line.startswith("supervisor_url: ") for line in lines), res.stdout
    assert any(line.startswith("opencode_port: ") for line in lines), res.stdout
    assert "Traceback" not in res.stdout + res.stderr


def test_unknown_key_is_a_warning_unless_strict(tmp_path: Path) -> None:
    doc = {"supervisor_url": "ws://127.0.0.1:8420", "auth_token": TOKEN, "colour": "blue"}
    path = write(tmp_path / "agent.json", doc)
    assert run_agent("--config", str(path), "--validate").returncode == 0
    res = run_agent("--config", str(path), "--validate", "--strict")
    assert res.returncode == 1 and "colour" in res.stdout


def test_bad_config_exits_1_with_one_line_errors(tmp_path: Path) -> None:
    for name, content in (("missing.json", None), ("broken.json", "{not json"),
                          ("agent.json", json.dumps({"supervisor_url": "ws://x:1"}))):
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        res = run_agent("--config", str(path))
        assert res.returncode == 1, (name, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip().splitlines()[-1].startswith("error: invalid configuration"), res.stderr


def test_unusable_data_dir_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    path = write(tmp_path / "agent.json", {"supervisor_url": "ws://127.0.0.1:9/ws/agent", "auth_token": TOKEN,
                                           "data_dir": str(blocker / "data"), "opencode": {"manage": False}})
    res = run_agent("--config", str(path))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert f"error: cannot use data_dir {blocker / 'data'}" in res.stderr


def test_outbox_held_by_another_agent_exits_1(tmp_path: Path, make_agent) -> None:
    class _NoSup:
        ws_url = "ws://127.0.0.1:9/ws/agent"  # nothing listens: the first agent just keeps retrying
        token = agent_token = TOKEN

    first = make_agent(_NoSup(), "first").start()
    wait_for(lambda: (first.data_dir / "outbox.db").exists() and "started as node" in first.log_text(),
             "first agent up", 20)
    second_cfg = write(tmp_path / "second.json", {**first.config(), "node_id": "second"})
    res = run_agent("--config", str(second_cfg))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "is in use by another process" in res.stderr and "another hal-agent" in res.stderr
    assert first.running()
