"""Damage that appears while the supervisor runs (issue 22: the integrity check repeats in the background)
is found by the periodic `quick_check`, which then takes the corruption path
(nothing commits, /readyz 503 naming the cause, the one-line error, exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from halswarm.core.model import Node
from halswarm.store.db import FileCheck, connect
from halswarm.store.migrations import migrate
from halswarm.store.repos.events import insert_events
from halswarm.store.repos.nodes import upsert_node
from tests.support.supervisor_proc import REPO, SupervisorProc
from tests.support.waiting import wait_for


def _database_with_events(path: Path) -> tuple[list[int], int]:
    """A database with 3,000 events; returns the pages of the events table's leaves and the page size."""
    conn = connect(path)
    migrate(conn)
    conn.execute("BEGIN")
    upsert_node(conn, Node(id="n", status="offline"))
    insert_events(conn, [("n", i, f"e{i}", "s", "p", "t", '{"x": "' + "y" * 400 + '"}', 1.7e9 + i, 1.7e9)
                         for i in range(1, 3001)])
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    leaves = [p for (p,) in conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' ORDER BY pageno")]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return leaves, page_size


def _damage(path: Path, leaves: list[int], page_size: int) -> None:
    with open(path, "r+b") as handle:
        for pgno in leaves[len(leaves) // 2:len(leaves) // 2 + 3]:
            handle.seek((pgno - 1) * page_size)
            handle.write(b"\xde\xad\xbe\xef" * (page_size // 4))


@pytest.mark.timeout(120)
def test_background_check_finds_damage_that_appears_while_running(tmp_path: Path) -> None:
    sup = SupervisorProc(tmp_path / "sup", extra={"database": {"integrity_check_hours": 0.0005}})  # ~2 s
    sup.workdir.mkdir(parents=True)
    leaves, page_size = _database_with_events(sup.db_path)
    sup.write_config()
    with open(sup.log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(sup.config_path)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        def ready() -> bool:
            return httpx.get(sup.api + "/readyz", timeout=2).status_code == 200

        wait_for(ready, "the supervisor ready on a sound database", 30)
        _damage(sup.db_path, leaves, page_size)

        def unready_for_integrity() -> bool:
            try:
                res = httpx.get(sup.api + "/readyz", timeout=2)
            except httpx.HTTPError:
                return False
            return res.status_code == 503 and "failed its integrity check" in res.json()["components"][
                "database"].get("error", "")

        wait_for(unready_for_integrity, "/readyz 503 naming the failed integrity check", 60)
        assert proc.wait(30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = sup.log_path.read_text().splitlines()
    messages = [json.loads(ln).get("msg", "") if ln.startswith("{") else ln for ln in lines]
    listening = next(i for i, m in enumerate(messages) if "HTTP API listening" in m)
    found = next(i for i, m in enumerate(messages) if "failed its integrity check" in m)
    assert listening < found, "the damage was found on the start path, not in the background"
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and "halctl restore" in errors[0] and "supervisor-db-corruption" in errors[0], lines[-5:]
    assert FileCheck(sup.db_path)() is not None  # still damaged: nothing changed it behind the operator's back


def test_a_damaged_file_still_refuses_the_start(tmp_path: Path) -> None:
    """The runbook's supervisor-db-corruption path begins with a refused start: the check runs at start."""
    sup = SupervisorProc(tmp_path / "sup")
    sup.workdir.mkdir(parents=True)
    _damage(sup.db_path, *_database_with_events(sup.db_path))
    sup.write_config()
    res = subprocess.run([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(sup.config_path)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "failed its integrity check" in errors[0], res.stderr[-500:]
