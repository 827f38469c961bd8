"""The single data-safety implementation (collection module_utils hal_sqlite.py), as halctl loads it:
retention selection (pure), names, sidecars, verification, restore ordering, record decoding."""

from __future__ import annotations

import hashlib
import inspect
import os
import sqlite3
import struct
from pathlib import Path

import pytest

from halswarm.ops import datasafety
from halswarm.store import migrations as store_migrations
from halswarm.store.db import connect
from halswarm.store.migrations import migrate

H = datasafety.core()
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


def test_core_is_the_collection_file():
    repo = Path(__file__).resolve().parents[3]
    expected = repo / "collections/ansible_collections/halswarm/ops/plugins/module_utils/hal_sqlite.py"
    assert Path(H.__file__).resolve() == expected.resolve()
    assert datasafety.core() is H  # loaded once


def test_schema_migrations_ddl_matches_the_migrator():
    """The recovery fallback recreates halswarm's bookkeeping table; it must stay identical."""
    assert H.SCHEMA_MIGRATIONS_DDL in inspect.getsource(store_migrations.migrate).replace('"\n        "', "")


def test_core_imports_only_the_standard_library():
    source = Path(H.__file__).read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines()
                if line.startswith(("import ", "from ")) and not line.startswith("from __future__")}
    assert imported <= {"contextlib", "datetime", "errno", "hashlib", "json", "os", "re", "shutil", "sqlite3",
                        "stat", "struct", "sys", "tempfile", "time"}


# ---- retention (pure) ----------------------------------------------------------------------


def backups(*ages_days: float) -> list[tuple[str, float]]:
    return [(f"b{i}", NOW - age * DAY) for i, age in enumerate(ages_days)]


def test_retention_by_count_keeps_the_newest():
    assert H.select_expired(backups(0, 1, 2, 3, 4), keep=3, now=NOW) == ["b4", "b3"]


def test_retention_by_age():
    assert H.select_expired(backups(0, 10, 31, 45), max_age_days=30, now=NOW) == ["b3", "b2"]


def test_retention_count_and_age_combined():
    assert H.select_expired(backups(0, 1, 40, 2), keep=3, max_age_days=30, now=NOW) == ["b2"]


def test_retention_never_removes_the_newest_or_protected():
    assert H.select_expired(backups(50, 60, 70), max_age_days=30, now=NOW) == ["b2", "b1"]
    assert H.select_expired(backups(0, 1, 2), keep=1, now=NOW, protect=("b2",)) == ["b1"]


def test_retention_zero_means_unlimited_and_negative_is_refused():
    assert H.select_expired(backups(0, 100, 200), keep=0, max_age_days=0, now=NOW) == []
    with pytest.raises(ValueError):
        H.select_expired(backups(0), keep=-1)


def test_backup_names_round_trip():
    name = H.backup_name("supervisor", H.utcnow().replace(microsecond=0))
    prefix, created = H.parse_backup_name(name)
    assert prefix == "supervisor" and abs(created - H.utcnow().timestamp()) < 5
    assert H.parse_backup_name("supervisor-20260101T020000Z-2.db")[0] == "supervisor"
    assert H.parse_backup_name("supervisor.db") is None
    assert H.parse_backup_name("notes.txt") is None


def test_apply_retention_only_touches_matching_backup_files(tmp_path):
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (tmp_path / f"supervisor-{stamp}.db").write_bytes(b"x")
        (tmp_path / f"supervisor-{stamp}.db.sha256").write_text("x")
    (tmp_path / "other-20200101T000000Z.db").write_bytes(b"x")
    (tmp_path / "README").write_text("keep")
    removed = H.apply_retention(str(tmp_path), "supervisor", keep=1)
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
    res = H.backup_database(str(db), str(tmp_path / "b"))
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
    res = H.backup_database(str(db), str(tmp_path / "b"))
    digest = hashlib.sha256(Path(res["path"]).read_bytes()).hexdigest()
    assert Path(res["checksum_file"]).read_text() == f"{digest}  {res['name']}\n"
    assert oct(os.stat(res["checksum_file"]).st_mode & 0o777) == "0o600"


def test_verify_reports_each_problem(tmp_path):
    db = tmp_path / "supervisor.db"
    make_db(db, 30)
    path = H.backup_database(str(db), str(tmp_path / "b"))["path"]
    assert H.verify_backup(path)["ok"]
    Path(path + ".sha256").unlink()
    res = H.verify_backup(path)
    assert not res["ok"] and res["checksum"] == "missing" and res["kind"] == "checksum"
    assert H.verify_backup(path, require_checksum=False)["ok"]
    H.write_sidecar(path)
    with open(path, "r+b") as handle:  # damage a page after the header, then re-sign it
        handle.seek(4096 * 3)
        handle.write(b"\xff" * 4096)
    H.write_sidecar(path)
    res = H.verify_backup(path)
    assert res["checksum"] == "ok" and not res["ok"] and res["kind"] == "corrupt"
    text = tmp_path / "notes.db"
    text.write_text("not a database")
    res = H.verify_backup(str(text))
    assert res["kind"] == "not_sqlite" and "not an SQLite database" in res["problems"][0]


# ---- restore ordering ----------------------------------------------------------------------


def test_restore_moves_the_old_wal_with_the_replaced_file(tmp_path):
    src = tmp_path / "src.db"
    make_db(src, 5)
    backup = H.backup_database(str(src), str(tmp_path / "b"))["path"]
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
    res = H.restore_database(backup, str(db))
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
    back = H.restore_database(res["replaced"], str(db), require_checksum=False)
    fresh = sqlite3.connect(db)
    assert fresh.execute("SELECT count(*) FROM nodes WHERE id='in-old-wal'").fetchone()[0] == 1
    assert fresh.execute("SELECT count(*) FROM events").fetchone()[0] == 20
    fresh.close()
    assert back["replaced"] and back["quick_check"] == "ok"


def test_datasafety_undo_restore_renames_back(tmp_path):
    src = tmp_path / "src.db"
    make_db(src, 5)
    backup = H.backup_database(str(src), str(tmp_path / "b"))["path"]
    db = tmp_path / "live.db"
    make_db(db, 9)
    res = H.restore_database(backup, str(db))
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
    pager = H.RawPages(str(db))
    try:
        leaves, complete = pager.walk_table(root)
        assert complete
        decoded = [(rowid, H.decode_record(payload)) for leaf in leaves for rowid, payload in pager.leaf_cells(leaf)]
    finally:
        pager.close()
    assert [tuple(values) for _rowid, values in decoded] == rows  # overflow pages followed for the big blob
    assert H._varint(bytes([0x81, 0x00]), 0) == (128, 2)
    assert H._varint(b"\xff" * 9, 0)[0] == 2**64 - 1
    with pytest.raises(ValueError):
        H.decode_record(b"\x02\x0a")  # reserved serial type
    with pytest.raises(ValueError):
        H.decode_record(b"\x02\x01")  # integer missing from the body


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
    pager = H.RawPages(str(db))
    try:
        assert not pager.header_ok and pager.page_size == 8192
        assert struct.unpack(">H", b"\x20\x00")[0] == 8192
    finally:
        pager.close()
