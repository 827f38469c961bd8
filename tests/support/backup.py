"""Harness of the data-safety integration tests: halctl as a subprocess (optionally as another user), the
supervisor as a "service" with stop/start commands, playbooks through ansible-runner, test databases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.agentsim import SimAgent
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "collections"
PLAYBOOKS = COLLECTIONS / "ansible_collections/halswarm/ops/playbooks"
VENV_BIN = Path(sys.executable).parent

# halctl with the data-safety commands registered even before halswarm/cli/main.py lists them.
_BOOT = (
    "import sys\n"
    "from halswarm.cli import main as m\n"
    "from halswarm.cli.backup_cmd import backup, restore\n"
    "if 'backup' not in m.cli.commands:\n"
    "    m.cli.add_command(backup); m.cli.add_command(restore); m.add_output_option(m.cli)\n"
    "sys.argv[0] = 'halctl'\n"
    "m.main(sys.argv[1:])\n"
)


def halctl(*args: str, user: str | None = None, timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run halctl; with `user`, as that user through setpriv (no capabilities)."""
    cmd = [sys.executable, "-c", _BOOT, *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user if user != 'nobody' else 'nogroup'}",
               "--clear-groups", *cmd]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("HALCTL_AUTH_TOKEN", None)
    if user:  # the other user's own (empty) home, not root's halctl config
        full_env["HOME"] = "/nonexistent"
        full_env.pop("XDG_CONFIG_HOME", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)


def halctl_json(*args: str, **kw: Any) -> Any:
    res = halctl(*args, "-o", "json", **kw)
    assert res.returncode == 0, f"rc={res.returncode}\nstdout={res.stdout}\nstderr={res.stderr}"
    return json.loads(res.stdout)


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line halctl prints on failure (no traceback)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    return errors[0]


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def count(db: Path | str, sql: str = "SELECT count(*) FROM events", params: tuple[Any, ...] = ()) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------------
# the supervisor as a service with stop/start commands (like an init script)

_SERVICE = r'''
import os, signal, subprocess, sys, time
PIDFILE, LOG, CONFIG, REPO = sys.argv[2:6]

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False

def pid():
    try:
        return int(open(PIDFILE).read())
    except (OSError, ValueError):
        return None

if sys.argv[1] == "start":
    p = pid()
    if p and alive(p):
        sys.exit(0)
    log = open(LOG, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--config", CONFIG],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": REPO})
    open(PIDFILE, "w").write(str(proc.pid))
elif sys.argv[1] == "stop":
    p = pid()
    if p and alive(p):
        os.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while alive(p) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(p):
            os.kill(p, signal.SIGKILL)
'''


class SupervisorService:
    """A real hal-supervisor controlled by `start`/`stop` commands and a pid file."""

    def __init__(self, workdir: Path) -> None:
        self.sup = SupervisorProc(workdir)
        self.sup.write_config()
        self.script = workdir / "service.py"
        self.script.write_text(_SERVICE)
        self.pidfile = workdir / "supervisor.pid"

    def command(self, verb: str) -> str:
        return " ".join([sys.executable, str(self.script), verb, str(self.pidfile), str(self.sup.log_path),
                         str(self.sup.config_path), str(REPO)])

    @property
    def stop_command(self) -> str:
        return self.command("stop")

    @property
    def start_command(self) -> str:
        return self.command("start")

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        subprocess.run(self.start_command.split(), check=True, timeout=30)
        self.sup.wait_ready(30)

    def stop(self) -> None:
        subprocess.run(self.stop_command.split(), check=True, timeout=60)

    def kill(self) -> None:
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(AssertionError):  # best effort: it got SIGKILL
                wait_for(lambda: not Path(f"/proc/{pid}").exists(), f"supervisor {pid} gone", 5, interval=0.05)

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(self.sup.api + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


# ----------------------------------------------------------------------------------------------
# data


async def send_events(sup: SupervisorProc, node_id: str, first: int, last: int, *, size: int = 100,
                      big_every: int = 0) -> int:
    """Send events first..last from a simulated agent and wait until all are acknowledged."""
    agent = SimAgent(sup.ws_url, sup.agent_token, node_id, projects=[("proj", "/srv/proj")])
    await agent.connect(last_acked_seq=first - 1)
    try:
        for seq in range(first, last + 1):
            payload = "d" * (size * 40 if big_every and seq % big_every == 0 else size)
            await agent.send_event(seq, "message.updated", session_id="ses_1", project="proj",
                                   data={"seq": seq, "text": payload})
            if seq % 50 == 0:
                await asyncio.sleep(0)
        await agent.wait_acked(last, timeout=60)
        return agent.acked
    finally:
        await agent.close()


def populate(sup: SupervisorProc, node_id: str, first: int, last: int, **kw: Any) -> int:
    return asyncio.run(send_events(sup, node_id, first, last, **kw))


# ----------------------------------------------------------------------------------------------
# ansible-runner


def run_playbook(playbook: Path | str, extravars: dict[str, Any], tmp: Path, *, check: bool = False,
                 timeout: int = 300, inventory: dict[str, Any] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Run a playbook against localhost with ansible-runner (or the given inventory, whose hosts the play
    must still reach locally); returns (runner, task results)."""
    import ansible_runner

    private = tmp / f"runner-{time.monotonic_ns()}"
    private.mkdir(parents=True)
    results: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        if event.get("event") in ("runner_on_ok", "runner_on_failed", "runner_item_on_ok", "runner_item_on_failed"):
            results.append({"task": data.get("task"), "event": event.get("event"), "res": data.get("res") or {}})
        return True

    runner = ansible_runner.run(
        private_data_dir=str(private), playbook=str(playbook),
        inventory=inventory or f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}",
        extravars=extravars, quiet=True, event_handler=on_event, cmdline="--check" if check else None,
        envvars={"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                 "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "PYTHONPATH": str(REPO),
                 "ANSIBLE_LOCAL_TEMP": str(private / "tmp"), "ANSIBLE_REMOTE_TEMP": str(private / "rtmp")},
        settings={"job_timeout": timeout, "suppress_env_files": True},
    )
    return runner, results


def task_result(results: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """The result of the last task whose name starts with `prefix`; `_failed` tells how it ended."""
    found = [{**r["res"], "_failed": r["event"].endswith("_failed")} for r in results
             if (r["task"] or "").startswith(prefix)]
    assert found, f"no result for task {prefix!r}: {[r['task'] for r in results]}"
    return found[-1]
