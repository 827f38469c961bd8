"""One automatic run: `halctl remediate` in a subprocess (its own process group), its report parsed."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def halctl_argv(incident: str, inventory: str, limit: str, *, state_dir: Path | None = None,
                timeout: float | None = None, json_output: bool = True, send: bool = False,
                check: bool = False) -> list[str]:
    """The halctl command line of one run (this interpreter's halctl, no PATH lookup); `check`: the plan
    only (`--check`), nothing changed."""
    argv = [sys.executable, "-m", "halswarm.cli.main"]
    if json_output:
        argv += ["--output", "json"]
    argv += ["remediate", incident, "-i", inventory, "--limit", limit]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    if timeout is not None:
        argv += ["--timeout", str(max(1, int(timeout)))]
    if check:
        argv.append("--check")
    if not send:
        argv.append("--no-send")
    return argv


def display_command(incident: str, inventory: str | None, limit: str) -> str:
    """What an operator would type."""
    return shlex.join(["halctl", "remediate", incident, "-i", inventory or "INVENTORY", "--limit", limit])


def parse_report(stdout: str) -> dict[str, Any] | None:
    """The JSON report halctl printed last (live progress may come before it)."""
    text = stdout.strip()
    starts = [0] if text.startswith("{") else []
    pos = text.rfind("\n{")
    if pos >= 0:
        starts.insert(0, pos + 1)
    for start in starts:
        try:
            doc = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


@dataclass
class RunSpec:
    incident: str
    host: str
    limit: str
    reason: str
    inventory: str | None
    timeout: float
    state_dir: Path
    check: bool = False


@dataclass
class Outcome:
    report: dict[str, Any] | None = None
    error: str | None = None
    rc: int | None = None


def preflight(spec: RunSpec) -> str | None:
    """A one-line reason the run cannot start, or None (blocking: call off the loop)."""
    if not spec.inventory:
        return "remediation.inventory is not set"
    if not os.path.exists(spec.inventory):
        return f"inventory {spec.inventory} does not exist"
    if importlib.util.find_spec("ansible_runner") is None:
        return "ansible-runner is not installed for this supervisor (pip install 'hal-o-swarm[ops]')"
    return None


def _kill_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def run_halctl(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
    """Run halctl for `spec` off the loop; stop it (process group) on timeout or supervisor shutdown."""
    problem = await asyncio.to_thread(preflight, spec)
    if problem:
        return Outcome(error=problem)
    await asyncio.to_thread(spec.state_dir.mkdir, parents=True, exist_ok=True)
    assert spec.inventory is not None
    argv = halctl_argv(spec.incident, spec.inventory, spec.limit, state_dir=spec.state_dir, timeout=spec.timeout,
                       check=spec.check)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", HALCTL_STATE_DIR=str(spec.state_dir))
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    env=env, start_new_session=True)
    except OSError as exc:
        return Outcome(error=f"cannot start halctl: {exc}")
    comm = asyncio.ensure_future(proc.communicate())
    stop = asyncio.ensure_future(stopping.wait())
    # halctl gets --timeout; this bound catches a halctl that does not honour it.
    done, _ = await asyncio.wait({comm, stop}, timeout=spec.timeout + 30, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if comm not in done:
        why = "interrupted: the supervisor is shutting down" if stopping.is_set() else \
            f"timed out after {spec.timeout + 30:.0f} s"
        _kill_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(comm), 5)
        except TimeoutError:
            _kill_group(proc, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(comm, 5)
        return Outcome(error=why, rc=proc.returncode)
    out, err = comm.result()
    report = parse_report(out.decode(errors="replace"))
    if report is None:
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "no report on stdout"
        return Outcome(error=f"halctl exited {proc.returncode}: {last[:500]}", rc=proc.returncode)
    return Outcome(report=report, rc=proc.returncode)
