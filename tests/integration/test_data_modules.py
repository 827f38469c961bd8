"""The data-remediation modules through ansible-runner (plays against localhost, real SQLite files with
the supervisor's schema): hal_sqlite_facts is read-only, hal_sqlite_merge and hal_sqlite_archive change
nothing in check mode (with a diff) and do the work otherwise; bad inputs fail with one clear line."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
import yaml

from halswarm.ops import datasafety
from tests.support.backup import run_playbook, task_result
from tests.support.databases import DAY, make_db

BACKUP = datasafety.core("backup")
pytestmark = pytest.mark.timeout(300)


def _play(tmp: Path, tasks: list[dict]) -> Path:
    path = tmp / f"play-{len(list(tmp.glob('play-*.yml')))}.yml"
    path.write_text(yaml.safe_dump([{"name": "data modules", "hosts": "localhost", "gather_facts": False,
                                     "tasks": tasks}], sort_keys=False))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def test_facts_merge_and_archive_modules(tmp_path: Path) -> None:
    import time

    db = tmp_path / "supervisor.db"
    make_db(db, events=120)
    backups = tmp_path / "backups"
    backup = BACKUP.backup_database(str(db), str(backups))["path"]
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM events WHERE seq <= 30")
    conn.execute("DELETE FROM sessions WHERE id='s3'")
    # 40 events of 50 days ago (relative to the real clock: the modules use it)
    conn.execute("UPDATE events SET ts = ? WHERE seq > 80", (time.time() - 50 * DAY,))
    conn.commit()
    conn.close()
    before = sha(db)
    arc = tmp_path / "archive" / "events-archive.db"
    play = _play(tmp_path, [
        {"name": "facts", "halswarm.ops.hal_sqlite_facts": {
            "path": str(db), "backup_dir": str(backups), "compare_with_newest_backup": True,
            "compare_tables": ["sessions", "events"], "older_than_days": 30, "samples": 2}, "register": "f"},
        {"name": "merge preview", "halswarm.ops.hal_sqlite_merge": {
            "src": backup, "dest": str(db), "tables": ["sessions", "events"]}, "check_mode": True, "diff": True},
        {"name": "archive preview", "halswarm.ops.hal_sqlite_archive": {
            "db": str(db), "archive": str(arc), "older_than_days": 30, "vacuum": True}, "check_mode": True,
         "diff": True},
    ])
    runner, results = run_playbook(play, {}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    facts = task_result(results, "facts")
    assert facts["changed"] is False and facts["backup"] == backup
    assert facts["db"]["integrity"] == "ok" and facts["db"]["old_rows"] == 40
    assert facts["missing"] == {"sessions": 1, "events": 30} and facts["missing_total"] == 31
    assert len(facts["db"]["queries"]) == 2 and facts["db"]["query_ms"] >= 0
    preview = task_result(results, "merge preview")
    assert preview["changed"] and preview["inserted"] == {} and "events: 30" in preview["diff"]["before"]
    arc_preview = task_result(results, "archive preview")
    assert arc_preview["old_rows"] == 40 and arc_preview["deleted"] == 0
    assert sha(db) == before and not arc.exists(), "facts or check mode changed something"

    play = _play(tmp_path, [
        {"name": "merge", "halswarm.ops.hal_sqlite_merge": {
            "src": backup, "dest": str(db), "tables": ["sessions", "events"]}},
        {"name": "archive", "halswarm.ops.hal_sqlite_archive": {
            "db": str(db), "archive": str(arc), "older_than_days": 30, "vacuum": True, "analyze": True}},
        {"name": "second merge", "halswarm.ops.hal_sqlite_merge": {
            "src": backup, "dest": str(db), "tables": ["sessions"]}},
    ])
    runner, results = run_playbook(play, {}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    merged = task_result(results, "merge")
    assert merged["inserted"] == {"sessions": 1, "events": 30} and merged["missing_after"] == {"sessions": 0,
                                                                                               "events": 0}
    archived = task_result(results, "archive")
    assert archived["deleted"] == 40 and archived["vacuumed"] and archived["analyzed"]
    assert task_result(results, "second merge")["changed"] is False
    assert count(db, "SELECT count(*) FROM events") == 80 and count(arc, "SELECT count(*) FROM events") == 40


def test_bad_inputs_fail_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    play = _play(tmp_path, [
        {"name": "merge from junk", "halswarm.ops.hal_sqlite_merge": {"src": str(junk), "dest": str(db)},
         "ignore_errors": True},
        {"name": "archive into itself", "halswarm.ops.hal_sqlite_archive": {"db": str(db), "archive": str(db)},
         "ignore_errors": True},
        {"name": "facts of junk", "halswarm.ops.hal_sqlite_facts": {"path": str(junk)}},
    ])
    runner, results = run_playbook(play, {}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    bad = task_result(results, "merge from junk")
    assert bad["_failed"] and "not an SQLite database" in bad["msg"] and "\n" not in bad["msg"]
    assert "another file" in task_result(results, "archive into itself")["msg"]
    assert task_result(results, "facts of junk")["db"]["integrity"] != "ok"
