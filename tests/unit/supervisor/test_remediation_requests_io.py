"""Both ends of a start-up remediation request on a real directory: the supervisor's atomic write
(db_launch) and the root runner that reads, removes and acts on it (request_runner), which must never be
led outside the directory nor run anything but the fixed halctl command line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from halswarm.config.supervisor import parse_supervisor_config
from halswarm.core.remediation.requests import encode_request
from halswarm.supervisor.features.remediations.db_launch import launch_db_remediation
from halswarm.supervisor.features.remediations.halctl_run import halctl_argv
from halswarm.supervisor.features.remediations.request_runner import main, run_request, take_requests
from halswarm.supervisor.features.remediations.settings import DB_CORRUPTION, AutoConfig

TOKEN = "a" * 40


def auto(tmp_path: Path, **remediation: Any) -> AutoConfig:
    cfg, _ = parse_supervisor_config({"auth_token": TOKEN, "database": {"path": str(tmp_path / "s.db")},
                                      "remediation": {"auto": [DB_CORRUPTION], **remediation}})
    return AutoConfig.from_config(cfg)


def test_supervisor_writes_a_request_when_the_directory_exists(tmp_path: Path) -> None:
    cfg = auto(tmp_path, inventory="/i.ini")
    assert cfg.request_dir == tmp_path.resolve() / "remediation-requests"
    cfg.request_dir.mkdir()
    now = time.time()
    calls: list[Any] = []
    msg = launch_db_remediation(cfg, now=now, systemd=True, run=lambda *a, **k: calls.append(a))
    assert calls == []  # no systemd-run
    (req,) = cfg.request_dir.iterdir()
    assert msg == (f"auto remediation requested ({req}; hal-supervisor-remediate.service runs "
                   "`halctl remediate supervisor-db-corruption -i /i.ini --limit hal_supervisors`)")
    assert json.loads(req.read_bytes())["incident"] == DB_CORRUPTION and oct(req.stat().st_mode)[-3:] == "600"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    again = launch_db_remediation(cfg, now=now + 60, systemd=True)
    assert again.startswith("auto remediation already started as hal-supervisor-remediate.service")
    assert len(list(cfg.request_dir.iterdir())) == 1


def test_runner_takes_valid_requests_and_removes_everything(tmp_path: Path) -> None:
    d = tmp_path / "req"
    d.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("hunter2-secret")
    now = time.time()
    (d / "supervisor-db-corruption-1.json").write_bytes(encode_request(DB_CORRUPTION, now))
    (d / "supervisor-db-corruption-2.json").write_bytes(encode_request(DB_CORRUPTION, now))  # same incident
    (d / "forged-1.json").write_text(json.dumps({"schema": 1, "incident": "agent-crashed", "requested_at": now}))
    (d / "link.json").symlink_to(secret)
    (d / "notes.txt").write_text("x")
    (d / "sub").mkdir()
    (d / "full").mkdir()
    (d / "full" / "x").write_text("x")
    said: list[str] = []
    reqs = take_requests(d, now, said.append)
    assert [r.incident for r in reqs] == [DB_CORRUPTION]
    assert sorted(p.name for p in d.iterdir()) == ["full"]  # a non-empty directory is never walked into
    assert secret.read_text() == "hunter2-secret" and not any("hunter2" in line for line in said)
    assert any(line.startswith("forged-1.json: refused (incident 'agent-crashed'") for line in said), said
    assert "link.json: refused (not a request file name or not a regular file), removed" in said


def test_runner_will_not_follow_a_directory_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.json").write_text("{}")
    (tmp_path / "req").symlink_to(target)
    rc = main(["--config", str(tmp_path / "none.json"), "--dir", str(tmp_path / "req")])
    assert rc == 1 and (target / "keep.json").exists()


def test_runner_runs_the_fixed_command_line_from_the_config(tmp_path: Path) -> None:
    cfg = auto(tmp_path, inventory="/inv.yml", supervisor_host="sup1")
    calls: list[list[str]] = []

    def run(argv: list[str], **kw: Any) -> Any:
        assert "shell" not in kw
        calls.append(argv)
        return SimpleNamespace(returncode=0)

    req = take_requests_one(tmp_path)
    assert run_request(req, cfg, run=run) == 0
    assert calls == [halctl_argv(DB_CORRUPTION, "/inv.yml", "sup1", state_dir=cfg.state_dir, timeout=900,
                                 json_output=False, send=True)]
    assert run_request(req, auto(tmp_path), run=run) == 1 and len(calls) == 1  # no inventory: nothing runs


def take_requests_one(tmp_path: Path) -> Any:
    d = tmp_path / "one"
    d.mkdir()
    (d / "supervisor-db-corruption-9.json").write_bytes(encode_request(DB_CORRUPTION, time.time()))
    (req,) = take_requests(d, time.time(), lambda _: None)
    assert not os.listdir(d)
    return req


def test_runner_runs_only_incidents_listed_in_remediation_auto(tmp_path: Path, capsys: Any) -> None:
    """A valid request for a requestable incident the config does not list is refused: the supervisor's user
    can write any request, the config (root's) decides what runs."""
    config = tmp_path / "sup.json"
    config.write_text(json.dumps({"auth_token": TOKEN, "database": {"path": str(tmp_path / "s.db")},
                                  "remediation": {"auto": [DB_CORRUPTION], "inventory": str(tmp_path / "none.yml")}}))
    req = tmp_path / "req"
    req.mkdir()
    (req / "supervisor-high-memory-1.json").write_bytes(encode_request("supervisor-high-memory", time.time()))
    assert main(["--config", str(config), "--dir", str(req)]) == 0
    out = capsys.readouterr().out
    assert "supervisor-high-memory: refused (not listed in remediation.auto" in out and "running `" not in out, out
    assert not os.listdir(req)
