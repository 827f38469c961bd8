"""The collection's postgresql role (issue 21), which installs Debian's PostgreSQL for the example inventory's
HA layout. Never installs packages on this host: here the server part (tasks/install.yml) gets a syntax
check and ansible-lint (tests/fleet/test_ops_lint.py), while the database part (tasks/database.yml: role, databases,
privileges, pg_hba.conf, reload) converges for real, through ansible-runner, against a private cluster
(tests/support/postgres.py) whose superuser stands in for `postgres`: check mode changes nothing, the role
is least-privilege, idempotent, admitted with scram-sha-256, and a supervisor's store migrates in its
database as that role. The full converge, packages included, runs in a throwaway podman container with
systemd: the database host of tests/fleet/test_ops_ha.py."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from halswarm.store.engine import open_connection, parse_storage_url
from halswarm.store.migrations import migrate
from tests.support.backup import COLLECTIONS, PLAYBOOKS, REPO, VENV_BIN, run_playbook
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.timeout(420)


def _changed(runner: Any) -> int:
    return int(sum((runner.stats or {}).get("changed", {}).values()))


def test_playbook_syntax_check(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"postgresql": {"hosts": {"db-1": {}}},
                                                              "hal_supervisors": {"hosts": {"sup-1": {}}}}}}))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "PATH": f"{VENV_BIN}{os.pathsep}"
           f"{os.environ.get('PATH', '')}"}
    res = subprocess.run([str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory),
                          str(PLAYBOOKS / "postgresql.yml")], capture_output=True, text=True, timeout=120, env=env,
                         cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr


def test_database_part_converges_on_a_private_cluster(pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    cluster = pg_cluster
    suffix = secrets.token_hex(4)
    role, database = f"hs_{suffix}", f"halswarm_{suffix}"
    password = secrets.token_urlsafe(24)
    play = tmp_path / "pg.yml"
    play.write_text(yaml.safe_dump([{"name": "postgresql role, database part", "hosts": "localhost",
                                     "gather_facts": False, "roles": [{"role": "halswarm.ops.postgresql"}]}]))
    extravars = {"hal_postgresql_install": False, "hal_postgresql_admin_become": False,
                 "hal_postgresql_admin_user": cluster.user, "hal_postgresql_login_unix_socket": str(cluster.sock),
                 "hal_postgresql_port": cluster.port, "hal_postgresql_role": role,
                 "hal_postgresql_database": database, "hal_postgresql_password": password,
                 "hal_postgresql_client_sources": ["127.0.0.1"]}

    def admin(sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            return conn.execute(sql, args).fetchall()

    # Check mode on a server without the role: reports changes, creates nothing.
    runner, _ = run_playbook(play, extravars, tmp_path, check=True)
    out = runner.stdout.read()
    assert runner.status == "successful", out
    assert password not in out
    assert admin("SELECT 1 FROM pg_roles WHERE rolname = %s", role) == []

    runner, _ = run_playbook(play, extravars, tmp_path)
    out = runner.stdout.read()
    assert runner.status == "successful", out
    assert password not in out
    assert _changed(runner) >= 4  # role, two databases, revokes, pg_hba, reload

    # Least privilege: a login role, nothing more; it owns its two databases; PUBLIC may not connect.
    assert admin("SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                 "FROM pg_roles WHERE rolname = %s", role) == [(True, False, False, False, False, False)]
    owned = admin("SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = %s "
                  "ORDER BY 1", role)
    assert owned == [(database,), (f"{database}_restore_test",)]
    assert admin("SELECT has_database_privilege('public', %s, 'CONNECT')", database) == [(False,)]
    assert admin("SELECT rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid WHERE rolname = %s", role) == [(True,)]
    rules = admin("SELECT type, database, user_name, address, auth_method, error FROM pg_hba_file_rules "
                  "WHERE %s = ANY(user_name)", role)
    assert sorted(rules) == [("host", [db], [role], "127.0.0.1", "scram-sha-256", None)
                             for db in (database, f"{database}_restore_test")]

    # The role runs the supervisor's migrations in its database over TCP with its password.
    url = f"postgresql://{role}@127.0.0.1:{cluster.port}/{database}"
    secret = tmp_path / "db.password"
    secret.write_text(password + "\n")
    conn = open_connection(parse_storage_url(url, password_file=str(secret)))
    try:
        migrate(conn)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 1
    finally:
        conn.close()
    # Another login role of the cluster may not connect to the store's database.
    assert admin("SELECT has_database_privilege('hal_pw', %s, 'CONNECT')", database) == [(False,)]

    # Idempotent, and check mode after it finds nothing to change.
    runner, _ = run_playbook(play, extravars, tmp_path)
    assert runner.status == "successful" and _changed(runner) == 0, runner.stdout.read()
    runner, _ = run_playbook(play, extravars, tmp_path, check=True)
    assert runner.status == "successful" and _changed(runner) == 0, runner.stdout.read()

    # Refused inputs: a short password, a pg_hba source admitting everybody.
    for bad in ({"hal_postgresql_password": "short"}, {"hal_postgresql_client_sources": ["0.0.0.0/0"]}):
        runner, _ = run_playbook(play, {**extravars, **bad}, tmp_path)
        assert runner.status == "failed"
        assert password not in runner.stdout.read()
