"""The data-remediation helpers of module_utils hal_sqlite_facts/_archive.py (as halctl loads them): facts,
newest valid backup, rows missing by key, merge from a backup, archive of old events. Real SQLite
databases with the supervisor's real schema (halswarm.store.migrations)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from halswarm.ops import datasafety
from halswarm.store.db import connect
from tests.support.databases import DAY, NOW, make_db

COMMON = datasafety.core("common")
BACKUP = datasafety.core("backup")
FACTS = datasafety.core("facts")
ARCHIVE = datasafety.core("archive")
# The columns of events this test writes (since migration 012 SELECT * also has the runbook's `timestamp`).
COLS = "id, node_id, seq, event_id, session_id, project, type, data, ts, received_at"
HOLD = ("import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1])\nc.execute('PRAGMA journal_mode=WAL')\n"
        "c.execute('SELECT count(*) FROM events').fetchone()\nprint('open', flush=True)\ntime.sleep(60)\n")


def q(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def backup_of(db: Path, dest: Path) -> Path:
    return Path(BACKUP.backup_database(str(db), str(dest))["path"])


def test_facts_of_a_healthy_database_are_read_only(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db, events=30, old=10)
    before = db.read_bytes()
    facts = FACTS.database_facts(str(db), older_than_days=30, queries=FACTS.EVENTS_PAGE_QUERIES, samples=2, now=NOW)
    assert facts["integrity"] == "ok" and facts["problems"] == []
    assert facts["tables"]["events"] == 30 and facts["tables"]["sessions"] == 3
    assert facts["old_rows"] == 10
    assert [x["sql"] for x in facts["queries"]] == list(FACTS.EVENTS_PAGE_QUERIES)
    assert facts["query_ms"] is not None and facts["query_ms"] >= 0
    assert db.read_bytes() == before
    assert not any(os.path.exists(str(db) + s) for s in ("-wal", "-shm"))


def test_facts_of_missing_and_damaged_files(tmp_path: Path) -> None:
    assert FACTS.database_facts(str(tmp_path / "nope.db"))["exists"] is False
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    facts = FACTS.database_facts(str(junk))
    assert facts["integrity"] != "ok" and "not an SQLite database" in facts["error"]
    db = tmp_path / "supervisor.db"
    make_db(db, events=2000)
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='idx_events_ts'").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as fh:  # trash the index's root page: tables read, integrity fails
        fh.seek((root - 1) * page + 8)
        fh.write(os.urandom(page - 8))
    facts = FACTS.database_facts(str(db))
    assert facts["integrity"] != "ok" and facts["problems"]


def test_newest_valid_backup_skips_a_tampered_one(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db)
    backups = tmp_path / "backups"
    older = BACKUP.backup_database(str(db), str(backups), now=COMMON.utcnow().replace(year=2030))["path"]
    newer = BACKUP.backup_database(str(db), str(backups), now=COMMON.utcnow().replace(year=2031))["path"]
    path, checked = FACTS.newest_valid_backup(str(backups), "supervisor")
    assert path == newer and len(checked) == 1
    with open(newer, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff")
    path, checked = FACTS.newest_valid_backup(str(backups), "supervisor")
    assert path == older
    assert checked[0]["ok"] is False and "checksum mismatch" in checked[0]["problems"][0]
    assert FACTS.newest_valid_backup(str(tmp_path / "none"), "supervisor") == (None, [])


def test_missing_rows_and_merge_keep_newer_rows(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db, events=40)
    bk = backup_of(db, tmp_path / "b")
    conn = connect(db)
    conn.execute("DELETE FROM events WHERE seq <= 15")
    conn.execute("DELETE FROM sessions WHERE id = 's2'")
    conn.execute("UPDATE sessions SET status='done' WHERE id='s1'")  # newer than the backup: kept
    conn.execute("INSERT INTO events(node_id, seq, event_id, type, ts, received_at)"
                 " VALUES ('n1', 41, 'e41', 't', 1, 1)")  # newer row: kept
    # same (node_id, seq) as a deleted row under another id: the UNIQUE key says it is not missing
    conn.execute("INSERT INTO events(node_id, seq, event_id, type, ts, received_at)"
                 " VALUES ('n1', 15, 'again', 't', 1, 1)")
    conn.close()
    missing = ARCHIVE.missing_rows(str(db), str(bk), ["sessions", "events"])
    assert missing == {"sessions": 1, "events": 14}
    preview = ARCHIVE.merge_from_backup(str(bk), str(db), ["sessions", "events"], check_mode=True)
    assert preview["changed"] and preview["inserted"] == {}
    assert q(db, "SELECT count(*) FROM events") == [(27,)]
    res = ARCHIVE.merge_from_backup(str(bk), str(db), ["sessions", "events"])
    assert res["inserted"] == {"sessions": 1, "events": 14}
    assert res["missing_after"] == {"sessions": 0, "events": 0} and res["quick_check"] == "ok"
    assert q(db, "SELECT status FROM sessions WHERE id='s1'") == [("done",)]
    assert q(db, "SELECT count(*) FROM events") == [(41,)]
    assert q(db, "SELECT event_id FROM events WHERE seq=15") == [("again",)]
    again = ARCHIVE.merge_from_backup(str(bk), str(db), ["sessions", "events"])
    assert again["changed"] is False and again["inserted"] == {}


def test_rows_removed_by_retention_are_not_missing_nor_merged(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db, events=50, old=20)
    bk = backup_of(db, tmp_path / "b")
    cutoff = NOW - 30 * DAY
    conn = connect(db)
    conn.execute("DELETE FROM events WHERE ts < ?", (cutoff,))  # the retention job, on purpose
    conn.execute("DELETE FROM events WHERE seq IN (30, 31, 32)")        # recent rows really lost
    conn.execute("DELETE FROM sessions WHERE id = 's3'")
    conn.close()
    exclude = {"events": ["timestamp", cutoff], "audit_log": ["timestamp", NOW - 90 * DAY]}
    # old behaviour without the option: the purged rows count as lost
    assert ARCHIVE.missing_rows(str(db), str(bk), ["sessions", "events"]) == {"sessions": 1, "events": 23}
    missing = ARCHIVE.missing_rows(str(db), str(bk), ["sessions", "events"], exclude_older_than=exclude)
    assert missing == {"sessions": 1, "events": 3}
    res = ARCHIVE.merge_from_backup(str(bk), str(db), ["sessions", "events"], exclude_older_than=exclude)
    assert res["missing"] == {"sessions": 1, "events": 3}
    assert res["inserted"] == {"sessions": 1, "events": 3}
    assert res["missing_after"] == {"sessions": 0, "events": 0} and res["quick_check"] == "ok"
    assert res["exclude_older_than"]["events"] == ["timestamp", cutoff]
    assert q(db, f"SELECT count(*) FROM events WHERE ts < {cutoff!r}") == [(0,)]
    assert q(db, "SELECT count(*) FROM events") == [(30,)]
    again = ARCHIVE.merge_from_backup(str(bk), str(db), ["sessions", "events"], exclude_older_than=exclude)
    assert again["changed"] is False


def test_archived_rows_are_not_missing_nor_merged(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db, events=50, old=20)
    bk = backup_of(db, tmp_path / "b")
    arc = tmp_path / "archive" / "events-archive.db"
    assert ARCHIVE.archive_rows(str(db), str(arc), older_than_days=30, now=NOW)["deleted"] == 20
    conn = connect(db)
    conn.execute("DELETE FROM events WHERE seq IN (40, 41)")  # recent rows really lost
    conn.close()
    arc_bytes = arc.read_bytes()
    assert ARCHIVE.missing_rows(str(db), str(bk), ["events"]) == {"events": 22}
    assert ARCHIVE.missing_rows(str(db), str(bk), ["events"], archive=str(arc)) == {"events": 2}
    preview = ARCHIVE.merge_from_backup(str(bk), str(db), ["events"], archive=str(arc), check_mode=True)
    assert preview["missing"] == {"events": 2} and preview["inserted"] == {}
    res = ARCHIVE.merge_from_backup(str(bk), str(db), ["events"], archive=str(arc))
    assert res["inserted"] == {"events": 2} and res["missing_after"] == {"events": 0}
    assert res["archive"] == str(arc)
    assert q(db, "SELECT count(*) FROM events") == [(30,)]
    assert q(db, "SELECT count(*) FROM events WHERE seq IN (40, 41)") == [(2,)]
    # the archive was only read
    assert arc.read_bytes() == arc_bytes
    assert not Path(str(arc) + "-wal").exists() and not Path(str(arc) + "-shm").exists()
    # both at once: an archive without the table and a cutoff change nothing for the other table
    both = ARCHIVE.missing_rows(str(db), str(bk), ["sessions", "events"], archive=str(arc),
                          exclude_older_than={"events": ["timestamp", NOW - 30 * DAY]})
    assert both == {"sessions": 0, "events": 0}


def test_exclusions_are_checked(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db, events=5)
    bk = backup_of(db, tmp_path / "b")
    with pytest.raises(COMMON.DataSafetyError, match="exclude_older_than"):
        ARCHIVE.missing_rows(str(db), str(bk), ["events"], exclude_older_than={"events": "timestamp"})
    with pytest.raises(COMMON.DataSafetyError, match="no column nope"):
        ARCHIVE.missing_rows(str(db), str(bk), ["events"], exclude_older_than={"events": ["nope", NOW]})
    with pytest.raises(COMMON.DataSafetyError):
        ARCHIVE.missing_rows(str(db), str(bk), ["events"], archive=str(tmp_path / "no-such-archive.db"))
    # a table not compared is ignored
    assert ARCHIVE.missing_rows(str(db), str(bk), ["events"], exclude_older_than={"audit_log": ["nope", 1]}) == {
        "events": 0}


@pytest.mark.process
def test_merge_refuses_a_bad_backup_and_a_database_in_use(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db)
    bk = backup_of(db, tmp_path / "b")
    Path(str(bk) + ".sha256").write_text("0" * 64 + "  x.db\n")
    with pytest.raises(COMMON.DataSafetyError, match="checksum mismatch"):
        ARCHIVE.merge_from_backup(str(bk), str(db))
    bk2 = backup_of(db, tmp_path / "c")
    # another process holding the database open in WAL mode, like the running supervisor
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(COMMON.DataSafetyError, match="in use"):
            ARCHIVE.merge_from_backup(str(bk2), str(db))
        with pytest.raises(COMMON.DataSafetyError, match="in use"):
            ARCHIVE.archive_rows(str(db), str(tmp_path / "arc.db"), older_than_days=0)
    finally:
        holder.kill()
        holder.wait(10)


def test_archive_moves_old_rows_then_vacuums(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db, events=300, old=200)
    arc = tmp_path / "archive" / "events-archive.db"
    preview = ARCHIVE.archive_rows(str(db), str(arc), older_than_days=30, now=NOW, check_mode=True)
    assert preview["old_rows"] == 200 and preview["changed"] and not arc.exists()
    ids = {r[0] for r in q(db, f"SELECT id FROM events WHERE ts < {NOW - 30 * DAY}")}
    res = ARCHIVE.archive_rows(str(db), str(arc), older_than_days=30, now=NOW, vacuum=True, analyze=True)
    assert res["archived"] == 200 and res["deleted"] == 200 and res["archive_rows"] == 200
    assert res["quick_check"] == "ok" and res["archive_integrity"] == "ok"
    assert res["vacuumed"] and res["analyzed"] and res["size_after"] < res["size_before"]
    assert q(db, "SELECT count(*) FROM events") == [(100,)]
    assert {r[0] for r in q(arc, "SELECT id FROM events")} == ids
    assert oct(arc.stat().st_mode & 0o777) == "0o600"
    again = ARCHIVE.archive_rows(str(db), str(arc), older_than_days=30, now=NOW)
    assert again["changed"] is False and again["archived"] == 0


def test_archive_finishes_an_interrupted_move_without_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db, events=50, old=20)
    arc = tmp_path / "events-archive.db"
    ARCHIVE.archive_rows(str(db), str(arc), older_than_days=30, now=NOW)
    # put 5 archived rows back as if step 2 (delete) had not run for them
    conn = connect(db)
    conn.execute(f"ATTACH DATABASE '{arc}' AS a")
    conn.execute(f"INSERT INTO main.events({COLS}) SELECT {COLS} FROM a.events ORDER BY id LIMIT 5")
    conn.close()
    res = ARCHIVE.archive_rows(str(db), str(arc), older_than_days=30, now=NOW)
    assert res["old_rows"] == 5 and res["archived"] == 0 and res["deleted"] == 5 and res["archive_rows"] == 20
    assert q(db, "SELECT count(*) FROM events") == [(30,)]


def test_archive_rejects_bad_arguments(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    make_db(db)
    with pytest.raises(COMMON.DataSafetyError, match="another file"):
        ARCHIVE.archive_rows(str(db), str(db))
    with pytest.raises(COMMON.DataSafetyError, match="no table nope"):
        ARCHIVE.archive_rows(str(db), str(tmp_path / "a.db"), table="nope")


def test_archive_deletes_in_bounded_transactions_and_gives_pages_back(tmp_path: Path, monkeypatch) -> None:
    """Issue 22: the runbook's archive must not hold the supervisor's writer for the whole delete."""
    db = tmp_path / "supervisor.db"
    make_db(db, events=300, old=200)
    deletes: list[int] = []
    real = ARCHIVE._in_own_transaction

    def counted(conn, sql, params):  # type: ignore[no-untyped-def]
        n = real(conn, sql, params)
        if sql.startswith("DELETE"):
            deletes.append(n)
        return n

    monkeypatch.setattr(ARCHIVE, "_in_own_transaction", counted)
    monkeypatch.setattr(ARCHIVE, "DELETE_BATCH_ROWS", 30)
    res = ARCHIVE.archive_rows(str(db), str(tmp_path / "arc.db"), older_than_days=30, now=NOW)
    assert res["deleted"] == 200 and sum(deletes) == 200
    assert len(deletes) > 1 and max(deletes) <= 30, deletes
    assert q(db, f"SELECT count(*) FROM events WHERE ts < {NOW - 30 * DAY}") == [(0,)]
    assert q(db, "SELECT count(*) FROM events") == [(100,)]
    assert q(db, "PRAGMA auto_vacuum") == [(2,)]  # a database made by the migrations: incremental
    assert res["pages_freed"] > 0 and q(db, "PRAGMA freelist_count") == [(0,)]
