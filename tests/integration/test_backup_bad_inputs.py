"""Bad inputs to backup / verify / restore / recover: a missing file, a file that is not SQLite, wrong
permissions (a non-root user through setpriv: as root chmod alone blocks nothing), a full disk (a 1 MiB
tmpfs mounted by the test). Every case ends with one clear error line, the original untouched and
nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from halswarm.ops import datasafety
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from tests.support.backup import halctl, one_error_line, sha256

COMMON = datasafety.core("common")
BACKUP = datasafety.core("backup")
RESTORE = datasafety.core("restore")


def make_db(path: Path, events: int, size: int = 200) -> Path:
    conn = connect(path)
    migrate(conn)
    conn.execute("INSERT INTO nodes(id) VALUES ('n1')")
    conn.execute("BEGIN")
    for i in range(1, events + 1):
        conn.execute("INSERT INTO events(node_id, seq, event_id, type, data, ts, received_at)"
                     " VALUES ('n1', ?, ?, 't', ?, ?, ?)", (i, f"e{i}", "x" * size, float(i), float(i)))
    conn.execute("COMMIT")
    conn.close()
    return path


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at teardown."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                         capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="hal-ds-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- missing files -----------------------------------------------------------------------------


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "supervisor.db"
    backups = tmp_path / "backups"
    res = halctl("backup", "create", "--database", str(missing), "--dir", str(backups))
    assert res.returncode == 1
    assert one_error_line(res) == f"error: {missing}: no such file or directory"
    assert not backups.exists()

    live = make_db(tmp_path / "live.db", 5)
    before = sha256(live)
    res = halctl("restore", str(tmp_path / "gone.db"), "--database", str(live), "--no-service")
    assert res.returncode == 1 and "no such file or directory" in one_error_line(res)
    assert sha256(live) == before

    res = halctl("backup", "verify", str(tmp_path / "gone.db"), "--dir", str(backups))
    assert res.returncode == 1 and "no such file or directory" in res.stdout + res.stderr

    res = halctl("backup", "recover", "--from", str(missing), str(tmp_path / "out.db"))
    assert res.returncode == 1 and "no such file or directory" in one_error_line(res)
    assert not (tmp_path / "out.db").exists()

    res = halctl("backup", "create", "--config", str(tmp_path / "no-config.json"))
    assert res.returncode == 1 and "cannot read the supervisor config" in one_error_line(res)


# ---- not SQLite ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b'{"server": {"port": 8420}}\n' * 500, os.urandom(64 * 1024)])
def test_a_file_that_is_not_sqlite(tmp_path: Path, content: bytes) -> None:
    bogus = tmp_path / "supervisor.db"
    bogus.write_bytes(content)
    before = sha256(bogus)
    backups = tmp_path / "backups"
    res = halctl("backup", "create", "--database", str(bogus), "--dir", str(backups))
    assert res.returncode == 1
    assert "not an SQLite database" in one_error_line(res)
    assert listing(backups) == []

    res = halctl("backup", "recover", "--from", str(bogus), str(tmp_path / "out.db"))
    assert res.returncode == 1 and "not an SQLite database" in one_error_line(res)
    assert listing(tmp_path) == ["supervisor.db"]

    live = make_db(tmp_path / "live.db", 3)
    (tmp_path / "supervisor.db.sha256").write_text(f"{before}  supervisor.db\n")
    res = halctl("restore", str(bogus), "--database", str(live), "--no-service")
    assert res.returncode == 1 and "not an SQLite database" in one_error_line(res)
    assert sha256(bogus) == before
    assert BACKUP.verify_backup(str(live), require_checksum=False)["ok"]


# ---- permissions (non-root user) ---------------------------------------------------------------


def test_wrong_permissions_as_a_non_root_user(shared_dir: Path) -> None:
    db = make_db(shared_dir / "supervisor.db", 20)
    db.chmod(0o600)  # root's, like the service user's database
    before = sha256(db)
    out = shared_dir / "backups"
    out.mkdir(mode=0o755)
    res = halctl("backup", "create", "--database", str(db), "--dir", str(out), user="nobody")
    assert res.returncode == 1
    assert one_error_line(res) == f"error: {db}: permission denied (cannot read it as uid 65534)"

    db.chmod(0o644)  # readable, but the backup directory is not writable for nobody
    res = halctl("backup", "create", "--database", str(db), "--dir", str(out), user="nobody")
    assert res.returncode == 1
    assert "permission denied (cannot write backups there as uid 65534)" in one_error_line(res)
    assert listing(out) == []

    backup = BACKUP.backup_database(str(db), str(out))["path"]  # root takes one; it is 0600
    res = halctl("backup", "verify", backup, user="nobody")
    assert res.returncode == 1 and "permission denied" in res.stdout + res.stderr
    os.chmod(backup, 0o644)
    os.chmod(backup + ".sha256", 0o644)
    res = halctl("restore", backup, "--database", str(db), "--no-service", user="nobody")
    assert res.returncode == 1 and "permission denied" in one_error_line(res)
    res = halctl("backup", "recover", "--from", str(db), str(out / "rec.db"), user="nobody")
    assert res.returncode == 1 and "permission denied" in one_error_line(res)
    assert sha256(db) == before
    assert listing(shared_dir) == ["backups", "supervisor.db"]
    assert listing(out) == [Path(backup).name, Path(backup).name + ".sha256"]


# ---- disk full -----------------------------------------------------------------------------------


def test_backup_to_a_full_disk(tmp_path: Path, small_tmpfs: Path) -> None:
    db = make_db(tmp_path / "supervisor.db", 8000)  # about 2.5 MiB
    assert db.stat().st_size > 2 * 1024 * 1024
    before = sha256(db)
    res = halctl("backup", "create", "--database", str(db), "--dir", str(small_tmpfs))
    assert res.returncode == 1
    line = one_error_line(res)
    assert "not enough free space" in line and str(small_tmpfs) in line
    assert listing(small_tmpfs) == [] and sha256(db) == before


def test_backup_running_out_of_space_midway_leaves_nothing(tmp_path: Path, small_tmpfs: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The free-space check passed (space was taken meanwhile): SQLite's own disk-full error."""
    db = make_db(tmp_path / "supervisor.db", 8000)
    before = sha256(db)
    monkeypatch.setattr(BACKUP, "check_backup_inputs", lambda src, dest: {})
    with pytest.raises(datasafety.DataSafetyFailure) as err:
        datasafety.backup(db, small_tmpfs)
    assert err.value.kind == "no_space"
    assert "no space left on device" in err.value.message
    assert listing(small_tmpfs) == [] and sha256(db) == before


def test_restore_onto_a_full_disk_keeps_the_old_database(tmp_path: Path, small_tmpfs: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Built beside, then copied in: building it on the 1 MiB tmpfs needs room for its WAL too (the
    # schema's indexes grow with each migration), and a failed checkpoint would leave -wal/-shm behind.
    live = small_tmpfs / "supervisor.db"
    shutil.copyfile(make_db(tmp_path / "live.db", 300), live)
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (COMMON.free_bytes(str(small_tmpfs)) - 64 * 1024))
    big = make_db(tmp_path / "big.db", 3000)
    backup = BACKUP.backup_database(str(big), str(tmp_path / "b"))["path"]
    before = sha256(live)
    res = halctl("restore", backup, "--database", str(live), "--no-service")
    assert res.returncode == 1 and "not enough free space to restore" in one_error_line(res)
    assert sha256(live) == before and listing(small_tmpfs) == ["filler", "supervisor.db"]

    # The copy itself hits ENOSPC (the check passed, space vanished): the old file is still in place.
    monkeypatch.setattr(RESTORE, "free_bytes", lambda _d: 1 << 40)  # what restore_database calls
    with pytest.raises(datasafety.DataSafetyFailure) as err:
        datasafety.restore(Path(backup), live, datasafety.NoService(), ready_url=None)
    assert err.value.kind == "no_space"
    assert sha256(live) == before and listing(small_tmpfs) == ["filler", "supervisor.db"]


def test_recover_into_a_full_disk(tmp_path: Path, small_tmpfs: Path) -> None:
    db = make_db(tmp_path / "supervisor.db", 8000)
    before = sha256(db)
    res = halctl("backup", "recover", "--from", str(db), str(small_tmpfs / "recovered.db"))
    assert res.returncode == 1
    assert "no space left on device" in one_error_line(res)
    assert listing(small_tmpfs) == [] and sha256(db) == before


# ---- usage ----------------------------------------------------------------------------------------


def test_restore_usage_errors(tmp_path: Path) -> None:
    res = halctl("restore", "x.db", "--database", str(tmp_path / "a.db"), "--stop-command", "true")
    assert res.returncode == 2 and "go together" in one_error_line(res)
    res = halctl("restore", "x.db", "--database", str(tmp_path / "a.db"), "--no-service",
                 "--stop-command", "true", "--start-command", "true")
    assert res.returncode == 2


def test_verify_all_reports_each_backup(tmp_path: Path) -> None:
    db = make_db(tmp_path / "supervisor.db", 10)
    backups = tmp_path / "backups"
    good = BACKUP.backup_database(str(db), str(backups))["path"]
    bad = Path(good).with_name("supervisor-20000101T000000Z.db")
    bad.write_bytes(b"garbage" * 100)
    (backups / (bad.name + ".sha256")).write_text(f"{sha256(bad)}  {bad.name}\n")
    res = halctl("backup", "verify", "--dir", str(backups), "--database", str(db), "-o", "json")
    assert res.returncode == 1
    results = {Path(r["path"]).name: r for r in json.loads(res.stdout)}
    assert results[Path(good).name]["ok"] and not results[bad.name]["ok"]
    assert "1 of 2 backup(s) failed verification" in one_error_line(res)
