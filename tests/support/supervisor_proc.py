"""Run the real `hal-supervisor` as a child process on loopback, for integration tests."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
ADMIN_NAME = "test-admin"
BIN = Path(sys.executable).parent


@dataclass
class SupervisorProc:
    workdir: Path
    # `token` is the admin operator token of the HTTP API (named ADMIN_NAME, the audit actor); agents use
    # `agent_token` (the shared server.auth_token). Operators and agents never share a credential (issue 14).
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    agent_token: str = field(default_factory=lambda: secrets.token_hex(32))
    ws_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    extra: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    tls_ca: Path | None = None  # set when the config serves TLS: the API is https and verified with it
    # What `python` runs: the supervisor's entry point, or a test wrapper of it (tests/support/noon_supervisor.py).
    launcher: list[str] = field(default_factory=lambda: ["-m", "halswarm.supervisor.main"])

    @property
    def db_path(self) -> Path:
        return self.workdir / "supervisor.db"

    @property
    def config_path(self) -> Path:
        return self.workdir / "supervisor.config.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "supervisor.log"

    @property
    def api(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls_ca else 'ws'}://127.0.0.1:{self.ws_port}/ws/agent"

    @property
    def verify(self) -> Any:
        if self.tls_ca is None:
            return True
        import ssl

        return ssl.create_default_context(cafile=str(self.tls_ca))

    def write_config(self) -> None:
        cfg: dict[str, Any] = {
            "server": {
                "host": "127.0.0.1", "port": self.ws_port, "http_port": self.http_port,
                "auth_token": self.agent_token, "heartbeat_interval_sec": 30, "heartbeat_timeout_count": 3,
            },
            "security": {"operators": [{"name": ADMIN_NAME, "role": "admin", "token": self.token}]},
            "database": {"path": str(self.db_path)},
            "log": {"level": "debug", "format": "json"},
        }
        for key, value in self.extra.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(cfg, indent=2))
        self.config_path.chmod(0o600)

    def start(self, timeout: float = 20.0) -> SupervisorProc:
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        env = dict(os.environ)
        env.pop("HAL_AUTH_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, *self.launcher, "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {self.proc.returncode}:\n{self.log_tail()}")
            return httpx.get(self.api + "/readyz", timeout=1, verify=self.verify).status_code == 200

        try:
            wait_for(ready, "the supervisor ready", timeout)
        except AssertionError as exc:
            raise TimeoutError(f"{exc}:\n{self.log_tail()}") from None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, headers={"Authorization": f"Bearer {self.token}"}, timeout=30,
                            verify=self.verify)


# The real supervisor with one knob the config does not have: the credential-drift watcher's fallback poll
# (features/tool_auth/watcher.WATCH_INTERVAL, read when the watcher is built at start).
DRIFT_LAUNCHER = """
import os
import sys
import halswarm.supervisor.features.tool_auth.watcher as drift_watcher
drift_watcher.WATCH_INTERVAL = float(os.environ["HAL_TEST_DRIFT_POLL"])
from halswarm.supervisor.main import main
sys.exit(main())
"""


@dataclass
class InstalledSupervisorProc(SupervisorProc):
    """The ``hal-supervisor`` console script in the environment of an installed node: no token from the
    environment, SSH host keys checked (no ``ANSIBLE_HOST_KEY_CHECKING``). ``drift_poll`` (seconds): the
    credential-drift watcher's fallback poll interval, for tests that must not see its poll."""

    drift_poll: float | None = None

    def start(self, timeout: float = 20.0) -> InstalledSupervisorProc:
        self.write_config()
        env = dict(os.environ)
        for name in ("HAL_AUTH_TOKEN", "ANSIBLE_HOST_KEY_CHECKING", "HAL_TEST_DRIFT_POLL"):
            env.pop(name, None)
        argv = [str(BIN / "hal-supervisor")]
        if self.drift_poll is not None:
            env["HAL_TEST_DRIFT_POLL"] = str(self.drift_poll)
            argv = [sys.executable, "-c", DRIFT_LAUNCHER]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*argv, "--config", str(self.config_path)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self.wait_ready(timeout)
        return self
