"""A deployed fleet for remediation drills: one supervisor and one agent under real systemd.

Two podman instances (systemd as PID 1, ``--network none``; the agent joins the supervisor's network
namespace, so the agent reaches the supervisor on 127.0.0.1 and a firewall rule in that namespace is
real and touches nothing outside it), deployed with the collection's ``deploy.yml`` through an nsenter
inventory. Names carry a prefix so that several fleets can coexist on one machine.

The supervisor's HTTP API lives in the instances' namespace, out of the host's reach; ``ApiProxy``
listens on a host loopback port and relays each connection through ``nsenter -n`` into that
namespace, so the real ``halctl`` (API client and ops runner) talks to the real supervisor.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.fleet.env import ARTIFACTS, AUTH_TOKEN, IMAGE, ROOT, WHEELHOUSE, ansible_env, run, wheels
from tests.support.fleet.molecule import container_pid, podman_exec
from tests.support.waiting import wait_for

SUP_DB = "/var/lib/hal-o-swarm/supervisor/supervisor.db"
SUP_CONFIG = "/etc/hal-o-swarm/supervisor.config.json"
AGENT_CONFIG = "/etc/hal-o-swarm/agent.config.json"
SUP_UNIT = "hal-supervisor.service"
AGENT_UNIT = "hal-agent.service"

_API_PROBE = """
import json, sys, urllib.request, urllib.error
req = urllib.request.Request("http://127.0.0.1:" + sys.argv[1] + sys.argv[2], method=sys.argv[4],
                             data=(sys.argv[5].encode() if len(sys.argv) > 5 else None),
                             headers={"Authorization": "Bearer " + sys.argv[3], "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(json.dumps({"status": r.status, "body": json.load(r)}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": json.loads(e.read() or b"null")}))
except OSError as e:
    print(json.dumps({"status": 0, "body": str(e)}))
"""


def api_probe(host: str, path: str, method: str = "GET", body: Any = None, *, port: int = 8421) -> dict[str, Any]:
    """The supervisor API on `host`'s loopback, asked from inside the host (its namespace is out of the test
    host's reach): ``{"status": ..., "body": ...}``, status 0 when nothing answered."""
    args = ["python3", "-c", _API_PROBE, str(port), path, AUTH_TOKEN, method]
    if body is not None:
        args.append(json.dumps(body))
    return json.loads(podman_exec(host, *args, timeout=120))


def wait_booted(name: str) -> None:
    """Wait until systemd in container `name` is up (running or degraded)."""
    # Asked too early, systemctl finds no bus yet and prints nothing (seen under load): ask again.
    def booted() -> bool:
        state = podman_exec(name, "systemctl", "is-system-running", "--wait", timeout=120, check=False)
        return state.strip() in ("running", "degraded")

    wait_for(booted, f"{name}: systemd running or degraded", 240, interval=1.0)

# Relay stdin/stdout <-> 127.0.0.1:PORT, run by nsenter inside the instances' network namespace.
_RELAY = """
import os, socket, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.settimeout(None)
def up():
    while (b := os.read(0, 65536)):
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while (b := s.recv(65536)):
    os.write(1, b)
"""


class ApiProxy:
    """Host loopback port -> 127.0.0.1:``port`` inside the network namespace of process ``pid``."""

    def __init__(self, pid: int, port: int = 8421) -> None:
        self.pid, self.port = pid, port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._thread = threading.Thread(target=self._accept, name="api-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            proc = subprocess.Popen(["nsenter", "-t", str(self.pid), "-n", sys.executable, "-c", _RELAY,
                                     str(self.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
            self._procs = [p for p in self._procs if p.poll() is None] + [proc]
            threading.Thread(target=self._pump, args=(client, proc), daemon=True).start()

    @staticmethod
    def _pump(client: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None

        def down() -> None:
            try:
                while b := os.read(proc.stdout.fileno(), 65536):  # type: ignore[union-attr]
                    client.sendall(b)
            except OSError:
                pass
            finally:
                try:
                    client.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        t = threading.Thread(target=down, daemon=True)
        t.start()
        try:
            while b := client.recv(65536):
                proc.stdin.write(b)
                proc.stdin.flush()
        except OSError:
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
        t.join(30)
        client.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    def close(self) -> None:
        self._listener.close()
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


@dataclass
class DrillFleet:
    """Supervisor ``<prefix>-sup`` and agent ``<prefix>-agent`` (the agent's node id is its name)."""

    prefix: str
    workdir: Path
    extra_vars: dict[str, Any] = field(default_factory=dict)
    proxy: ApiProxy | None = None
    _runs: int = 0

    @property
    def sup(self) -> str:
        return f"{self.prefix}-sup"

    @property
    def agent(self) -> str:
        return f"{self.prefix}-agent"

    @property
    def hosts(self) -> tuple[str, str]:
        return self.sup, self.agent

    @property
    def inventory(self) -> Path:
        return self.workdir / "inventory.yml"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    def env(self, **extra: str) -> dict[str, str]:
        w = wheels()
        # No HAL_AUTH_TOKEN here: the nsenter connection hands the controller's environment to every
        # command on the hosts, where the daemons' own --validate reads it as the shared agent token.
        env = ansible_env(HAL_RELEASE_WHEEL=str(w.current),
                          HAL_RELEASE_WHEELHOUSE=str(WHEELHOUSE), HALCTL_AUTH_TOKEN=AUTH_TOKEN,
                          HOME=str(self.workdir / "home"))
        if self.proxy is not None:
            env["HALCTL_SUPERVISOR_URL"] = self.proxy.url
        env.update(extra)
        return env

    # ----- lifecycle -----

    def create(self) -> None:
        self.destroy()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "home").mkdir(exist_ok=True)
        for name, network in ((self.sup, "none"), (self.agent, f"container:{self.sup}")):
            run(["podman", "run", "-d", "--name", name, "--hostname", name, "--network", network,
                 "--systemd", "always", "--label", "halswarm-ci=1", "--label", f"halswarm-drill={self.prefix}",
                 IMAGE, "/sbin/init"], timeout=120, log=ARTIFACTS / f"drill-{name}-create.log")
        for name in self.hosts:
            wait_booted(name)
            other = self.agent if name == self.sup else self.sup
            podman_exec(name, "sh", "-c", f"grep -qw {other} /etc/hosts || echo '127.0.0.1 {other}' >> /etc/hosts")
        self.write_inventory()
        self.proxy = ApiProxy(container_pid(self.sup))

    def write_inventory(self) -> Path:
        w = wheels()
        doc = {"all": {
            "vars": {
                "ansible_connection": "community.docker.nsenter",
                "ansible_python_interpreter": "/usr/bin/python3",
                "hal_auth_token": AUTH_TOKEN,
                "hal_release_wheel": str(w.current),
                "hal_release_wheelhouse": str(WHEELHOUSE),
                "hal_supervisor_address": "127.0.0.1",
                "hal_agent_opencode_manage": False,
                # The supervisor remediates the agent host itself, over SSH as production does: its runner key is
                # authorized for the agent's remediation login. Both instances share one network namespace, so
                # the agent's sshd listens on 127.0.0.1:2222 (the supervisor instance runs no sshd at all).
                "hal_supervisor_remediation_ssh": True,
                "hal_agent_remediation_sshd_listen": ["127.0.0.1:2222"],
                "hal_agent_remediation_ssh_host": "127.0.0.1",
                "hal_agent_remediation_ssh_port": 2222,
                # Liveness in 20 s instead of the default 90 s: faults that silence a connection without
                # closing it (a DROP rule) show the node offline sooner; same code path, shorter wait.
                # Retention keeps events a year: the supervisor's own purge (first pass 60 s after each
                # start, and drills restart it often) must not race the drills that plant 60-day-old
                # events for the high-memory and high-latency remediations to archive.
                "hal_supervisor_config_extra": {"server": {"heartbeat_interval_sec": 5,
                                                           "heartbeat_timeout_count": 4},
                                                "retention": {"events_days": 365}},
                **self.extra_vars,
            },
            "hosts": {h: {"ansible_nsenter_pid": container_pid(h)} for h in self.hosts},
            "children": {"hal_supervisors": {"hosts": {self.sup: None}},
                         "hal_agents": {"hosts": {self.agent: None}}},
        }}
        self.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.inventory

    def deploy(self, timeout: float = 900) -> None:
        run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory),
             str(ROOT / "playbooks" / "deploy.yml")], env=self.env(), timeout=timeout,
            log=ARTIFACTS / f"drill-{self.prefix}-deploy.log", cwd=ROOT)
        assert self.wait_node_online(120), f"{self.agent} did not come online after deploy"

    def destroy(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        for name in (self.agent, self.sup):
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=120, check=False)

    # ----- probes -----

    def exec(self, host: str, *cmd: str, timeout: float = 120, check: bool = True) -> str:
        return podman_exec(host, *cmd, timeout=timeout, check=check)

    def sh(self, host: str, script: str, timeout: float = 120, check: bool = True) -> str:
        return podman_exec(host, "sh", "-c", script, timeout=timeout, check=check)

    def active(self, host: str, unit: str) -> str:
        return self.exec(host, "systemctl", "is-active", unit, check=False).strip()

    def journal(self, host: str, unit: str, *, since: float | None = None, lines: int | None = None) -> str:
        """The unit's journal (systemd's own lines about it too), from ``since`` (epoch s) or the last ``lines``."""
        args = ["journalctl", "-u", unit, "--no-pager"]
        if since is not None:
            args += ["--since", f"@{int(since)}"]
        if lines is not None:
            args += ["-n", str(lines)]
        return self.exec(host, *args, check=False)

    def api(self, path: str, method: str = "GET", body: Any = None) -> dict[str, Any]:
        return api_probe(self.sup, path, method, body)

    def node_status(self, node: str | None = None) -> str | None:
        res = self.api(f"/api/v1/nodes/{node or self.agent}")
        if res["status"] != 200:
            return None
        return res["body"]["data"].get("status")

    def wait_node_online(self, timeout: float = 90) -> bool:
        try:
            wait_for(lambda: self.node_status() == "online", f"{self.agent} online", timeout, interval=1)
        except AssertionError:
            return False
        return True

    def sha256(self, host: str, *paths: str) -> dict[str, str]:
        out = self.exec(host, "sh", "-c", "sha256sum " + " ".join(paths) + " 2>/dev/null; true")
        return {p: h for h, p in (line.split(None, 1) for line in out.splitlines() if line.strip())}

    def unit_state(self, host: str, unit: str) -> dict[str, str]:
        out = self.exec(host, "systemctl", "show", unit, "-p", "ActiveState", "-p", "MainPID", "-p",
                        "NRestarts", "-p", "MemoryMax", "-p", "FragmentPath", "-p", "DropInPaths")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    # ----- halctl -----

    def halctl(self, *args: str, log: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "tests.support.fleet.halctl", *args], env=self.env(**env),
                   timeout=timeout, log=ARTIFACTS / log, check=False, cwd=ROOT)

    def remediate(self, incident: str, *args: str, timeout: float = 600, **env: str) -> tuple[int, dict[str, Any]]:
        """``halctl --output json remediate INCIDENT -i INV --state-dir S ARGS``: (exit code, report).

        stdout (progress, then the JSON report) and stderr (warnings, e.g. a supervisor that is down) are
        kept apart so a warning never spoils the report; both go to a log named after the run."""
        self._runs += 1
        log = ARTIFACTS / f"drill-{self.prefix}-{self._runs:03d}-{incident}.log"
        cmd = [sys.executable, "-m", "tests.support.fleet.halctl", "--output", "json", "remediate", incident,
               "-i", str(self.inventory), "--state-dir", str(self.state_dir), *args]
        try:
            proc = subprocess.run(cmd, env=self.env(**env), cwd=ROOT, text=True, capture_output=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"halctl remediate {incident} timed out after {timeout:.0f}s") from exc
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\nrc={proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        return proc.returncode, parse_report(proc.stdout, proc.stderr)


def parse_report(stdout: str, stderr: str = "") -> dict[str, Any]:
    """The JSON report halctl prints last, after the live progress lines (which may hold JSON-looking
    diff lines): the last line that opens a document from which the rest of stdout parses."""
    lines = stdout.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                doc = json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
            if isinstance(doc, dict) and "incident" in doc:
                return doc
    raise AssertionError(f"no JSON report in halctl output:\n{stdout[-3000:]}\n{stderr[-2000:]}")
