"""The PostgreSQL engine's own parts: storage.url parsing (no password in it, libpq parameters kept), the
`?` translation, rows by name and position, sqlite3's error classes, the transaction bookkeeping sent with
the next statement (in order, its errors reported there, never a COMMIT after one), and the writer after the
server dropped its connection (the batch in flight fails and is not acked; the next one commits)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from halswarm.store.db import DatabaseError
from halswarm.store.engine import parse_storage_url
from halswarm.store.pg import translate
from halswarm.store.writer import Writer
from tests.support.store_engines import StoreDb


def test_url_selects_the_engine_and_never_holds_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_storage_url(str(tmp_path / "a.db")).engine == "sqlite"
    assert parse_storage_url("sqlite:///var/lib/x.db").path == "/var/lib/x.db"
    t = parse_storage_url("postgresql://hal@db.example:5433/hal?sslmode=verify-full&sslrootcert=/etc/ca.pem")
    assert t.is_pg and t.display == "postgresql://hal@db.example:5433/hal?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert t.conninfo.endswith("sslmode=verify-full&sslrootcert=/etc/ca.pem")  # passed to libpq as written
    with pytest.raises(DatabaseError, match="must not contain a password") as err:
        parse_storage_url("postgresql://hal:hunter2@db/hal")
    assert "hunter2" not in str(err.value)
    with pytest.raises(DatabaseError, match="needs a database name"):
        parse_storage_url("postgresql://hal@db")
    with pytest.raises(DatabaseError, match="unknown engine 'mysql'"):
        parse_storage_url("mysql://hal@db/hal")
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    assert parse_storage_url("postgresql://hal@db/hal", password_file=str(pw)).password == "from-file"
    monkeypatch.setenv("HAL_TEST_PG_PW", "from-env")
    t = parse_storage_url("postgresql://hal@db/hal", password_env="HAL_TEST_PG_PW")
    assert t.password == "from-env" and "from-env" not in repr(t)
    with pytest.raises(DatabaseError, match="HAL_TEST_PG_NOT_SET is not set"):
        parse_storage_url("postgresql://hal@db/hal", password_env="HAL_TEST_PG_NOT_SET")
    with pytest.raises(DatabaseError, match="password_file"):
        parse_storage_url("postgresql://hal@db/hal", password_file=str(tmp_path / "missing"))


def test_translation_leaves_quoted_text_alone() -> None:
    assert translate("SELECT a FROM t WHERE b = ? AND c LIKE ?") == "SELECT a FROM t WHERE b = %s AND c LIKE %s"
    assert translate("SELECT '?', 'x%y', \"we?ird\" FROM t WHERE a = ?") == (
        "SELECT '?', 'x%%y', \"we?ird\" FROM t WHERE a = %s")
    assert translate("SELECT 5 % 2") == "SELECT 5 %% 2"


def test_rows_errors_and_changes_look_like_sqlite3(store_db: StoreDb) -> None:
    if not store_db.is_pg:
        pytest.skip("the PostgreSQL connection's sqlite3 shape; SQLite is sqlite3 itself")
    conn = store_db.migrated()
    conn.execute("INSERT INTO nodes(id, hostname) VALUES (?, ?)", ("n1", "h'1?"))
    row = conn.execute("SELECT id, hostname FROM nodes WHERE hostname = ?", ("h'1?",)).fetchone()
    assert (row[0], row["hostname"], tuple(row), row.keys()) == ("n1", "h'1?", ("n1", "h'1?"), ["id", "hostname"])
    before = conn.total_changes
    conn.executemany("INSERT INTO dependency_marks(project, marker, updated_at) VALUES (?,?,?)",
                     [("a", "m", 1.0), ("b", "m", 2.0)])
    assert conn.total_changes - before == 2
    with pytest.raises(sqlite3.IntegrityError, match="postgresql: duplicate key"):
        conn.execute("INSERT INTO nodes(id) VALUES ('n1')")
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        conn.execute("SELECT * FROM nowhere")
    reader = store_db.reader()
    with pytest.raises(sqlite3.Error, match="read-only transaction"):
        reader.run_sync(lambda c: c.execute("INSERT INTO nodes(id) VALUES ('n2')"))


async def test_writer_survives_a_dropped_server_connection(store_db: StoreDb) -> None:
    if not store_db.is_pg:
        pytest.skip("a server connection to lose is PostgreSQL's")
    conn = store_db.migrated()
    admin = store_db.connect()
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())

    def insert(i: int):  # type: ignore[no-untyped-def]
        return lambda c: c.execute("INSERT INTO audit_log(timestamp, actor, action, target, result)"
                                   " VALUES (?, 'a', 'x', 't', 'ok')", (float(i),))

    await writer.run(insert(1))
    pid = conn.raw.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(?)", (pid,))
    with pytest.raises(sqlite3.Error):  # the batch in flight fails: nothing acked
        await writer.run(insert(2))
    assert writer.health() is not None
    await writer.run(insert(3))  # a new connection for the next batch
    await writer.stop()
    got = [r[0] for r in admin.execute("SELECT timestamp FROM audit_log ORDER BY timestamp")]
    assert got == [1.0, 3.0]


def test_held_bookkeeping_goes_first_and_its_error_stops_the_commit(store_db: StoreDb) -> None:
    if not store_db.is_pg:
        pytest.skip("BEGIN/SAVEPOINT/RELEASE held for the next statement is the PostgreSQL connection's")
    conn = store_db.migrated()
    other = store_db.connect()
    insert = "INSERT INTO audit_log(timestamp, actor, action, target, result) VALUES (?, 'a', 'x', 't', 'ok')"

    def stored() -> list[float]:
        return [r[0] for r in other.execute("SELECT timestamp FROM audit_log ORDER BY timestamp")]

    # held BEGIN and SAVEPOINT reach the server before the INSERT: the rollback to it undoes the row
    conn.execute("BEGIN")
    conn.execute("SAVEPOINT a")
    assert conn.in_transaction
    conn.execute(insert, (1.0,))
    conn.execute("ROLLBACK TO SAVEPOINT a")
    conn.execute("RELEASE SAVEPOINT a")
    conn.execute(insert, (2.0,))
    conn.execute("COMMIT")
    assert stored() == [2.0] and not conn.in_transaction
    # a held statement that fails is reported with the next one, and the COMMIT sent with it commits nothing
    conn.execute("BEGIN")
    conn.execute(insert, (3.0,))
    conn.execute("RELEASE nosuch")
    with pytest.raises(sqlite3.OperationalError, match="nosuch"):
        conn.execute("COMMIT")
    conn.execute("ROLLBACK")
    assert stored() == [2.0]
    # the psycopg connection handed out gets the held BEGIN first: its statement is in the transaction
    conn.execute("BEGIN")
    conn.raw.execute("INSERT INTO audit_log(timestamp, actor, action, target, result) VALUES (4, 'a', 'x', 't', 'ok')")
    conn.execute("ROLLBACK")
    assert stored() == [2.0]
    other.close()


def test_a_missing_driver_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release without the `postgres` extra: opening a PostgreSQL store names the extra to install."""
    import sys

    import halswarm.store
    from halswarm.store.engine import open_connection, open_reader

    monkeypatch.setitem(sys.modules, "halswarm.store.pg", None)  # `import` of it now raises ImportError
    monkeypatch.delattr(halswarm.store, "pg", raising=False)
    target = parse_storage_url("postgresql://hal@127.0.0.1:1/halswarm")
    for opener in (open_connection, open_reader):
        with pytest.raises(DatabaseError, match=r"driver is not installed .*hal-o-swarm\[postgres\]"):
            opener(target)


def test_validate_names_the_missing_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from halswarm.config.semantic import missing_pg_driver

    assert missing_pg_driver() is None
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    assert missing_pg_driver() == "psycopg_pool"
