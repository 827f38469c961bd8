"""remediate_supervisor_crashed.yml through halctl + ansible-runner, --check, on localhost (local connection).

This host has no hal-supervisor.service: the decide phase reports "not present" and nothing changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.halctl import HALCTL
from tests.support.supervisor_proc import REPO

pytest.importorskip("ansible_runner")


@pytest.mark.timeout(300)
def test_check_mode_on_host_without_service(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[hal_supervisors]\n"
                   f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = dict(os.environ, HOME=str(tmp_path), HALCTL_AUTH_TOKEN="x")
    out = subprocess.run(
        [HALCTL, "--output", "json", "remediate", "supervisor-crashed", "-i", str(inv),
         "--check", "--no-send", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=280, cwd=REPO, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout[out.stdout.index("\n{") + 1:] if not out.stdout.startswith("{") else out.stdout)
    assert report["status"] == "not_present" and report["decision"] == "not_present"
    assert report["hosts"] == ["localhost"] and report["actions"] == []
    assert report["severity"] == "Critical" and report["response_time"] == "< 5 min"
    assert report["facts"]["localhost"]["supervisor"]["load_state"] == "not-found"
    saved = list((tmp_path / "state" / "remediations").glob("*-supervisor-crashed-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["id"] == report["id"]
