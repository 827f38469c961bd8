"""Which storage engine a supervisor uses, from `storage.url`, and opening its connections.

SQLite (a file path, or `sqlite:///abs/path`) is the zero-setup default. `postgresql://user@host/db?...`
selects PostgreSQL: the query (`sslmode=verify-full`, `sslrootcert=...`, `connect_timeout`, ...) passes
through to libpq untouched. The password never sits in the URL (it would travel into logs, `ps` and
config backups): it comes from a file (`password_file`, read at start) or an environment variable
(`password_env`), or from libpq's own ~/.pgpass. Only `display` (no password) is ever logged.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

from halswarm.store.db import DatabaseError
from halswarm.store.dialect import POSTGRESQL, SQLITE

PG_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StorageTarget:
    engine: str
    path: str = ""  # sqlite
    conninfo: str = field(default="", repr=False)  # postgresql, password included: never log it
    display: str = ""  # what logs and errors show
    password: str | None = field(default=None, repr=False)

    @property
    def is_pg(self) -> bool:
        return self.engine == POSTGRESQL


def parse_storage_url(url: str, *, password_file: str | None = None, password_env: str | None = None
                      ) -> StorageTarget:
    """The engine and how to reach it; DatabaseError (one line, no secret) for a URL that cannot be used."""
    text = str(url).strip()
    if not text:
        raise DatabaseError("storage.url is empty")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("", "sqlite"):
        path = text[len("sqlite://"):] if scheme == "sqlite" else text
        if not path:
            raise DatabaseError("storage.url sqlite:// needs a path (sqlite:///var/lib/hal-o-swarm/supervisor.db)")
        return StorageTarget(SQLITE, path=path, display=path)
    if scheme not in PG_SCHEMES:
        raise DatabaseError(f"storage.url: unknown engine {scheme!r} (use a file path or postgresql://...)")
    parts = urlsplit(text)
    if parts.password is not None:
        raise DatabaseError("storage.url must not contain a password: use storage.password_file or "
                            "storage.password_env (or ~/.pgpass)")
    if not parts.path.strip("/"):
        raise DatabaseError("storage.url postgresql://... needs a database name (postgresql://user@host/db)")
    password = _password(password_file, password_env)
    host = parts.hostname or "(socket)"
    port = f":{parts.port}" if parts.port else ""
    user = f"{unquote(parts.username)}@" if parts.username else ""
    query = f"?{parts.query}" if parts.query else ""
    display = f"postgresql://{user}{host}{port}{parts.path}{query}"
    return StorageTarget(POSTGRESQL, conninfo=text, display=display, password=password)


def _password(password_file: str | None, password_env: str | None) -> str | None:
    if password_file:
        p = Path(password_file)
        try:
            value = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DatabaseError(f"storage.password_file {p}: {exc.strerror}") from None
        if not value:
            raise DatabaseError(f"storage.password_file {p} is empty")
        return value
    if password_env:
        value = os.environ.get(password_env, "")
        if not value:
            raise DatabaseError(f"storage.password_env: the environment variable {password_env} is not set")
        return value
    return None


def open_connection(target: StorageTarget, *, readonly: bool = False) -> sqlite3.Connection:
    """The writer's (or a tool's) connection. A PostgreSQL connection is typed as the sqlite3 connection
    it stands in for: it implements the subset the store uses (see halswarm.store.pg)."""
    if not target.is_pg:
        from halswarm.store.db import connect

        return connect(target.path, readonly=readonly)
    pg = _pg_module()
    try:
        conn: sqlite3.Connection = pg.connect(target.conninfo, readonly=readonly, password=target.password)
    except sqlite3.Error as exc:
        raise DatabaseError(f"database {target.display}: {str(exc).removeprefix('postgresql: ')}") from None
    return conn


def open_reader(target: StorageTarget) -> Any:
    """A Reader (SQLite: a read-only connection per worker thread; PostgreSQL: a connection pool)."""
    if not target.is_pg:
        from halswarm.store.reader import Reader

        return Reader(target.path)
    return _pg_module().PgReader(target.conninfo, password=target.password)


def _pg_module() -> ModuleType:
    """halswarm.store.pg, or one clear error when the driver is not installed (a release without the
    `postgres` extra): the supervisor prints it as one line, not an import traceback."""
    try:
        from halswarm.store import pg
    except ImportError as exc:
        raise DatabaseError(f"storage.url is PostgreSQL but its driver is not installed ({exc}): install the "
                            "release with the `postgres` extra (hal-o-swarm[postgres])") from None
    return pg
