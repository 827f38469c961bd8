# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Unit tests (ansible-test units style) of hal_sqlite_backup, hal_sqlite_restore and hal_sqlite_recover:
each module's main() runs on real SQLite files; exit_json/fail_json are intercepted."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.halswarm.ops.plugins.module_utils import hal_sqlite_backup as backup_utils
from ansible_collections.halswarm.ops.plugins.module_utils import hal_sqlite_common as common_utils
from ansible_collections.halswarm.ops.plugins.modules import hal_sqlite_backup, hal_sqlite_recover, hal_sqlite_restore

SCHEMA = """
CREATE TABLE nodes (id TEXT PRIMARY KEY, hostname TEXT NOT NULL DEFAULT '', last_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, node_id TEXT, seq INTEGER, event_id TEXT NOT NULL,
    type TEXT NOT NULL, data TEXT, timestamp REAL NOT NULL, UNIQUE (node_id, seq));
CREATE INDEX idx_events_ts ON events(timestamp);
"""


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


@pytest.fixture(autouse=True)
def intercept(monkeypatch):
    def exit_json(self, **kwargs):
        kwargs.setdefault("changed", False)
        raise ExitJson(kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs["msg"] = msg
        raise FailJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)


def run(module, args, check=False, diff=False):
    params = dict(args)
    params["_ansible_check_mode"] = check
    params["_ansible_diff"] = diff
    with patch_module_args(params):
        try:
            module.main()
        except ExitJson as exc:
            return True, exc.args[0]
        except FailJson as exc:
            return False, exc.args[0]
    raise AssertionError("module returned without exit_json/fail_json")


def make_db(path, events=300, wal=True):
    conn = sqlite3.connect(str(path), isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO nodes(id) VALUES ('n1')")
    conn.execute("BEGIN")
    for i in range(1, events + 1):
        conn.execute("INSERT INTO events(node_id, seq, event_id, type, data, timestamp) VALUES ('n1', ?, ?, 't', ?, ?)",
                     (i, f"e{i}", "x" * 150, float(i)))
    conn.execute("COMMIT")
    return conn


def count(path, table="events"):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


# ---- hal_sqlite_backup -------------------------------------------------------------------------


def test_backup_creates_verified_0600_copy_with_sidecar(tmp_path):
    db = tmp_path / "supervisor.db"
    conn = make_db(db)  # stays open: a live WAL database
    ok, res = run(hal_sqlite_backup, {"src": str(db), "dest_dir": str(tmp_path / "b")})
    conn.close()
    assert ok, res
    assert res["changed"] and res["integrity"] == "ok"
    assert res["tables"] == {"events": 300, "nodes": 1}
    assert oct(os.stat(res["path"]).st_mode & 0o777) == "0o600"
    assert res["sha256"] == common_utils.sha256_file(res["path"])
    with open(res["checksum_file"]) as handle:
        assert handle.read().split() == [res["sha256"], os.path.basename(res["path"])]
    assert os.path.basename(res["path"]).startswith("supervisor-")
    assert res["backups"] == [os.path.basename(res["path"])]


def test_backup_retention_keeps_newest(tmp_path):
    db = tmp_path / "supervisor.db"
    make_db(db, events=10).close()
    dest = tmp_path / "b"
    dest.mkdir()
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        old = dest / (f"supervisor-{stamp}.db")
        old.write_bytes(b"old")
        (dest / (old.name + ".sha256")).write_text("x")
    ok, res = run(hal_sqlite_backup, {"src": str(db), "dest_dir": str(dest), "keep": 2})
    assert ok, res
    removed = sorted(os.path.basename(p) for p in res["removed"])
    assert removed == ["supervisor-20200101T000000Z.db", "supervisor-20200102T000000Z.db"]
    assert not (dest / "supervisor-20200101T000000Z.db.sha256").exists()
    assert len(res["backups"]) == 2


def test_backup_check_mode_writes_nothing(tmp_path):
    db = tmp_path / "supervisor.db"
    make_db(db, events=5).close()
    ok, res = run(hal_sqlite_backup, {"src": str(db), "dest_dir": str(tmp_path / "b")}, check=True, diff=True)
    assert ok and res["changed"]
    assert not (tmp_path / "b").exists()
    assert "supervisor-<new>.db" in res["diff"]["after"]


@pytest.mark.parametrize("content,kind", [(None, "missing"), (b"", "not_sqlite"), (b"hello, not sqlite" * 10,
                                                                                   "not_sqlite")])
def test_backup_bad_source(tmp_path, content, kind):
    src = tmp_path / "supervisor.db"
    if content is not None:
        src.write_bytes(content)
    ok, res = run(hal_sqlite_backup, {"src": str(src), "dest_dir": str(tmp_path / "b")})
    assert not ok and res["kind"] == kind, res
    assert str(src) in res["msg"]
    assert not (tmp_path / "b").exists() or not os.listdir(str(tmp_path / "b"))


# ---- hal_sqlite_restore ------------------------------------------------------------------------


def _backup(tmp_path, events):
    src = tmp_path / "src.db"
    make_db(src, events=events).close()
    return backup_utils.backup_database(str(src), str(tmp_path / "b"), prefix="supervisor")["path"]


def test_restore_replaces_and_keeps_old(tmp_path):
    backup = _backup(tmp_path, 50)
    db = tmp_path / "live" / "supervisor.db"
    db.parent.mkdir()
    make_db(db, events=80).close()
    ok, preview = run(hal_sqlite_restore, {"src": backup, "dest": str(db)}, check=True, diff=True)
    assert ok and preview["changed"]
    assert preview["changes"]["events"] == {"before": 80, "after": 50, "change": -30}
    assert count(db) == 80  # check mode did not touch it
    assert "events" in preview["diff"]["before"] and "50" in preview["diff"]["after"]
    ok, res = run(hal_sqlite_restore, {"src": backup, "dest": str(db)})
    assert ok, res
    assert res["quick_check"] == "ok" and count(db) == 50
    assert res["replaced"] and count(res["replaced"]) == 80
    assert oct(os.stat(str(db)).st_mode & 0o777) == "0o600"
    ok, again = run(hal_sqlite_restore, {"src": backup, "dest": str(db)})
    assert ok and not again["changed"]  # idempotent


def test_restore_refuses_tampered_backup(tmp_path):
    backup = _backup(tmp_path, 20)
    conn = sqlite3.connect(backup)
    conn.execute("UPDATE events SET data = 'forged' WHERE seq = 3")
    conn.commit()
    conn.close()
    db = tmp_path / "supervisor.db"
    make_db(db, events=5).close()
    before = common_utils.sha256_file(str(db))
    ok, res = run(hal_sqlite_restore, {"src": backup, "dest": str(db)})
    assert not ok and res["kind"] == "checksum"
    assert "checksum mismatch" in res["msg"]
    assert common_utils.sha256_file(str(db)) == before


def test_restore_refuses_missing_checksum_unless_allowed(tmp_path):
    backup = _backup(tmp_path, 20)
    os.unlink(backup + ".sha256")
    db = tmp_path / "supervisor.db"
    ok, res = run(hal_sqlite_restore, {"src": backup, "dest": str(db)})
    assert not ok and res["kind"] == "checksum" and "no checksum file" in res["msg"]
    ok, res = run(hal_sqlite_restore, {"src": backup, "dest": str(db), "require_checksum": False})
    assert ok and count(db) == 20


def test_restore_refuses_database_in_use(tmp_path):
    backup = _backup(tmp_path, 10)
    db = tmp_path / "supervisor.db"
    make_db(db, events=3).close()
    # A lock held by another process (this process's own POSIX locks are invisible to the probe).
    proc = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3,sys,time;c=sqlite3.connect(sys.argv[1]);c.execute('select 1 from nodes').fetchall();"
        "print('ready',flush=True);time.sleep(30)"), str(db)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        ok, res = run(hal_sqlite_restore, {"src": backup, "dest": str(db)})
        assert not ok and res["kind"] == "in_use", res
        ok, res = run(hal_sqlite_restore, {"src": backup, "dest": str(db)}, check=True)
        assert ok and res["in_use"]
    finally:
        proc.kill()
        proc.wait()


# ---- hal_sqlite_recover ------------------------------------------------------------------------


def _clobber_leaf_pages(db, table, first, n):
    conn = sqlite3.connect(str(db))
    pages = [p for p, kind in conn.execute("SELECT pageno, pagetype FROM dbstat WHERE name = ?", (table,))
             if kind == "leaf"]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(str(db), "r+b") as handle:
        for pgno in pages[first:first + n]:
            handle.seek((pgno - 1) * page_size)
            handle.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    return len(pages)


def test_recover_saves_readable_rows_and_reports_loss(tmp_path):
    db = tmp_path / "supervisor.db"
    make_db(db, events=3000, wal=False).close()
    _clobber_leaf_pages(db, "events", 10, 3)
    original = common_utils.sha256_file(str(db))
    dest = tmp_path / "recovered.db"
    ok, res = run(hal_sqlite_recover, {"src": str(db), "dest": str(dest)})
    assert ok, res
    events = res["tables"]["events"]
    assert 0 < events["lost"] < 200 and events["saved"] + events["lost"] == 3000
    assert events["skipped_ranges"] and not events["complete"]
    assert res["tables"]["nodes"]["saved"] == 1 and res["tables"]["nodes"]["lost"] == 0
    assert res["integrity"] == "ok" and count(dest) == events["saved"]
    assert common_utils.sha256_file(str(db)) == original  # never touched
    assert backup_utils.verify_backup(str(dest))["ok"]  # restorable as is


def test_recover_check_mode_creates_nothing(tmp_path):
    db = tmp_path / "supervisor.db"
    make_db(db, events=100, wal=False).close()
    dest = tmp_path / "recovered.db"
    ok, res = run(hal_sqlite_recover, {"src": str(db), "dest": str(dest)}, check=True)
    assert ok and res["tables"]["events"]["saved"] == 100
    assert not dest.exists()


def test_recover_refuses_same_path_and_existing_dest(tmp_path):
    db = tmp_path / "supervisor.db"
    make_db(db, events=10, wal=False).close()
    ok, res = run(hal_sqlite_recover, {"src": str(db), "dest": str(db)})
    assert not ok and "differ" in res["msg"]
    other = tmp_path / "other.db"
    other.write_bytes(b"keep me")
    ok, res = run(hal_sqlite_recover, {"src": str(db), "dest": str(other)})
    assert not ok and res["kind"] == "exists" and other.read_bytes() == b"keep me"


def test_restore_removes_the_clean_shutdown_marker(tmp_path):
    """The supervisor skips its full integrity check only beside its own marker: a restored file must not
    inherit it (check mode leaves it)."""
    backup = _backup(tmp_path, 50)
    db = tmp_path / "live" / "supervisor.db"
    db.parent.mkdir()
    make_db(db, events=80).close()
    marker = tmp_path / "live" / "supervisor.db.clean"
    marker.write_text("{}")
    ok, _res = run(hal_sqlite_restore, {"src": backup, "dest": str(db)}, check=True)
    assert ok and marker.exists()
    ok, res = run(hal_sqlite_restore, {"src": backup, "dest": str(db)})
    assert ok and res["changed"] and not marker.exists()
