"""The single data-safety implementation (collection module_utils hal_sqlite_*.py), as halctl loads it:
retention selection (pure), names, sidecars, verification, restore ordering, record decoding."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from halswarm.ops import datasafety
from halswarm.store import migrations as store_migrations
from halswarm.store.db import connect
from halswarm.store.migrations import migrate

COMMON = datasafety.core("common")
BACKUP = datasafety.core("backup")
RESTORE = datasafety.core("restore")
RECOVER = datasafety.core("recover")
DAY = 86400.0
NOW = 1_800_000_000.0


def make_db(path: Path, events: int = 100) -> None:
    conn = connect(path)
    migrate(conn)
    conn.execute("INSERT INTO nodes(id) VALUES ('n1')")
    conn.execute("BEGIN")
    for i in range(1, events + 1):
        conn.execute("INSERT INTO events(node_id, seq, event_id, type, data, ts, received_at)"
                     " VALUES ('n1', ?, ?, 't', ?, ?, ?)", (i, f"e{i}", "x" * 100, float(i), float(i)))
    conn.execute("COMMIT")
    conn.close()


# ---- one implementation --------------------------------------------------------------------


def test_core_is_the_collection_files():
    repo = Path(__file__).resolve().parents[3]
    utils = repo / "collections/ansible_collections/halswarm/ops/plugins/module_utils"
    for part in datasafety.CORE_PARTS:
        loaded = datasafety.core(part)
        assert Path(loaded.__file__).resolve() == (utils / f"hal_sqlite_{part}.py").resolve()
        assert datasafety.core(part) is loaded  # loaded once
    # the files share one DataSafetyError: the one the modules and halctl catch
    assert RESTORE.DataSafetyError is BACKUP.DataSafetyError is COMMON.DataSafetyError
    with pytest.raises(ValueError, match=r"no hal_sqlite_nope\.py"):
        datasafety.core("nope")


def test_core_dir_falls_back_to_the_timer_helpers_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A host with only the wheel: halctl finds the hal_sqlite_* files the supervisor role copied to
    <release root>/libexec for the backup timer, and only when all of them are there."""
    libexec = tmp_path / "libexec"
    libexec.mkdir()
    (tmp_path / "releases" / "1.0").mkdir(parents=True)
    monkeypatch.setattr(datasafety, "collection_candidates", lambda: iter(()))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "releases" / "1.0"))
    for part in datasafety.CORE_PARTS[:-1]:
        shutil.copy(datasafety.core(part).__file__, libexec)
    if not Path("/opt/hal-o-swarm/libexec/hal_sqlite_common.py").exists():
        with pytest.raises(datasafety.DataSafetyFailure, match=r"cannot find the halswarm\.ops collection"):
            datasafety.core_dir()
    shutil.copy(datasafety.core(datasafety.CORE_PARTS[-1]).__file__, libexec)
    assert datasafety.core_dir() == libexec


def test_schema_migrations_ddl_matches_the_migrator():
    """The recovery fallback recreates halswarm's bookkeeping table; it must stay identical."""
    assert RECOVER.SCHEMA_MIGRATIONS_DDL in inspect.getsource(store_migrations.migrate).replace('"\n        "', "")


def test_core_imports_only_the_standard_library_and_its_siblings():
    stdlib = {"argparse", "contextlib", "datetime", "errno", "fcntl", "hashlib", "json", "os", "re", "shutil",
              "sqlite3", "stat", "struct", "sys", "tempfile", "time", "urllib", "__future__"}
    siblings = {f"hal_sqlite_{part}" for part in datasafety.CORE_PARTS}
    for part in datasafety.CORE_PARTS:
        tree = ast.parse(Path(datasafety.core(part).__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= stdlib, part
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                utils = "ansible_collections.halswarm.ops.plugins.module_utils."
                assert module.split(".")[0] in stdlib or module in siblings or (
                    module.startswith(utils) and module[len(utils):] in siblings), (part, module)


def test_the_backup_helper_runs_as_a_script_from_a_copy(tmp_path: Path):
    """The backup timer runs hal_sqlite_backup.py with the host's python3 from the directory the role
    copies the hal_sqlite_* files to (no Ansible, no halswarm there)."""
    helper_dir = tmp_path / "libexec"
    helper_dir.mkdir()
    for part in datasafety.CORE_PARTS:
        shutil.copy(datasafety.core(part).__file__, helper_dir)
    db = tmp_path / "supervisor.db"
    make_db(db, 10)
    res = subprocess.run([sys.executable, "-I", str(helper_dir / "hal_sqlite_backup.py"), "backup", "--db", str(db),
                          "--dest-dir", str(tmp_path / "b"), "--prefix", "supervisor", "--keep", "1"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["prefix"] == "supervisor" and result["integrity"] == "ok"
    bad = subprocess.run([sys.executable, "-I", str(helper_dir / "hal_sqlite_backup.py"), "verify",
                          str(tmp_path / "missing.db")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1


# ---- retention (pure) ----------------------------------------------------------------------


def backups(*ages_days: float) -> list[tuple[str, float]]:
    return [(f"b{i}", NOW - age * DAY) for i, age in enumerate(ages_days)]


def test_retention_by_count_keeps_the_newest():
    assert BACKUP.select_expired(backups(0, 1, 2, 3, 4), keep=3, now=NOW) == ["b4", "b3"]


def test_retention_by_age():
    assert BACKUP.select_expired(backups(0, 10, 31, 45), max_age_days=30, now=NOW) == ["b3", "b2"]


def test_retention_count_and_age_combined():
    assert BACKUP.select_expired(backups(0, 1, 40, 2), keep=3, max_age_days=30, now=NOW) == ["b2"]


def test_retention_never_removes_the_newest_or_protected():
    assert BACKUP.select_expired(backups(50, 60, 70), max_age_days=30, now=NOW) == ["b2", "b1"]
    assert BACKUP.select_expired(backups(0, 1, 2), keep=1, now=NOW, protect=("b2",)) == ["b1"]


def test_retention_zero_means_unlimited_and_negative_is_refused():
    assert BACKUP.select_expired(backups(0, 100, 200), keep=0, max_age_days=0, now=NOW) == []
    with pytest.raises(ValueError):
        BACKUP.select_expired(backups(0), keep=-1)


def test_backup_names_round_trip():
    name = BACKUP.backup_name("supervisor", COMMON.utcnow().replace(microsecond=0))
    prefix, created = BACKUP.parse_backup_name(name)
    assert prefix == "supervisor" and abs(created - COMMON.utcnow().timestamp()) < 5
    assert BACKUP.parse_backup_name("supervisor-20260101T020000Z-2.db")[0] == "supervisor"
    assert BACKUP.parse_backup_name("supervisor.db") is None
    assert BACKUP.parse_backup_name("notes.txt") is None


def test_apply_retention_only_touches_matching_backup_files(tmp_path):
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (tmp_path / f"supervisor-{stamp}.db").write_bytes(b"x")
        (tmp_path / f"supervisor-{stamp}.db.sha256").write_text("x")
    (tmp_path / "other-20200101T000000Z.db").write_bytes(b"x")
    (tmp_path / "README").write_text("keep")
    removed = BACKUP.apply_retention(str(tmp_path), "supervisor", keep=1)
    assert [Path(p).name for p in removed] == ["supervisor-20200101T000000Z.db", "supervisor-20200102T000000Z.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README", "other-20200101T000000Z.db", "supervisor-20200103T000000Z.db",
        "supervisor-20200103T000000Z.db.sha256"]


# ---- backup / verify -----------------------------------------------------------------------


def test_backup_includes_uncheckpointed_wal_and_is_self_contained(tmp_path):
    db = tmp_path / "supervisor.db"
    make_db(db, 10)
    writer = connect(db)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO nodes(id) VALUES ('only-in-wal')")
    assert os.path.getsize(f"{db}-wal") > 0
    res = BACKUP.backup_database(str(db), str(tmp_path / "b"))
    writer.close()
    copy = sqlite3.connect(res["path"])
    assert copy.execute("SELECT count(*) FROM nodes WHERE id='only-in-wal'").fetchone()[0] == 1
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    copy.close()
    assert not Path(res["path"] + "-wal").exists()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [res["name"], res["name"] + ".sha256"]


def test_sidecar_is_sha256sum_format(tmp_path):
    db = tmp_path / "supervisor.db"
    make_db(db, 3)
    res = BACKUP.backup_database(str(db), str(tmp_path / "b"))
    digest = hashlib.sha256(Path(res["path"]).read_bytes()).hexdigest()
    assert Path(res["checksum_file"]).read_text() == f"{digest}  {res['name']}\n"
    assert oct(os.stat(res["checksum_file"]).st_mode & 0o777) == "0o600"


def test_verify_reports_each_problem(tmp_path):
    db = tmp_path / "supervisor.db"
    make_db(db, 30)
    path = BACKUP.backup_database(str(db), str(tmp_path / "b"))["path"]
    assert BACKUP.verify_backup(path)["ok"]
    Path(path + ".sha256").unlink()
    res = BACKUP.verify_backup(path)
    assert not res["ok"] and res["checksum"] == "missing" and res["kind"] == "checksum"
    assert BACKUP.verify_backup(path, require_checksum=False)["ok"]
    COMMON.write_sidecar(path)
    with open(path, "r+b") as handle:  # damage a page after the header, then re-sign it
        handle.seek(4096 * 3)
        handle.write(b"\xff" * 4096)
    COMMON.write_sidecar(path)
    res = BACKUP.verify_backup(path)
    assert res["checksum"] == "ok" and not res["ok"] and res["kind"] == "corrupt"
    text = tmp_path / "notes.db"
    text.write_text("not a database")
    res = BACKUP.verify_backup(str(text))
    assert res["kind"] == "not_sqlite" and "not an SQLite database" in res["problems"][0]


# ---- restore ordering ----------------------------------------------------------------------


def test_restore_moves_the_old_wal_with_the_replaced_file(tmp_path):
    src = tmp_path / "src.db"
    make_db(src, 5)
    backup = BACKUP.backup_database(str(src), str(tmp_path / "b"))["path"]
    db = tmp_path / "live.db"
    make_db(db, 20)
    crashed = connect(db)  # leave a WAL with committed rows behind, as a crashed supervisor would
    crashed.execute("PRAGMA wal_autocheckpoint=0")
    crashed.execute("INSERT INTO nodes(id) VALUES ('in-old-wal')")
    wal_bytes = Path(f"{db}-wal").read_bytes()
    snapshot = tmp_path / "crashed"
    snapshot.mkdir()
    for suffix in ("", "-wal"):
        (snapshot / f"live.db{suffix}").write_bytes(Path(f"{db}{suffix}").read_bytes())
    crashed.close()
    db = snapshot / "live.db"
    assert Path(f"{db}-wal").read_bytes() == wal_bytes
    res = RESTORE.restore_database(backup, str(db))
    assert res["before"]["nodes"] == 2  # the old WAL's rows were counted before
    assert not Path(f"{db}-wal").exists()  # the old WAL can never be replayed into the restored file
    assert res["replaced_files"] == [res["replaced"] + "-wal"]
    old = sqlite3.connect(res["replaced"])
    assert old.execute("SELECT count(*) FROM nodes WHERE id='in-old-wal'").fetchone()[0] == 1
    old.close()
    fresh = sqlite3.connect(db)
    assert fresh.execute("SELECT count(*) FROM events").fetchone()[0] == 5
    fresh.close()
    # Undo: the replaced file (with its WAL) restores through the backup API, WAL rows included.
    back = RESTORE.restore_database(res["replaced"], str(db), require_checksum=False)
    fresh = sqlite3.connect(db)
    assert fresh.execute("SELECT count(*) FROM nodes WHERE id='in-old-wal'").fetchone()[0] == 1
    assert fresh.execute("SELECT count(*) FROM events").fetchone()[0] == 20
    fresh.close()
    assert back["replaced"] and back["quick_check"] == "ok"


def test_datasafety_undo_restore_renames_back(tmp_path):
    src = tmp_path / "src.db"
    make_db(src, 5)
    backup = BACKUP.backup_database(str(src), str(tmp_path / "b"))["path"]
    db = tmp_path / "live.db"
    make_db(db, 9)
    res = RESTORE.restore_database(backup, str(db))
    rejected = datasafety.undo_restore(db, res["replaced"], res["replaced_files"])
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 9
    conn.close()
    assert Path(rejected).exists() and not Path(res["replaced"]).exists()


# ---- raw record decoding (recovery pass 2) -------------------------------------------------


def test_varint_and_record_decoding_match_sqlite(tmp_path):
    db = tmp_path / "r.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT, c REAL, d BLOB, e INTEGER)")
    rows = [(0, "x", 1.5, b"\x00\x01", None), (1, "é" * 300, -2.25, b"", 2**40), (-7, "", 0.0, b"z" * 5000, 2**63 - 1)]
    conn.executemany("INSERT INTO t VALUES (?,?,?,?,?)", rows)
    conn.commit()
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='t'").fetchone()[0]
    conn.close()
    pager = RECOVER.RawPages(str(db))
    try:
        leaves, complete = pager.walk_table(root)
        assert complete
        decoded = [(rowid, RECOVER.decode_record(payload))
                   for leaf in leaves for rowid, payload in pager.leaf_cells(leaf)]
    finally:
        pager.close()
    assert [tuple(values) for _rowid, values in decoded] == rows  # overflow pages followed for the big blob
    assert RECOVER._varint(bytes([0x81, 0x00]), 0) == (128, 2)
    assert RECOVER._varint(b"\xff" * 9, 0)[0] == 2**64 - 1
    with pytest.raises(ValueError):
        RECOVER.decode_record(b"\x02\x0a")  # reserved serial type
    with pytest.raises(ValueError):
        RECOVER.decode_record(b"\x02\x01")  # integer missing from the body


def test_raw_page_size_is_guessed_without_a_header(tmp_path):
    db = tmp_path / "g.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA page_size=8192")
    conn.execute("CREATE TABLE t (a TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [("y" * 200,)] * 500)
    conn.commit()
    conn.close()
    with open(db, "r+b") as handle:
        handle.write(b"\x00" * 100)
    pager = RECOVER.RawPages(str(db))
    try:
        assert not pager.header_ok and pager.page_size == 8192
        assert struct.unpack(">H", b"\x20\x00")[0] == 8192
    finally:
        pager.close()
