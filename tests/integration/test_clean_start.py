"""Start-up independent of size (issue 22 point 3): after the supervisor's own clean stop the start skips
the full quick_check (clean-shutdown marker) and runs it in the background soon after; after a kill -9,
a file touched while stopped (even with its mtime put back) or a marker of another file, the start runs
the full check and a damaged file refuses the start exactly as before."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from halswarm.store.clean_marker import marker_path
from tests.support.supervisor_proc import REPO, SupervisorProc
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

SKIPPED = "start-up integrity check: full quick_check skipped"
FULL = "start-up integrity check: running the full quick_check"


def _messages(sup: SupervisorProc) -> list[str]:
    out = []
    for ln in sup.log_path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(ln).get("msg", "") if ln.startswith("{") else ln)
        except json.JSONDecodeError:
            out.append(ln)
    return out


def _start_checks(sup: SupervisorProc) -> list[str]:
    return [m for m in _messages(sup) if m.startswith(("start-up integrity check", "database integrity check"))]


def _fill(sup: SupervisorProc, rows: int = 3000) -> None:
    """Events written while the supervisor is stopped (SQLite, like a migration tool would)."""
    conn = sqlite3.connect(sup.db_path)
    with conn:
        conn.executemany(
            "INSERT INTO events(node_id, seq, event_id, session_id, project, type, data, ts, received_at)"
            " VALUES (NULL, NULL, ?, 's', 'p', 't', ?, ?, ?)",
            [(f"e{i}", '{"x": "' + "y" * 400 + '"}', 1.7e9 + i, 1.7e9) for i in range(rows)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _index_pages(db: Path, name: str) -> tuple[list[int], int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    pages = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (name,))]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return [p for p in pages if p > 1], size


def _garbage_over(db: Path, pages: list[int], page_size: int) -> None:
    """The drill's injection: garbage over a b-tree's pages, past each page's first bytes."""
    with open(db, "r+b") as f:
        for p in pages:
            f.seek((p - 1) * page_size + 8)
            f.write(b"\xa5" * (page_size - 8))
        f.flush()
        os.fsync(f.fileno())


def _refused(sup: SupervisorProc) -> subprocess.CompletedProcess[str]:
    sup.write_config()
    return subprocess.run([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(sup.config_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def _stopped_cleanly(sup: SupervisorProc) -> None:
    assert sup.stop() == 0
    assert marker_path(sup.db_path).exists(), sup.log_tail()


@pytest.fixture
def sup(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SupervisorProc(tmp_path / "sup")
    s.start()
    _stopped_cleanly(s)  # the first start checked the (new) file in full: its clean stop may vouch for it
    _fill(s)  # not through the supervisor: the marker no longer matches
    s.start()
    _stopped_cleanly(s)
    yield s
    s.stop()


def test_clean_stop_then_start_skips_the_full_check_and_runs_it_in_the_background(sup: SupervisorProc) -> None:
    sup.start()
    assert not marker_path(sup.db_path).exists()  # taken at start, before the file was opened for writing
    wait_for(lambda: "database integrity check passed" in " ".join(_start_checks(sup)),
             "the background check soon after the start", 60)
    checks = _start_checks(sup)
    assert len(checks) == 4 and checks[2].startswith(SKIPPED), checks
    assert checks[0].startswith(f"{FULL} (no clean-shutdown marker"), checks  # the first start
    assert checks[1].startswith(FULL) and "changed since the clean shutdown" in checks[1], checks  # _fill


def test_a_stop_before_the_background_check_leaves_no_marker(sup: SupervisorProc, tmp_path: Path) -> None:
    sup.extra = {"database": {"integrity_check_hours": 0}}
    sup.start()
    assert _start_checks(sup)[-1].startswith(SKIPPED)
    assert sup.stop() == 0
    # Stopped within the first seconds: the file was never checked in full during this run, so no marker.
    if not any("database integrity check passed" in m for m in _messages(sup)):
        assert not marker_path(sup.db_path).exists()


def test_kill9_then_start_runs_the_full_check(sup: SupervisorProc) -> None:
    sup.start()
    sup.kill9()
    assert not marker_path(sup.db_path).exists()
    sup.start()
    assert _start_checks(sup)[-1].startswith(f"{FULL} (no clean-shutdown marker"), _start_checks(sup)


def test_the_drills_injection_is_checked_in_full_and_refused(sup: SupervisorProc) -> None:
    """tests/fleet/drills: stop, checkpoint through another SQLite connection, garbage over index pages."""
    conn = sqlite3.connect(sup.db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    _garbage_over(sup.db_path, *_index_pages(sup.db_path, "idx_events_ts"))
    res = _refused(sup)
    assert res.returncode == 1, res.stderr[-800:]
    assert FULL in res.stdout + res.stderr and "changed since the clean shutdown" in res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "failed its integrity check" in errors[0], res.stderr[-500:]


def test_damage_with_size_and_mtime_put_back_is_checked_in_full_and_refused(sup: SupervisorProc) -> None:
    st = os.stat(sup.db_path)
    _garbage_over(sup.db_path, *_index_pages(sup.db_path, "idx_events_ts"))
    os.utime(sup.db_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(sup.db_path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    res = _refused(sup)
    assert res.returncode == 1, res.stderr[-800:]
    assert "ctime_ns differs" in res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "failed its integrity check" in errors[0], res.stderr[-500:]


def test_a_marker_of_another_file_is_ignored(sup: SupervisorProc, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy2(sup.db_path, copy)  # same bytes and mtime, another inode: the marker is not its
    os.replace(copy, sup.db_path)
    sup.start()
    assert _start_checks(sup)[-1].startswith(FULL) and "ino differs" in _start_checks(sup)[-1]
