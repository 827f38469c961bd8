"""`halctl storage migrate`: copy a SQLite installation into PostgreSQL, every row, verified (issue 21)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from halswarm.cli.errors import HalctlError


@click.group("storage")
def storage() -> None:
    """The supervisor's database engine: SQLite (default) or PostgreSQL."""


@storage.command("migrate")
@click.option("--from", "source", required=True, type=click.Path(dir_okay=False, readable=False),
              help="The SQLite database (database.path). Stop the supervisor first: events stored after the "
              "copy's snapshot would stay behind.")
@click.option("--to", "target", required=True, metavar="URL",
              help="postgresql://user@host:port/db?sslmode=... of an empty database (no password in it).")
@click.option("--password-file", type=click.Path(dir_okay=False, readable=False),
              help="File holding the PostgreSQL password.")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the PostgreSQL password.")
def migrate_cmd(source: str, target: str, password_file: str | None, password_env: str | None) -> None:
    """Copy every table of a SQLite database into an empty PostgreSQL database and verify it: each table's
    row count and content hash must be equal on both sides. Then set `storage.url` (and the password file)
    in the supervisor's config and start it.

    \b
      halctl storage migrate --from /var/lib/hal-o-swarm/supervisor.db \\
        --to 'postgresql://hal@db.example/hal?sslmode=verify-full' --password-file /etc/hal/db.password
    """
    from halswarm.store.db import DatabaseError, connect
    from halswarm.store.engine import open_connection, parse_storage_url
    from halswarm.store.transfer import copy_sqlite_to_pg

    src_path = Path(source)
    if not src_path.is_file():
        raise HalctlError(f"--from {source}: no such database file")
    try:
        dest = parse_storage_url(target, password_file=password_file, password_env=password_env)
        if not dest.is_pg:
            raise HalctlError("--to must be a postgresql://... URL")
        src = connect(src_path, readonly=True)
    except DatabaseError as exc:
        raise HalctlError(str(exc)) from None
    try:
        try:
            dst = open_connection(dataclasses.replace(dest))
        except DatabaseError as exc:
            raise HalctlError(str(exc)) from None
        try:
            checks = copy_sqlite_to_pg(src, dst, progress=lambda t, n: click.echo(f"copied {t}: {n} rows", err=True))
        except DatabaseError as exc:
            raise HalctlError(f"{dest.display}: {exc}") from None
        finally:
            dst.close()
    finally:
        src.close()
    width = max(len(c.table) for c in checks)
    for c in checks:
        mark = "ok" if c.equal else "DIFFERENT"
        click.echo(f"{c.table:<{width}}  rows {c.source_rows:>9} -> {c.target_rows:<9}  sha256-sum "
                   f"{c.target_hash[:16]}  {mark}")
    bad = [c.table for c in checks if not c.equal]
    if bad:
        raise HalctlError(f"the copy differs from the source in {', '.join(bad)}; do not switch storage.url")
    click.echo(f"copied and verified {len(checks)} tables into {dest.display}; set storage.url to it")


migrate_cmd.plain_output = True  # type: ignore[attr-defined]
