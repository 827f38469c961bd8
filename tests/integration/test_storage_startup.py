"""Start-up with an unusable database (issue 15): one `error:` line on stderr, exit 1, never a
traceback and never ready. The real `hal-supervisor` process, with a database directory of its own."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from tests.support.supervisor_proc import REPO, SupervisorProc


def _sup(tmp_path) -> SupervisorProc:  # type: ignore[no-untyped-def]
    sup = SupervisorProc(tmp_path / "sup", extra={"database": {"path": str(tmp_path / "db" / "supervisor.db")}})
    sup.write_config()
    return sup


def _run(sup: SupervisorProc) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(sup.config_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def _assert_one_error_line(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr[-2000:]
    for w in words:
        assert w in errors[0], errors[0]


def _first_start(sup: SupervisorProc, tmp_path, with_node: bool) -> None:  # type: ignore[no-untyped-def]
    """Create and migrate the database with a real start; optionally leave a node in it."""
    sup.start()
    if with_node:
        with sup.client() as c:
            assert c.get("/readyz").status_code == 200
        db = sqlite3.connect(tmp_path / "db" / "supervisor.db")
        db.execute("INSERT INTO nodes(id, hostname, status) VALUES ('n1', 'h', 'online')")
        db.commit()
        db.close()
    assert sup.stop() == 0


@pytest.mark.parametrize("with_node", [True, False], ids=["with-nodes", "fresh"])
def test_read_only_database_file(tmp_path, with_node):
    sup = _sup(tmp_path)
    _first_start(sup, tmp_path, with_node)
    (tmp_path / "db" / "supervisor.db").chmod(0o444)
    try:
        _assert_one_error_line(_run(sup), "read-only")
    finally:
        (tmp_path / "db" / "supervisor.db").chmod(0o644)


def test_unreadable_database_directory(tmp_path):
    sup = _sup(tmp_path)
    _first_start(sup, tmp_path, False)
    (tmp_path / "db").chmod(0o000)
    try:
        _assert_one_error_line(_run(sup), "cannot be searched")
    finally:
        (tmp_path / "db").chmod(0o755)


def test_not_a_database(tmp_path):
    sup = _sup(tmp_path)
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "supervisor.db").write_bytes(b"this is not an SQLite file\n" * 200)
    _assert_one_error_line(_run(sup), "integrity check")


def test_locked_database(tmp_path):
    sup = _sup(tmp_path)
    _first_start(sup, tmp_path, False)
    holder = sqlite3.connect(tmp_path / "db" / "supervisor.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # an operator's shell holding the write lock
    try:
        _assert_one_error_line(_run(sup), "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_postgresql_url_without_the_driver_installed(tmp_path):
    """A release installed without the `postgres` extra (what the supervisor role did before it added the
    extra for a PostgreSQL store): `--validate` refuses the config, so a deploy never switches to it, and a
    start says what to install in one line instead of an import traceback. The driver is hidden by a
    package on PYTHONPATH that fails to import, as a missing one does."""
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    sup = SupervisorProc(tmp_path / "sup", extra={"storage": {"url": "postgresql://hal@127.0.0.1:1/halswarm"}})
    sup.write_config()
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path / 'shadow'}:{REPO}"}
    base = [sys.executable, "-m", "halswarm.supervisor.main", "--config", str(sup.config_path)]
    res = subprocess.run(base, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    _assert_one_error_line(res, "invalid configuration")
    assert "storage.url: is PostgreSQL but psycopg is not installed" in res.stderr + res.stdout, res.stderr
    checked = subprocess.run([*base, "--validate"], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "storage.url: is PostgreSQL but psycopg is not installed" in checked.stdout, checked.stdout
    fine = subprocess.run([*base, "--validate"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert fine.returncode == 0, fine.stdout + fine.stderr  # with the driver: the same config is valid
