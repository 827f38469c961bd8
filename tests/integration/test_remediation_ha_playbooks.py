"""The supervisor remediation playbooks on a PostgreSQL store (issue 21), through ansible-runner on localhost
(local connection; this host has no hal-supervisor.service): the diagnose phase reports the engine and
whether the shared PostgreSQL answers (pg_isready against a private cluster, then against a closed port),
and supervisor-db-corruption on PostgreSQL decides with PostgreSQL's tooling: not_present while the server
answers, a manual decision with the exact commands when it does not, and no SQLite file surgery (nothing
stopped, no file touched)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.backup import PLAYBOOKS, run_playbook
from tests.support.ports import free_port
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.timeout(300)


def _report(tmp_path: Path, playbook: str, extravars: dict[str, Any], check: bool = False) -> dict[str, Any]:
    result = tmp_path / f"result-{len(list(tmp_path.glob('result-*')))}.json"
    runner, _ = run_playbook(PLAYBOOKS / playbook, {"hal_remediation_hosts": "localhost",
                                                    "hal_remediation_result_file": str(result), **extravars},
                             tmp_path, check=check)
    assert result.exists(), runner.stdout.read()
    host: dict[str, Any] = json.loads(result.read_text())["hosts"]["localhost"]
    host["_status"] = runner.status
    return host


def test_db_corruption_on_postgresql_uses_postgresql_tooling(pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    url = pg_cluster.password_database()
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "supervisor-20261207T020000Z.pgdump").write_bytes(b"PGDMP")
    stray = tmp_path / "supervisor.db"  # a SQLite path that must stay untouched
    common = {"hal_supervisor_storage_url": url, "hal_remediation_backup_dir": str(backups),
              "hal_remediation_db": str(stray)}
    try:
        up = _report(tmp_path, "remediate_supervisor_db_corruption.yml", common)
        assert up["facts"]["storage"]["engine"] == "postgresql" and up["facts"]["storage"]["reachable"] is True
        assert up["plan"]["decision"] == "not_present" and up["_status"] == "successful"
        assert up["facts"]["pg_backup"] == str(backups / "supervisor-20261207T020000Z.pgdump")

        down_url = f"postgresql://halswarm@127.0.0.1:{free_port()}/halswarm"
        down = _report(tmp_path, "remediate_supervisor_db_corruption.yml",
                       {**common, "hal_supervisor_storage_url": down_url})
        assert down["facts"]["storage"]["reachable"] is False
        assert down["plan"]["decision"] == "manual" and down["plan"]["actions"] == []
        assert f"pg_isready -d '{down_url}'" in down["plan"]["guidance"]
        assert any("hal_restore_backup='supervisor-20261207T020000Z.pgdump'" in g for g in down["plan"]["guidance"])
        # Escalated before any step: nothing stopped, recovered or restored; no file appeared.
        assert down["actions"] is None and "escalate when the plan has no safe action" in (down["error"] or "")
        assert not stray.exists() and sorted(p.name for p in backups.iterdir()) == [
            "supervisor-20261207T020000Z.pgdump"]
    finally:
        pg_cluster.drop_database(url)


def test_supervisor_crashed_reports_the_store_and_peers_in_check_mode(pg_cluster: PostgresCluster,
                                                                       tmp_path: Path) -> None:
    url = pg_cluster.password_database()
    try:
        host = _report(tmp_path, "remediate_supervisor_crashed.yml", {"hal_supervisor_storage_url": url}, check=True)
        facts = host["facts"]
        assert facts["host"] == "localhost" and facts["peers"] == []
        assert facts["storage"] == {"engine": "postgresql", "url": url, "reachable": True,
                                    "error": facts["storage"]["error"]}
        assert host["plan"]["decision"] == "not_present"  # no hal-supervisor.service here
    finally:
        pg_cluster.drop_database(url)
