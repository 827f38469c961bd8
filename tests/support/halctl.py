"""The real ``halctl`` entry point against a test supervisor, as a child process.

- ``halctl`` / ``halctl_json``: blocking; the supervisor's URL and token come from halctl's environment
  variables, with HOME in the supervisor's workdir (no operator config of the machine is read).
- ``ahalctl``: for async tests, in a worker thread (the test's agent side keeps running on the loop);
  URL and token as flags (``halctl_argv``), so a test can also run that argv another way (a PTY).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.supervisor_proc import REPO, SupervisorProc

HALCTL = str(Path(sys.executable).parent / "halctl")


def halctl(sup: SupervisorProc, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(sup.workdir),
           "HALCTL_SUPERVISOR_URL": sup.api, "HALCTL_AUTH_TOKEN": sup.token}
    if os.environ.get("PYTHONPATH"):  # a worktree's checkout, not the installed package
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run([HALCTL, *args], capture_output=True, text=True, timeout=timeout, env=env)


def halctl_json(sup: SupervisorProc, *args: str, timeout: float = 120.0) -> Any:
    res = halctl(sup, *args, "--output", "json", timeout=timeout)
    assert res.returncode == 0, f"halctl {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def halctl_argv(sup: SupervisorProc, *args: str) -> list[str]:
    return [HALCTL, "--supervisor-url", sup.api, "--auth-token", sup.token, *args]


async def ahalctl(sup: SupervisorProc, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run halctl in a thread, so the agent side keeps running on this loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_")}
    return await asyncio.to_thread(subprocess.run, halctl_argv(sup, *args), capture_output=True, text=True,
                                   timeout=timeout, env=env, cwd=REPO)
