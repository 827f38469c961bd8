"""pg_dump backup and pg_restore through the collection on PostgreSQL (issue 21): backup.yml and restore.yml
through ansible-runner (ansible_connection=local) against a real supervisor whose store is a private
PostgreSQL cluster (tests/support/postgres.py, loopback, scram password): the backup, a restore into a fresh
database with equal row counts, the plain refusal to overwrite a non-empty database, a forced restore into
the live database with the supervisor stopped and started around it, and the restore test into a scratch
database (the timer's command line), which fails on a tampered backup. The password only ever travels in a
0600 file: it is never in the playbook output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from halswarm.core.backup_status import parse_backup_status, parse_restore_test
from tests.integration.test_backup_timer import _exec_start, _render
from tests.support.backup import COLLECTIONS, PLAYBOOKS, SupervisorService, populate, run_playbook, sha256, task_result
from tests.support.postgres import PostgresCluster
from tests.support.supervisor_proc import SupervisorProc

pytestmark = pytest.mark.timeout(420)

NODE = "node-pg"
HELPER = COLLECTIONS / "ansible_collections/halswarm/ops/plugins/module_utils/hal_pg_backup.py"


def counts(cluster: PostgresCluster, url: str) -> dict[str, int]:
    """Rows per table of the database's public schema."""
    with psycopg.connect(url, password=cluster.password) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}  # type: ignore[index]


def agent_events(cluster: PostgresCluster, url: str) -> int:
    with psycopg.connect(url, password=cluster.password) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE node_id = %s AND seq IS NOT NULL", (NODE,)).fetchone()
        return int(row[0]) if row else -1


class PgStore:
    def __init__(self, cluster: PostgresCluster, tmp: Path) -> None:
        self.cluster = cluster
        self.url = cluster.password_database()
        self.password_file = tmp / "db.password"
        self.password_file.write_text(cluster.password + "\n")
        self.password_file.chmod(0o600)
        self.svc = SupervisorService(tmp / "sup")
        self.svc.sup = SupervisorProc(tmp / "sup", extra={
            "storage": {"url": self.url, "password_file": str(self.password_file)}})
        self.svc.sup.write_config()


@pytest.fixture
def store(pg_cluster: PostgresCluster, tmp_path: Path) -> Iterator[PgStore]:
    s = PgStore(pg_cluster, tmp_path)
    s.svc.start()
    try:
        yield s
    finally:
        s.svc.kill()
        pg_cluster.drop_database(s.url)


def _no_secret(runner: Any, password: str) -> str:
    out = runner.stdout.read()
    assert password not in out
    return str(out)


def test_pg_dump_backup_and_restore_through_the_playbooks(store: PgStore, tmp_path: Path) -> None:
    cluster, svc, backups = store.cluster, store.svc, tmp_path / "backups"
    assert populate(svc.sup, NODE, 1, 40) == 40
    svc.stop()  # a quiet database, so the counts taken now are the backup's
    taken = counts(cluster, store.url)
    assert taken["events"] >= 40 and agent_events(cluster, store.url) == 40
    svc.start()

    pg = {"hal_backup_pg_url": store.url, "hal_backup_pg_password_file": str(store.password_file)}
    runner, results = run_playbook(PLAYBOOKS / "backup.yml", {"hal_backup_hosts": "localhost",
                                                              "hal_backup_dir": str(backups), **pg}, tmp_path)
    out = _no_secret(runner, cluster.password)
    assert runner.status == "successful", out
    backup = task_result(results, "Back up the PostgreSQL store with pg_dump")
    path = Path(backup["path"])
    assert path.parent == backups and path.name.startswith("supervisor-") and path.suffix == ".pgdump"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert Path(backup["checksum_file"]).read_text().split() == [sha256(path), path.name]
    assert "events" in backup["tables"] and "nodes" in backup["tables"]
    # The backup holds what was there; the live database moves on.
    populate(svc.sup, NODE, 41, 70)
    assert agent_events(cluster, store.url) == 70

    # verify: checksum and table of contents of every .pgdump.
    runner, results = run_playbook(PLAYBOOKS / "backup.yml", {"hal_backup_hosts": "localhost", "hal_backup_action":
                                                              "verify", "hal_backup_dir": str(backups), **pg}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()

    # Restore into a fresh, empty database: the supervisor keeps running on the live one.
    fresh = cluster.password_database()
    common = {"hal_restore_hosts": "localhost", "hal_restore_backup": "latest", "hal_backup_dir": str(backups),
              "hal_restore_pg_live_url": store.url, "hal_restore_pg_password_file": str(store.password_file)}
    try:
        runner, results = run_playbook(PLAYBOOKS / "restore.yml", {**common, "hal_restore_pg_url": fresh}, tmp_path)
        out = _no_secret(runner, cluster.password)
        assert runner.status == "successful", out
        assert counts(cluster, fresh) == taken
        restored = task_result(results, "Restore with pg_restore")
        assert restored["forced"] is False and restored["after"]["events"] == taken["events"]
        assert svc.ready() and agent_events(cluster, store.url) == 70

        # Again into the now non-empty database: refused before anything changes, in one plain sentence.
        runner, results = run_playbook(PLAYBOOKS / "restore.yml", {**common, "hal_restore_pg_url": fresh}, tmp_path)
        out = _no_secret(runner, cluster.password)
        assert runner.status == "failed"
        refused = task_result(results, "Verify the backup and check the target database")
        assert refused["_failed"] and refused["kind"] == "not_empty"
        assert "is not empty" in refused["msg"] and "nothing was restored" in refused["msg"]
        assert not any((r["task"] or "").startswith("Restore with pg_restore") for r in results)
        assert counts(cluster, fresh) == taken
    finally:
        cluster.drop_database(fresh)

    # Into the live database: refused without force, the supervisor untouched ...
    pid = svc.pid()
    live = {**common, "hal_restore_stop_command": svc.stop_command, "hal_restore_start_command": svc.start_command,
            "hal_restore_ready_url": svc.sup.api + "/readyz", "hal_restore_ready_delay": 1}
    runner, results = run_playbook(PLAYBOOKS / "restore.yml", live, tmp_path)
    assert runner.status == "failed" and task_result(results, "Verify the backup")["kind"] == "not_empty"
    assert svc.pid() == pid and svc.ready() and agent_events(cluster, store.url) == 70

    # ... and forced: stopped, replaced in one transaction, started, ready, the backup's rows back.
    runner, results = run_playbook(PLAYBOOKS / "restore.yml", {**live, "hal_restore_force": True}, tmp_path)
    out = _no_secret(runner, cluster.password)
    assert runner.status == "successful", out
    assert task_result(results, "Restore with pg_restore")["forced"] is True
    assert svc.pid() != pid and svc.ready()
    assert agent_events(cluster, store.url) == 40


def _restore_test(store: PgStore, backups: Path, scratch: str) -> tuple[int, dict[str, Any], str]:
    res = subprocess.run([sys.executable, str(HELPER), "restore-test", "--url", store.url, "--password-file",
                          str(store.password_file), "--backup-dir", str(backups), "--scratch-url", scratch],
                         capture_output=True, text=True, timeout=180, env={"PATH": os.environ["PATH"]})
    assert store.cluster.password not in res.stdout + res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


def test_pg_restore_test_into_a_scratch_database(store: PgStore, tmp_path: Path) -> None:
    cluster, svc, backups = store.cluster, store.svc, tmp_path / "backups"
    populate(svc.sup, NODE, 1, 25)
    # The timer's backup command line (hal_pg_backup.py backup), as the service user would run it.
    res = subprocess.run([sys.executable, str(HELPER), "backup", "--url", store.url, "--password-file",
                          str(store.password_file), "--dest-dir", str(backups), "--keep", "3"],
                         capture_output=True, text=True, timeout=180, env={"PATH": os.environ["PATH"]})
    assert res.returncode == 0, res.stderr
    made = json.loads(res.stdout)
    assert json.loads((backups / "backup-status.json").read_text())["backup"] == made["name"]
    # The supervisor reads both files (backup.dir) for its metrics and routed events: same format as SQLite's.
    assert parse_backup_status((backups / "backup-status.json").read_text()).backup == made["name"]

    scratch = cluster.password_database()
    try:
        rc, verdict, err = _restore_test(store, backups, scratch)
        assert rc == 0 and verdict["ok"] is True, err
        assert verdict["engine"] == "postgresql" and verdict["backup"] == made["name"]
        assert verdict["counts"]["events"]["backup"] >= 25
        assert verdict["counts"]["events"]["live"] >= verdict["counts"]["events"]["backup"]
        assert json.loads((backups / "restore-test.json").read_text())["ok"] is True
        assert parse_restore_test((backups / "restore-test.json").read_text()).ok is True
        # Twice in a row: the scratch database is refilled, not mixed.
        rc, again, err = _restore_test(store, backups, scratch)
        assert rc == 0 and again["counts"]["events"]["backup"] == verdict["counts"]["events"]["backup"], err

        # A tampered backup fails the test with one reason naming the checksum.
        data = bytearray(Path(made["path"]).read_bytes())
        data[-1] ^= 0xFF
        Path(made["path"]).write_bytes(bytes(data))
        rc, bad, err = _restore_test(store, backups, scratch)
        assert rc == 1 and bad["ok"] is False and any("checksum mismatch" in r for r in bad["reasons"])
        assert "restore test failed" in err
        failed = parse_restore_test((backups / "restore-test.json").read_text())
        assert failed.ok is False and failed.backup == made["name"]

        # The live database as scratch is refused.
        rc, same, _ = _restore_test(store, backups, store.url)
        assert rc == 1 and any("is the live database" in r for r in same["reasons"])
    finally:
        cluster.drop_database(scratch)


def test_the_role_timer_units_on_postgresql_back_up_and_restore_test(store: PgStore, tmp_path: Path) -> None:
    """The supervisor role's backup and restore-test units rendered for a PostgreSQL store: systemd-analyze
    clean, network allowed (pg_dump talks TCP), and their ExecStart lines, run as written, take a pg_dump
    backup and pass the restore test into the scratch database."""
    cluster, svc, backups = store.cluster, store.svc, tmp_path / "backups"
    populate(svc.sup, NODE, 1, 15)
    scratch = cluster.password_database()
    try:
        units = _render(tmp_path, {
            "hal_supervisor_storage_url": store.url, "hal_supervisor_storage_password_file": str(store.password_file),
            "hal_supervisor_restore_test_pg_url": scratch, "hal_supervisor_backup_timer_dir": str(backups),
            "hal_supervisor_backup_timer_helper": str(HELPER.parent / "hal_sqlite_backup.py"),
            "hal_supervisor_backup_timer_python": sys.executable})
        for name in ("hal-supervisor-backup.service", "hal-supervisor-restore-test.service"):
            text = (units / name).read_text()
            assert "PrivateNetwork=no" in text and "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in text
            assert "ConditionPathExists" not in text and cluster.password not in text
        if shutil.which("systemd-analyze"):
            res = subprocess.run(["systemd-analyze", "verify", "hal-supervisor-backup.service",
                                  "hal-supervisor-restore-test.service"], cwd=units, capture_output=True, text=True,
                                 timeout=60)
            assert res.returncode == 0 and (res.stdout + res.stderr).strip() == "", res.stdout + res.stderr
        backup_argv = _exec_start(units / "hal-supervisor-backup.service")
        assert backup_argv[1:3] == [str(HELPER), "backup"] and "--password-file" in backup_argv
        res = subprocess.run(backup_argv, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stderr
        made = json.loads(res.stdout)
        assert made["name"].endswith(".pgdump") and "events" in made["tables"]
        res = subprocess.run(_exec_start(units / "hal-supervisor-restore-test.service"), capture_output=True,
                             text=True, timeout=180)
        assert res.returncode == 0, res.stderr
        verdict = json.loads((backups / "restore-test.json").read_text())
        assert verdict["ok"] is True and verdict["backup"] == made["name"]
        assert verdict["counts"]["events"]["backup"] >= 15
    finally:
        cluster.drop_database(scratch)
