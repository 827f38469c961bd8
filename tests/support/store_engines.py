"""The store's tests on both storage engines: `store_db` is parametrized over SQLite (a file in the test's
tmp dir) and PostgreSQL (a fresh database on the session's private cluster, tests/support/postgres.py).

Without PostgreSQL installed the PostgreSQL cases are skipped with the reason, except under CI
(`CI` set), where they fail: CI installs `postgresql` (scripts/ci-setup.sh) and must run both engines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from halswarm.store.engine import StorageTarget, open_connection, open_reader, parse_storage_url
from halswarm.store.migrations import migrate
from tests.support.postgres import PostgresCluster, pg_bindir

ENGINES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    if pg_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; scripts/ci-setup.sh installs `postgresql`")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database on the session's cluster (dropped afterwards): PostgreSQL-only tests."""
    url = pg_cluster.fresh_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture
def pg_conn(pg_url: str) -> Iterator[Any]:
    """A migrated connection to `pg_url`."""
    c = open_connection(parse_storage_url(pg_url))
    migrate(c)
    yield c
    c.close()


class StoreDb:
    """One empty database of one engine; every connection opened through it is closed at the end."""

    def __init__(self, target: StorageTarget) -> None:
        self.target = target
        self.engine = target.engine
        self._opened: list[Any] = []

    @property
    def is_pg(self) -> bool:
        return self.target.is_pg

    def connect(self, *, readonly: bool = False) -> Any:
        conn = open_connection(self.target, readonly=readonly)
        self._opened.append(conn)
        return conn

    def migrated(self) -> Any:
        conn = self.connect()
        migrate(conn)
        return conn

    def reader(self) -> Any:
        r = open_reader(self.target)
        self._opened.append(r)
        return r

    def close(self) -> None:
        for c in reversed(self._opened):
            try:
                c.close()
            except Exception:
                pass
        self._opened.clear()


def make_store_db(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StoreDb]:
    if engine == "sqlite":
        db = StoreDb(parse_storage_url(str(tmp_path / "store.db")))
        try:
            yield db
        finally:
            db.close()
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    url = cluster.fresh_database()
    db = StoreDb(parse_storage_url(url))
    try:
        yield db
    finally:
        db.close()
        cluster.drop_database(url)


def table_names(conn: Any) -> set[str]:
    """The tables of the database behind `conn`, on either engine."""
    from halswarm.store.dialect import is_pg

    if is_pg(conn):
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type='table'"
    return {str(r[0]) for r in conn.execute(sql)}


# The PostgreSQL case talks to a server process over a socket: the `process` layer (tests/conftest.py),
# while the SQLite case of the same test stays a `unit` test.
_PARAMS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql", marks=pytest.mark.process)]


@pytest.fixture(params=_PARAMS)
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreDb]:
    """An empty database on each engine in turn."""
    yield from make_store_db(request.param, tmp_path, request)


@pytest.fixture
def store_conn(store_db: StoreDb) -> Any:
    """A migrated connection on each engine in turn."""
    return store_db.migrated()
