"""Real corruption of a real supervisor database (overwritten pages, a destroyed b-tree root, a truncated
file, flipped bytes in an index, a destroyed first page): `halctl backup recover` saves the rows that
still read (each one identical to the original), reports per table what was lost, never touches the
damaged file, and the result restores and runs."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.backup import REPO, count, halctl, halctl_json, one_error_line, populate, sha256
from tests.support.supervisor_proc import SupervisorProc

NODE = "node-r"
TOTAL = 3000


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database written by the real supervisor: 3000 agent events (every 100th one spills onto
    overflow pages), nodes, sessions; then a clean shutdown."""
    work = tmp_path_factory.mktemp("golden")
    sup = SupervisorProc(work / "sup")
    sup.start()
    try:
        populate(sup, NODE, 1, TOTAL, size=120, big_every=100)
    finally:
        assert sup.stop() == 0
    assert count(sup.db_path, "SELECT count(*) FROM events WHERE seq IS NOT NULL") == TOTAL
    return sup.db_path


def _pages(db: Path, name: str, kind: str | None = None) -> list[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT pageno, pagetype FROM dbstat WHERE name = ? ORDER BY pageno", (name,)).fetchall()
    finally:
        conn.close()
    return [p for p, t in rows if kind is None or t == kind]


def _overwrite(db: Path, pages: list[int], pattern: bytes = b"\xde\xad\xbe\xef") -> None:
    with open(db, "r+b") as handle:
        for pgno in pages:
            handle.seek((pgno - 1) * 4096)
            handle.write(pattern * (4096 // len(pattern)))


def overwrite_leaf_pages(db: Path, golden: Path) -> None:
    leaves = _pages(golden, "events", "leaf")
    _overwrite(db, leaves[len(leaves) // 2:len(leaves) // 2 + 4])


def destroy_btree_root(db: Path, golden: Path) -> None:
    _overwrite(db, [_pages(golden, "events")[0]])


def truncate(db: Path, golden: Path) -> None:
    with open(db, "r+b") as handle:
        handle.truncate(db.stat().st_size * 6 // 10 // 4096 * 4096)


def flip_index_bytes(db: Path, golden: Path) -> None:
    with open(db, "r+b") as handle:
        for pgno in _pages(golden, "idx_events_ts")[2:12]:
            handle.seek((pgno - 1) * 4096 + 300)
            chunk = handle.read(256)
            handle.seek((pgno - 1) * 4096 + 300)
            handle.write(bytes(b ^ 0xFF for b in chunk))


def destroy_first_page(db: Path, golden: Path) -> None:
    _overwrite(db, [1])


# case -> (how to damage the file, what the events report must say given the original row count)
CASES: dict[str, tuple[Callable[[Path, Path], None], Callable[[dict, int], bool]]] = {
    "overwrite_leaf_pages": (overwrite_leaf_pages, lambda ev, total: bool(
        0 < ev["lost"] < 200 and ev["expected"] == total and ev["skipped_ranges"] and not ev["complete"])),
    "destroy_btree_root": (destroy_btree_root, lambda ev, total: (
        ev["lost"] == 0 and ev["saved"] == total and ev["saved_sql"] == 0 and ev["saved_pages"] == total)),
    "truncate": (truncate, lambda ev, total: 0 < ev["saved"] < total and not ev["complete"]),
    "flip_index_bytes": (flip_index_bytes, lambda ev, total: ev["lost"] == 0 and ev["saved"] == total),
    "destroy_first_page": (destroy_first_page, lambda ev, total: ev["saved"] == total),
}


def _rows(db: Path, where: str = "") -> dict[int, tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0]: tuple(r) for r in conn.execute(f"SELECT * FROM events {where}")}
    finally:
        conn.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(CASES))
def test_recover_saves_readable_rows_and_reports_the_rest(golden: Path, tmp_path: Path, case: str) -> None:
    corrupt, check = CASES[case]
    damaged = tmp_path / "supervisor.db"
    shutil.copyfile(golden, damaged)
    corrupt(damaged, golden)
    fingerprint = (sha256(damaged), damaged.stat().st_size, damaged.stat().st_mtime_ns)
    out = tmp_path / "recovered.db"

    result = halctl_json("backup", "recover", "--from", str(damaged), str(out))

    assert (sha256(damaged), damaged.stat().st_size, damaged.stat().st_mtime_ns) == fingerprint  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recovered.db", "recovered.db.sha256", "supervisor.db"]
    events = result["tables"]["events"]
    assert check(events, count(golden)), json.dumps(events)[:2000]
    if events["expected"] is not None:
        assert events["saved"] + events["lost"] == events["expected"]
    assert result["integrity"] == "ok"
    if case == "destroy_first_page":
        assert result["schema_source"] == "migrations" and result["tables"]["nodes"]["saved"] == 1
    # Every saved row is exactly the original row: nothing invented, nothing garbled.
    original = _rows(golden)
    saved = _rows(out)
    assert len(saved) == events["saved"]
    assert all(original.get(rowid) == row for rowid, row in saved.items())
    conn = sqlite3.connect(out)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"idx_events_ts", "idx_events_session_ts"} <= indexes
        migrations = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        assert migrations == count(golden, "SELECT count(*) FROM schema_migrations")
    finally:
        conn.close()
    verified = halctl_json("backup", "verify", str(out))
    assert verified["ok"]  # the recovered file is a restorable backup (checksum sidecar written)


@pytest.mark.timeout(180)
def test_recovered_database_restores_and_the_supervisor_runs_on_it(golden: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.db"
    shutil.copyfile(golden, damaged)
    overwrite_leaf_pages(damaged, golden)

    # The supervisor refuses the damaged file, naming the way out.
    sup = SupervisorProc(tmp_path / "sup")
    sup.workdir.mkdir(parents=True)
    shutil.copyfile(damaged, sup.db_path)
    sup.write_config()
    proc = subprocess.run([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(sup.config_path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 1 and "halctl restore" in proc.stderr and "supervisor-db-corruption" in proc.stderr

    # `halctl restore` refuses the damaged file itself...
    res = halctl("restore", str(damaged), "--database", str(sup.db_path), "--no-service")
    assert res.returncode == 1 and "no checksum file" in one_error_line(res)

    # ...recover it, restore the result, and the supervisor starts on it with the saved rows.
    result = halctl_json("backup", "recover", "--from", str(sup.db_path), str(tmp_path / "recovered.db"))
    saved = result["tables"]["events"]["saved"]
    restored = halctl_json("restore", str(tmp_path / "recovered.db"), "--database", str(sup.db_path), "--no-service")
    assert restored["quick_check"] == "ok" and restored["replaced"]
    assert restored["changes"]["events"]["after"] == saved
    sup.start()
    try:
        with sup.client() as client:
            body = client.get("/api/v1/events", params={"node_id": NODE, "type": "message.updated", "limit": 1})
            assert body.status_code == 200
            agent_events = count(tmp_path / "recovered.db", "SELECT count(*) FROM events WHERE type='message.updated'")
            assert 0 < agent_events <= saved
            assert body.json()["meta"]["total"] == agent_events
    finally:
        sup.stop()
