"""The monthly restore test and the backup size check (issue 18 point 6), run as the timers run them: the
collection's hal_sqlite_backup.py / hal_sqlite_restore_test.py scripts with the host's python3 against a
real supervisor's live database and real backups made by the backup script."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.backup import COLLECTIONS, populate
from tests.support.supervisor_proc import SupervisorProc

UTILS = COLLECTIONS / "ansible_collections/halswarm/ops/plugins/module_utils"
BACKUP = UTILS / "hal_sqlite_backup.py"
RESTORE_TEST = UTILS / "hal_sqlite_restore_test.py"


def _backup(db: Path, dest: Path, *extra: str) -> dict:
    res = subprocess.run(["/usr/bin/python3", str(BACKUP), "backup", "--db", str(db), "--dest-dir", str(dest),
                          "--prefix", "supervisor", *extra], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _restore_test(db: Path, dest: Path, scratch: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    res = subprocess.run(["/usr/bin/python3", str(RESTORE_TEST), "run", "--db", str(db), "--backup-dir", str(dest),
                          "--scratch-dir", str(scratch)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    doc = json.loads((dest / "restore-test.json").read_text())
    return res, doc


@pytest.mark.timeout(240)
def test_restore_test_passes_on_a_good_backup_and_fails_on_a_damaged_one(supervisor: SupervisorProc,
                                                                          tmp_path: Path) -> None:
    populate(supervisor, "node-r", 1, 150)
    dest, scratch = tmp_path / "backups", tmp_path / "scratch"
    scratch.mkdir()
    made = _backup(supervisor.db_path, dest)
    populate(supervisor, "node-r", 151, 160)  # the live database grew since: still a pass

    res, doc = _restore_test(supervisor.db_path, dest, scratch)
    assert res.returncode == 0, res.stderr
    assert doc["ok"] is True and doc["status"] == "ok" and doc["reasons"] == []
    assert doc["backup"] == made["name"] and doc["backup_size"] == made["size"]
    assert doc["counts"]["events"]["backup"] >= 150 and doc["counts"]["events"]["live"] >= 160
    assert stat.S_IMODE(os.stat(dest / "restore-test.json").st_mode) == 0o600
    assert list(scratch.iterdir()) == []  # the private scratch copy is gone

    # A truncated newest backup (its checksum file still there): failed, one-line reasons, no traceback.
    path = Path(made["path"])
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    res, doc = _restore_test(supervisor.db_path, dest, scratch)
    assert res.returncode == 1
    assert doc["ok"] is False and doc["status"] == "failed" and doc["backup"] == made["name"]
    assert any("checksum mismatch" in r for r in doc["reasons"]), doc["reasons"]
    assert all("\n" not in r for r in doc["reasons"])
    assert res.stderr.startswith("error: restore test failed: ")
    assert list(scratch.iterdir()) == []

    # Garbage with a valid checksum (not an SQLite file at all).
    path.write_bytes(b"this is not a database" * 100)
    subprocess.run(["/usr/bin/python3", "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                    "import hal_sqlite_common as c; c.write_sidecar(sys.argv[2])", str(UTILS), str(path)],
                   check=True, timeout=60)
    res, doc = _restore_test(supervisor.db_path, dest, scratch)
    assert res.returncode == 1 and doc["ok"] is False
    assert any("not an SQLite database" in r for r in doc["reasons"]), doc["reasons"]


@pytest.mark.timeout(240)
def test_backup_more_rows_than_live_in_an_append_only_table_fails(supervisor: SupervisorProc, tmp_path: Path) -> None:
    populate(supervisor, "node-a", 1, 20)
    dest, scratch = tmp_path / "backups", tmp_path / "scratch"
    scratch.mkdir()
    _backup(supervisor.db_path, dest)
    other = tmp_path / "other.db"  # a live database that lost migration rows the backup has
    subprocess.run(["/usr/bin/python3", "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[2]);"
                    "sqlite3.connect(sys.argv[1]).backup(c);"
                    "c.execute('DELETE FROM schema_migrations"
                    " WHERE rowid = (SELECT max(rowid) FROM schema_migrations)');"
                    "c.commit()", str(supervisor.db_path), str(other)], check=True, timeout=60)
    res, doc = _restore_test(other, dest, scratch)
    assert res.returncode == 1
    assert any("append-only table schema_migrations has more rows in the backup" in r for r in doc["reasons"])


@pytest.mark.timeout(240)
def test_a_backup_far_larger_than_the_previous_ones_is_flagged(supervisor: SupervisorProc, tmp_path: Path) -> None:
    populate(supervisor, "node-s", 1, 20)
    dest, scratch = tmp_path / "backups", tmp_path / "scratch"
    scratch.mkdir()
    for _ in range(3):
        made = _backup(supervisor.db_path, dest)
        assert made["size_anomaly"]["anomaly"] is False
    status = json.loads((dest / "backup-status.json").read_text())
    assert status["backup"] == made["name"] and status["size_anomaly"]["anomaly"] is False
    assert status["size_anomaly"]["compared"] == 2  # not enough history yet: no judgement
    made = _backup(supervisor.db_path, dest)
    assert made["size_anomaly"]["anomaly"] is False and made["size_anomaly"]["ratio"] == 1.0

    populate(supervisor, "node-s", 21, 1500, size=400)  # the database grows far beyond 2x
    res = subprocess.run(["/usr/bin/python3", str(BACKUP), "backup", "--db", str(supervisor.db_path), "--dest-dir",
                          str(dest), "--prefix", "supervisor"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    big = json.loads(res.stdout)
    assert big["size_anomaly"]["anomaly"] is True and big["size_anomaly"]["ratio"] > 2
    assert "warning: backup size" in res.stderr
    status = json.loads((dest / "backup-status.json").read_text())
    assert status["backup"] == big["name"] and status["size_anomaly"]["anomaly"] is True
    res, doc = _restore_test(supervisor.db_path, dest, scratch)
    assert res.returncode == 0 and doc["size_anomaly"]["anomaly"] is True  # restorable, but flagged

    bad = subprocess.run(["/usr/bin/python3", str(RESTORE_TEST), "run", "--db", str(supervisor.db_path),
                          "--backup-dir", str(dest), "--anomaly-low", "3"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: need 0 < low < 1 < high")
