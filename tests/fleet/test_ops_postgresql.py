"""The postgresql role converged for real in a throwaway podman container with systemd and no network (the
fleet image with Debian's PostgreSQL packages installed at set-up time, scripts/ci-setup.sh), never on this
host: playbooks/postgresql.yml through the podman connection, then again (idempotent: nothing changed), then
`--check --diff` (nothing to change); inside the container the role is least-privilege, its password is SCRAM,
it owns its two databases, PUBLIC may not connect to them, scram over TCP works and a wrong password is
refused. The password never appears in the output."""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.fleet.env import ARTIFACTS, COLLECTION, PG_IMAGE, VENV_BIN, ansible_env, run
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(1200)

NAME = f"hal-pg-role-{secrets.token_hex(3)}"


def _ready() -> str | None:
    import os

    if os.geteuid() != 0:
        return "needs root (rootful podman with systemd)"
    probe = subprocess.run(["podman", "image", "exists", PG_IMAGE], capture_output=True, timeout=60, check=False)
    if probe.returncode != 0:
        return f"no {PG_IMAGE} image (scripts/ci-setup.sh builds it)"
    return None


def _exec(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", "-i", NAME, *cmd], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def container() -> Iterator[str]:
    reason = _ready()
    if reason:
        pytest.skip(reason)
    started = subprocess.run(["podman", "run", "-d", "--name", NAME, "--systemd=always", "--network", "none",
                              PG_IMAGE], capture_output=True,
                             text=True, timeout=120, check=False)
    assert started.returncode == 0, started.stderr
    try:
        def booted() -> bool:
            state = _exec("systemctl", "is-system-running").stdout.strip()
            return state in ("running", "degraded")

        wait_for(booted, "systemd up in the container", 120, interval=0.5)
        yield NAME
    finally:
        subprocess.run(["podman", "rm", "-f", NAME], capture_output=True, timeout=120, check=False)


def test_postgresql_role_converges_in_a_container(container: str, tmp_path: Path) -> None:
    password = secrets.token_hex(16)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"postgresql": {"hosts": {container: {
        "ansible_connection": "containers.podman.podman", "ansible_python_interpreter": "/usr/bin/python3"}}}}}}))
    extra = tmp_path / "vars.yml"
    extra.write_text(yaml.safe_dump({"hal_postgresql_password": password,
                                     "hal_postgresql_client_sources": ["127.0.0.1"],
                                     "hal_postgresql_listen_addresses": ["localhost"],
                                     # no network in the container: the packages are in the image
                                     "hal_postgresql_apt_cache_valid_time": 0}))
    extra.chmod(0o600)

    def playbook(*args: str, log: str) -> str:
        proc = run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"@{extra}", *args,
                    str(COLLECTION / "playbooks" / "postgresql.yml")], timeout=900, env=ansible_env(),
                   log=ARTIFACTS / log)
        assert password not in proc.stdout
        return proc.stdout

    def changed(out: str) -> int:
        m = re.search(rf"^{re.escape(container)}\s*:.*changed=(\d+).*failed=0", out, re.M)
        assert m, out[-3000:]
        return int(m.group(1))

    assert changed(playbook(log="postgresql-converge.log")) >= 6
    assert changed(playbook(log="postgresql-idempotence.log")) == 0
    assert changed(playbook("--check", "--diff", log="postgresql-check.log")) == 0

    sql = ("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, left(rolpassword, 14) FROM pg_authid "
           "WHERE rolname = 'halswarm'; SELECT datname, pg_get_userbyid(datdba), "
           "has_database_privilege('public', datname, 'CONNECT') FROM pg_database WHERE datname LIKE 'halswarm%' "
           "ORDER BY 1")
    res = _exec("su", "postgres", "-c", f'psql -XAt -c "{sql}"')
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["f|f|f|f|SCRAM-SHA-256$", "halswarm|halswarm|f",
                                  "halswarm_restore_test|halswarm|f"]
    login = ("umask 077; cat > /tmp/pgpass; PGPASSFILE=/tmp/pgpass psql -X -w -h 127.0.0.1 -U halswarm halswarm "
             "-Atc 'CREATE TABLE t (x int); SELECT current_user'")
    ok = _exec("sh", "-c", login, stdin=f"*:*:*:*:{password}\n")
    assert ok.returncode == 0 and ok.stdout.split() == ["CREATE", "TABLE", "halswarm"], ok.stderr
    bad = _exec("sh", "-c", login, stdin="*:*:*:*:wrong\n")
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr
