"""A private PostgreSQL cluster for tests: Debian's `initdb`/`pg_ctl` in a temp directory, listening on
127.0.0.1 at a free port and on a unix socket inside that directory, stopped and removed at the end.

initdb refuses to run as root, so under root the cluster belongs to the `postgres` system user that
Debian's package creates (the temp directory is made for it). The server is stopped by its PID (read
from postmaster.pid), never by name. Each test gets a database of its own (`fresh_database`), so tests
do not see each other's rows and the server is started once per session.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.support.ports import free_port

START_TIMEOUT_SEC = 90.0
PASSWORD_USER = "hal_pw"


def pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb, or None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class PostgresCluster:
    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="hal-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.port = free_port()
        self.user = "hal"
        self.password = secrets.token_hex(16)
        self.pid: int | None = None
        self._run_as = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _cmd(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        kw: dict[str, object] = {}
        if self._run_as is not None:
            kw = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False,
                              cwd=self.root, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}, **kw)  # type: ignore[call-overload]

    def start(self) -> None:
        self.sock.mkdir()
        if self._run_as is not None:
            for p in (self.root, self.sock):
                os.chown(p, self._run_as.pw_uid, self._run_as.pw_gid)
        os.chmod(self.root, 0o700)
        init = self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
        conf = (f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.sock}'\n"
                "fsync = on\nsynchronous_commit = on\nmax_connections = 100\nshared_buffers = 32MB\n"
                "logging_collector = off\n")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write(conf)
        # Loopback and socket only. PASSWORD_USER must give its password over TCP (scram), so tests of
        # password_file/password_env prove the password went through; the rest trust the loopback.
        (self.data / "pg_hba.conf").write_text(
            f"local all all trust\nhost all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n")
        log = self.root / "server.log"
        start = self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w",
                          "-t", str(int(START_TIMEOUT_SEC)), "start", timeout=START_TIMEOUT_SEC + 30)
        if start.returncode != 0:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else start.stderr
            raise RuntimeError(f"pg_ctl start failed: {tail.strip()}")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{self.password}'")

    def password_database(self) -> str:
        """A new database owned by PASSWORD_USER; its URL (without the password, which is `self.password`)."""
        import psycopg

        name = "p_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {PASSWORD_USER}')
        return f"postgresql://{PASSWORD_USER}@127.0.0.1:{self.port}/{name}"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def fresh_database(self) -> str:
        """A new empty database on the cluster; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL if it lingers; then the directory goes."""
        pid, self.pid = self.pid, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; pg_ctl's child is reparented, so look at its state.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True
