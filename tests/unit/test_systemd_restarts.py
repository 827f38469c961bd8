"""`read_own_nrestarts` asks systemctl about this process's own unit, with an argument list, and believes
the answer only when the unit's main process is this one. systemctl is a stand-in script on PATH."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from halswarm.systemd_restarts import read_own_nrestarts


def fake_systemctl(bin_dir: Path, main_pid: int, restarts: str, args_file: Path) -> None:
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args_file}\n'
                      f'printf "MainPID={main_pid}\\nNRestarts={restarts}\\n"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    d = tmp_path / "proc"
    d.mkdir()
    (d / "cgroup").write_text("0::/system.slice/hal-agent.service\n")
    return d


def test_restarts_of_the_own_unit(tmp_path: Path, proc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = tmp_path / "args"
    fake_systemctl(tmp_path / "bin", os.getpid(), "4", args)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert read_own_nrestarts(proc) == 4
    assert args.read_text().split("\n")[:-1] == ["show", "-p", "MainPID", "-p", "NRestarts", "--",
                                                 "hal-agent.service"]


def test_a_child_of_the_unit_reports_nothing(tmp_path: Path, proc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl(tmp_path / "bin", os.getpid() + 1, "4", tmp_path / "args")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert read_own_nrestarts(proc) is None


def test_no_unit_or_no_systemctl_is_no_figure(tmp_path: Path, proc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert read_own_nrestarts(proc) is None  # no systemctl
    fake_systemctl(tmp_path / "bin", os.getpid(), "4", tmp_path / "args")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (proc / "cgroup").write_text("0::/user.slice/user-1000.slice/session-2.scope\n")
    assert read_own_nrestarts(proc) is None  # started from a shell
    assert read_own_nrestarts(tmp_path / "nowhere") is None
    assert not (tmp_path / "args").exists()  # systemctl never asked without a unit
