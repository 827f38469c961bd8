"""Test harness for the env integration tests (imported by tests/integration/test_env_*.py).

- ``EnvSupervisorProc``: the real ``hal-supervisor`` process (its ``build_app`` mounts the env routes).
- ``EnvAgent``: a real agent-side ``EnvService`` behind a real ``SupervisorConnection`` (outbox,
  register with projects, commands), the way the agent app wires it.
- ``make_repo``: a real project directory (git repo with a commit, hooks, config, remote).
- ``halctl``: the real ``halctl`` entry point, run in a thread.
- ``ssh_inventory``: an Ansible inventory reaching a node over real SSH (an ``SshHost`` of the auth harness).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from halswarm.agent.connection import SupervisorConnection
from halswarm.agent.env import EnvService
from halswarm.agent.env.service import node_probes
from halswarm.agent.outbox import AsyncOutbox
from halswarm.protocol import Command, CommandResult, ProjectRef, Register
from tests.support.supervisor_proc import REPO, SupervisorProc

BIN = Path(sys.executable).parent


class EnvSupervisorProc(SupervisorProc):
    """The real ``hal-supervisor`` entry point (``build_app`` mounts the env routes)."""

    def start(self, timeout: float = 20.0) -> EnvSupervisorProc:
        self.write_config()
        env = dict(os.environ)
        env.pop("HAL_AUTH_TOKEN", None)
        env.pop("ANSIBLE_HOST_KEY_CHECKING", None)  # approvals check SSH host keys unless this says otherwise
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "hal-supervisor"), "--config", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self.wait_ready(timeout)
        return self


def tool_env(root: Path) -> dict[str, str]:
    """A clean environment for the agent's probes: its own bin dir first, git without user/system config."""
    bin_dir = root / "bin"
    home = root / "home"
    bin_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"), "LANG": "C.UTF-8"}


def probed(*names: str) -> dict[str, list[str]]:
    """An agent config ``env.probe_tools`` listing ``names``, each probed as ``<name> --version``."""
    return {n: [n, "--version"] for n in names}


def stand_in_tool(bin_dir: Path, name: str, version: str) -> Path:
    """A CLI that answers ``--version`` like real ones do."""
    p = bin_dir / name
    p.write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && {{ echo \"{name} version {version}\"; exit 0; }}\nexit 0\n")
    p.chmod(0o755)
    return p


def git(directory: Path, *args: str, env: Mapping[str, str]) -> str:
    out = subprocess.run(["git", "-C", str(directory), *args], env=dict(env), capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout


def make_repo(directory: Path, env: Mapping[str, str], *, branch: str = "main", remote: str | None = None,
              hooks: Mapping[str, str] | None = None, config: Mapping[str, str] | None = None,
              files: Mapping[str, str] | None = None) -> Path:
    """A git work tree with one commit; ``hooks`` name -> body (executable), ``files`` committed."""
    directory.mkdir(parents=True, exist_ok=True)
    git(directory, "init", "-q", "-b", branch, env=env)
    git(directory, "config", "user.email", "test@example.invalid", env=env)
    git(directory, "config", "user.name", "Test User", env=env)
    for k, v in (config or {}).items():
        git(directory, "config", k, v, env=env)
    for rel, text in (files or {"README.md": "# readme\n"}).items():
        p = directory / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    git(directory, "add", "-A", env=env)
    git(directory, "commit", "-q", "-m", "initial", env=env)
    if remote:
        git(directory, "remote", "add", "origin", remote, env=env)
    for name, body in (hooks or {}).items():
        h = directory / ".git" / "hooks" / name
        h.write_text(body)
        h.chmod(0o755)
    return directory


def tree_digest(directory: Path) -> dict[str, str]:
    """SHA-256 (and mode) of every file under ``directory`` except git's object store and index."""
    out: dict[str, str] = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if rel.startswith((".git/objects", ".git/logs")) or rel == ".git/index":
            continue
        if p.is_file():
            out[rel] = f"{p.stat().st_mode & 0o777:o}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
        elif p.is_dir():
            out[rel + "/"] = "dir"
    return out


@dataclass
class EnvAgent:
    sup: SupervisorProc
    node_id: str
    data_dir: Path
    projects: dict[str, str]
    base_env: dict[str, str]
    service: EnvService | None = None
    conn: SupervisorConnection | None = None
    outbox: AsyncOutbox | None = None
    commands: list[Command] = field(default_factory=list)
    # rewrites a command's result before it is sent (a compromised agent lying to the supervisor)
    tamper: Callable[[Command, CommandResult], CommandResult] | None = None
    # the node's agent config `env.probe_tools` (tool -> argv): the only extra programs its checks run
    probe_tools: dict[str, list[str]] = field(default_factory=dict)

    async def start(self) -> EnvAgent:
        self.outbox = await AsyncOutbox.open(self.data_dir)
        self.service = EnvService(projects=lambda: self.projects, data_dir=self.data_dir, node_id=self.node_id,
                                  base_env=self.base_env, probe_timeout=10.0, probes=node_probes(self.probe_tools))
        handlers = self.service.handlers()

        async def handle(cmd: Command) -> CommandResult:
            self.commands.append(cmd)
            h = handlers.get(cmd.type)
            if h is None:
                return CommandResult(cmd.command_id, "failure", error=f"unsupported command {cmd.type}")
            res = await h(cmd)
            return self.tamper(cmd, res) if self.tamper is not None else res

        async def register() -> Register:
            assert self.service is not None
            return Register(node_id=self.node_id, hostname="127.0.0.1", version="test",
                            projects=[ProjectRef(n, d) for n, d in sorted(self.projects.items())],
                            capabilities={"env": self.service.snapshot()})

        self.conn = SupervisorConnection(self.sup.ws_url, self.sup.agent_token, self.outbox, register_builder=register,
                                         command_handler=handle)
        self.conn.start()
        await self.conn.wait_ready(20)
        return self

    async def stop(self) -> None:
        conn, outbox = self.conn, self.outbox
        self.conn = self.outbox = None
        if conn is not None:
            await conn.close()
        if outbox is not None:
            await outbox.close()

    def of_type(self, ctype: str) -> list[Command]:
        return [c for c in self.commands if c.type == ctype]


REMOTE_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root, unreadable to the SSH user


def ssh_inventory(path: Path, node_id: str, *, host: str, port: int, user: str, key: Path, known_hosts: Path,
                  python: str = REMOTE_PYTHON) -> Path:
    """Write an inventory with ``node_id`` reached over SSH: key login, the host key checked strictly against
    ``known_hosts`` only, no ControlMaster (no ssh process outlives the run)."""
    path.write_text(yaml.safe_dump({"all": {"hosts": {node_id: {
        "ansible_connection": "ssh", "ansible_host": host, "ansible_port": port, "ansible_user": user,
        "ansible_ssh_private_key_file": str(key), "ansible_python_interpreter": python,
        "ansible_ssh_args": "-o ControlMaster=no -o BatchMode=yes",
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
                                   "-o StrictHostKeyChecking=yes",
    }}}}))
    return path


def aclient(sup: SupervisorProc, timeout: float = 120.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sup.api + "/api/v1", headers={"Authorization": f"Bearer {sup.token}"},
                             timeout=timeout)


def halctl_argv(sup: SupervisorProc, *args: str) -> list[str]:
    return [str(BIN / "halctl"), "--supervisor-url", sup.api, "--auth-token", sup.token, *args]


async def halctl(sup: SupervisorProc, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run halctl in a thread, so the agent side keeps running on this loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_")}
    return await asyncio.to_thread(subprocess.run, halctl_argv(sup, *args), capture_output=True, text=True,
                                   timeout=timeout, env=env, cwd=REPO)


async def wait_api(sup: SupervisorProc, path: str, pred: Callable[[Any], bool], timeout: float = 30.0,
                   params: Mapping[str, Any] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    async with aclient(sup, 10) as c:
        while time.monotonic() < deadline:
            r = await c.get(path, params=params)
            last = r.json()
            if r.status_code == 200 and pred(last.get("data")):
                return last["data"]
            await asyncio.sleep(0.2)
    raise AssertionError(f"GET {path}: condition not met within {timeout} s; last: {last}")


async def events(sup: SupervisorProc, etype: str, **params: Any) -> list[dict[str, Any]]:
    async with aclient(sup, 10) as c:
        r = await c.get("/events", params={"type": etype, "limit": 1000, **params})
        assert r.status_code == 200, r.text
        return r.json()["data"]
