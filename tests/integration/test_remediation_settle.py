"""A crash loop caught in the middle of a start attempt is still a crash (issue 15, escalation drill).

A unit restarted by systemd after each crash spends every attempt in ``activating/start``, which
looks like a daemon coming up. The diagnose phase used to take one ``systemctl show`` snapshot, so a
run that landed in such an attempt reported "not present" (exit 0) for a crashed supervisor; under
load each doomed attempt lasts longer and that became likely. The facts now come from a snapshot
taken when the attempt had an outcome. Here a stand-in ``systemctl`` plays the loop: attempts in
progress, one moment of ``auto-restart`` (the crash), then the next attempt in progress again (so a
wait followed by a separate snapshot would still land in an attempt), and the real playbook runs
through halctl on localhost in check mode.
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

# `systemctl show UNIT -p ...`: an attempt in progress ("start"), except on call $CRASH_AT: the crash
# ("auto-restart"); anything else: rc 0.
SYSTEMCTL = """#!/bin/sh
[ "$1" = show ] || exit 0
n=$(cat "$STATE" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$STATE"
if [ "$n" -eq "$CRASH_AT" ]; then sub=auto-restart; else sub=start; fi
printf 'LoadState=loaded\\nActiveState=activating\\nSubState=%s\\nNRestarts=1\\nMainPID=0\\nResult=success\\n' "$sub"
printf 'MemoryCurrent=[not set]\\nMemoryMax=infinity\\n'
"""


@pytest.mark.timeout(300)
def test_a_start_attempt_in_a_crash_loop_is_not_taken_for_a_running_service(tmp_path: Path) -> None:
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "systemctl").write_text(SYSTEMCTL)
    (stub / "systemctl").chmod(0o755)
    inv = tmp_path / "hosts.ini"
    inv.write_text("[hal_supervisors]\n"
                   f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = dict(os.environ, HOME=str(tmp_path), HALCTL_AUTH_TOKEN="x", PATH=f"{stub}:{os.environ['PATH']}",
               STATE=str(tmp_path / "calls"), CRASH_AT="3")
    out = subprocess.run(
        [HALCTL, "--output", "json", "remediate", "supervisor-crashed", "-i", str(inv),
         "--check", "--no-send", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=280, cwd=REPO, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout[out.stdout.index("\n{") + 1:] if not out.stdout.startswith("{") else out.stdout)
    seen = report["facts"]["localhost"]["supervisor"]
    assert (seen["active_state"], seen["sub_state"]) == ("activating", "auto-restart"), seen
    assert report["decision"] == "present" and report["status"] == "check", report
    assert any("activating/auto-restart" in r for r in report["reasons"]), report["reasons"]
    assert int((tmp_path / "calls").read_text()) == 3  # asked until the attempt had an outcome, used that answer
