"""A real sshd on 127.0.0.2 with throwaway users (root only), and an Ansible inventory reaching a node
through it: the SSH paths of env approvals and auth logins, tested for real."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from halswarm.agent.auth import RunAs
from tests.support.ports import free_port_on
from tests.support.waiting import wait_for

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
        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {self.log_tail()}")
            with socket.socket() as s:
                return s.connect_ex((self.host, self.port)) == 0

        try:
            wait_for(listening, "sshd listening", 15, interval=0.05)
        except AssertionError as exc:
            raise TimeoutError(f"{exc}: {self.log_tail()}") from None
        return self

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
