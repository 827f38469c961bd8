"""Test harness for the auth integration tests (imported by tests/integration/test_auth_*.py).

- ``AuthSupervisorProc``: the real ``hal-supervisor`` process (with a shorter drift poll when asked).
- ``AgentSide``: a real agent-side ``AuthService`` behind a real ``SupervisorConnection`` (outbox,
  register, commands, ``on_ready``), the way the agent app wires it.
- ``stand_in_tools``: shell-script CLIs answering like the real ones, for deterministic runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from halswarm.agent.auth import AuthService, RunAs
from halswarm.agent.connection import SupervisorConnection
from halswarm.agent.outbox import AsyncOutbox
from halswarm.protocol import Command, CommandResult, Register
from tests.support.supervisor_proc import REPO, SupervisorProc

RECORDED = Path(__file__).parent / "recorded"

LAUNCHER = """
import os
import sys
import halswarm.supervisor.auth_api as auth_api
if os.environ.get("HAL_TEST_DRIFT_POLL"):
    auth_api.WATCH_INTERVAL = float(os.environ["HAL_TEST_DRIFT_POLL"])
from halswarm.supervisor.main import main
sys.exit(main())
"""

HALCTL = """
import sys
from halswarm.cli.main import add_output_option, cli, run
from halswarm.cli.auth_cmd import auth
if "auth" not in cli.commands:
    cli.add_command(auth)
    add_output_option(auth)
sys.exit(run(sys.argv[1:]))
"""


class AuthSupervisorProc(SupervisorProc):
    """``drift_poll`` (set before ``start``): the drift watcher's fallback poll interval in seconds."""

    def start(self, timeout: float = 20.0) -> AuthSupervisorProc:
        self.write_config()
        env = dict(os.environ)
        env.pop("HAL_AUTH_TOKEN", None)
        env.pop("HAL_TEST_DRIFT_POLL", None)
        if getattr(self, "drift_poll", None) is not None:
            env["HAL_TEST_DRIFT_POLL"] = str(self.drift_poll)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, "--config", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self.wait_ready(timeout)
        return self


def halctl_argv(sup: SupervisorProc, *args: str) -> list[str]:
    return [sys.executable, "-c", HALCTL, "--supervisor-url", sup.api, "--auth-token", sup.token, *args]


@dataclass
class AgentSide:
    sup: SupervisorProc
    node_id: str
    data_dir: Path
    service_kwargs: dict[str, Any] = field(default_factory=dict)
    auth: AuthService | None = None
    conn: SupervisorConnection | None = None
    outbox: AsyncOutbox | None = None
    commands: list[Command] = field(default_factory=list)

    async def start(self) -> AgentSide:
        self.outbox = await AsyncOutbox.open(self.data_dir)
        holder: dict[str, SupervisorConnection] = {}

        def send(msg: Any) -> None:
            holder["conn"].send_frame(msg)

        async def emit(etype: str, data: dict[str, Any]) -> None:
            assert self.outbox is not None
            await self.outbox.append(None, etype, None, None, data)

        kwargs = {"interval": 3600.0} | self.service_kwargs
        self.auth = AuthService(None, send, None, node_id=self.node_id, data_dir=str(self.data_dir),
                                emit_event=emit, **kwargs)
        handlers = self.auth.handlers()

        async def handle(cmd: Command) -> CommandResult:
            self.commands.append(cmd)
            h = handlers.get(cmd.type)
            if h is None:
                return CommandResult(cmd.command_id, "failure", error=f"unsupported command {cmd.type}")
            return await h(cmd)

        async def register() -> Register:
            assert self.auth is not None
            return Register(node_id=self.node_id, hostname="127.0.0.2", version="test",
                            capabilities={"auth": self.auth.snapshot()})

        self.conn = SupervisorConnection(self.sup.ws_url, self.sup.agent_token, self.outbox, register_builder=register,
                                         command_handler=handle, on_ready=self.auth.on_ready)
        holder["conn"] = self.conn
        self.auth.start()
        await asyncio.wait_for(self.auth.first_report.wait(), 60)
        self.conn.start()
        await self.conn.wait_ready(20)
        return self

    async def stop(self) -> None:
        auth, conn, outbox = self.auth, self.conn, self.outbox
        self.auth = self.conn = self.outbox = None  # type: ignore[assignment]
        if auth is not None:
            await auth.stop()
        if conn is not None:
            await conn.close()
        if outbox is not None:
            await outbox.close()


def aclient(sup: SupervisorProc, timeout: float = 60.0) -> httpx.AsyncClient:
    """The API client for async tests (a sync one would block the loop the agent side runs on)."""
    return httpx.AsyncClient(base_url=sup.api, headers={"Authorization": f"Bearer {sup.token}"}, timeout=timeout)


async def halctl(sup: SupervisorProc, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run halctl (with the auth group mounted) in a thread, so the agent side keeps running."""
    return await asyncio.to_thread(subprocess.run, halctl_argv(sup, *args), capture_output=True, text=True,
                                   timeout=timeout)


async def wait_api(sup: SupervisorProc, path: str, pred: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    async with httpx.AsyncClient(base_url=sup.api, headers={"Authorization": f"Bearer {sup.token}"},
                                 timeout=10) as c:
        while time.monotonic() < deadline:
            r = await c.get("/api/v1" + path)
            last = r.json()
            if r.status_code == 200 and pred(last.get("data")):
                return last["data"]
            await asyncio.sleep(0.2)
    raise AssertionError(f"GET {path}: condition not met within {timeout} s; last: {last}")


# ----- stand-in CLIs (same answers as the real ones, see reference/peers.md) -----

CLAUDE = """#!/bin/sh
[ "$1" = --version ] && { echo "2.1.197 (Claude Code)"; exit 0; }
if [ -n "$ANTHROPIC_API_KEY" ]; then
  echo '{"loggedIn": true, "authMethod": "api_key", "apiProvider": "firstParty", "apiKeySource": "ANTHROPIC_API_KEY"}'
  exit 0
fi
echo '{"loggedIn": false, "authMethod": "none", "apiProvider": "firstParty"}'; exit 1
"""
CODEX = """#!/bin/sh
[ "$1" = --version ] && { echo "codex-cli 0.171.0"; exit 0; }
if [ "$1 $2" = "login status" ]; then
  [ -f "$HOME/.codex/auth.json" ] && { echo "API key configured - sk-***abcde" >&2; exit 0; }
  echo "Not logged in" >&2; exit 1
fi
if [ "$1 $2" = "login --device-auth" ]; then
  cat "$HAL_RECORDED/codex_device_auth_challenge.stdout.txt"; sleep 1
  mkdir -p "$HOME/.codex"; echo '{"OPENAI_API_KEY": "sk-from-device"}' > "$HOME/.codex/auth.json"; exit 0
fi
exit 2
"""
OPENCODE = """#!/bin/sh
[ "$1" = --version ] && { echo "1.18.33"; exit 0; }
[ "$1 $2" = "auth list" ] && { cat "$HAL_RECORDED/opencode_auth_list_empty.txt"; exit 0; }
exit 2
"""


def stand_in_tools(root: Path) -> dict[str, str]:
    """Write the stand-ins under ``root``; returns the base env for an AuthService using them."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("claude", CLAUDE), ("codex", CODEX), ("opencode", OPENCODE)):
        p = bin_dir / name
        p.write_text(body)
        p.chmod(0o755)
    home = root / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "HAL_RECORDED": str(RECORDED)}


# ----- a real sshd on 127.0.0.2 and a throwaway user -----

def free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class SshHost:
    """sshd on 127.0.0.2 for ``user`` (the operator, key login). With ``service`` set, also a service user
    like the role's (shell /usr/sbin/nologin, no authorized_keys, HOME ``home``) and a sudoers drop-in
    letting ``user`` run commands as it (``password``: sudo asks for it; else NOPASSWD)."""

    workdir: Path
    user: str
    service: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str = "127.0.0.2"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    created_run_sshd: bool = False
    created_users: list[str] = field(default_factory=list)
    sudoers: Path | None = None

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    def run_as(self) -> RunAs:
        return RunAs.lookup(self.service or self.user)

    def _useradd(self, name: str, home: Path, shell: str) -> None:
        subprocess.run(["useradd", "--home-dir", str(home), "--create-home", "--shell", shell,
                        "--password", "*", "--user-group", name], check=True, capture_output=True)
        self.created_users.append(name)

    def start(self) -> SshHost:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        if self.service:
            self._useradd(self.service, self.home, "/usr/sbin/nologin")
            self._useradd(self.user, self.workdir / "operator-home", "/bin/sh")
            if self.password:
                subprocess.run(["chpasswd"], input=f"{self.user}:{self.password}\n".encode(), check=True,
                               capture_output=True)
            sudoers_d = Path("/etc/sudoers.d")
            sudoers_d.mkdir(mode=0o750, exist_ok=True)
            drop_in = sudoers_d / f"hal-test-{self.user}"
            tag = "" if self.password else "NOPASSWD: "
            drop_in.write_text(f"{self.user} ALL=({self.service}) {tag}ALL\n")
            drop_in.chmod(0o440)
            self.sudoers = drop_in
            subprocess.run(["visudo", "-cf", str(drop_in)], check=True, capture_output=True)
        else:
            self._useradd(self.user, self.home, "/bin/sh")
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"hal-test-{name}",
                            "-f", str(self.workdir / name)], check=True, capture_output=True)
        keys = self.workdir / "authorized_keys"
        keys.mkdir(exist_ok=True)
        (keys / self.user).write_text((self.workdir / "client_key.pub").read_text())
        self.port = free_port_on(self.host)
        host_pub = (self.workdir / "host_key.pub").read_text().split()
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        cfg = self.workdir / "sshd_config"
        cfg.write_text("\n".join([
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.workdir / 'host_key'}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {keys}/%u",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PermitRootLogin no", f"AllowUsers {self.user}",
            "LogLevel VERBOSE", "",
        ]))
        if not Path("/run/sshd").exists():
            Path("/run/sshd").mkdir(mode=0o755)
            self.created_run_sshd = True
        log = open(self.workdir / "sshd.log", "ab")  # noqa: SIM115 - closed right after the spawn
        try:
            self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], stdout=log,
                                         stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {self.log_tail()}")
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"sshd not listening: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.workdir / "sshd.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.sudoers is not None:
            self.sudoers.unlink(missing_ok=True)
        for name in self.created_users:
            # sessions of the test users that outlived the test (none expected): end them by pid
            out = subprocess.run(["pgrep", "-u", name], capture_output=True, text=True).stdout.split()
            for pid in out:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["userdel", name], capture_output=True)
        if self.created_run_sshd:
            try:
                Path("/run/sshd").rmdir()
            except OSError:
                pass
