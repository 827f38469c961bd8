"""`halctl backup create|list|verify [BACKUP]|recover OUT` and `halctl restore BACKUP`.

Local mode (default) works on the supervisor host: the database path and the /readyz URL come from
the supervisor config (`--config`, default /etc/hal-o-swarm/supervisor.config.json) or `--database`.
The SQLite work is the collection's hal_sqlite_* module_utils, loaded by halswarm.ops.datasafety.
Ops mode (`-i INVENTORY`) runs the collection's backup.yml / restore.yml through ansible-runner.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from halswarm.cli.context import app
from halswarm.cli.errors import HalctlError, UsageProblem

DEFAULT_CONFIG = "/etc/hal-o-swarm/supervisor.config.json"


# ----------------------------------------------------------------------------------------------
# shared options


def _target_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--dir", "backup_dir", type=click.Path(file_okay=False, readable=False),
                     help="Backup directory [default: $HALCTL_BACKUP_DIR, else /var/backups/hal-o-swarm, "
                     "as the supervisor role's backup timer].")(f)
    f = click.option("--database", type=click.Path(dir_okay=False, readable=False),
                     help="The SQLite database (overrides database.path of the config).")(f)
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False, readable=False),
                     help=f"Supervisor config to read database.path from [default: {DEFAULT_CONFIG}].")(f)
    return f


def _ops_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("-e", "--extra-vars", "extra_vars", multiple=True, metavar="K=V|@FILE",
                     help="Extra variables for the playbook (with -i; repeatable): KEY=VALUE, @vars.yml or JSON.")(f)
    f = click.option("--limit", "-l", metavar="HOSTS", help="Limit the playbook to these hosts (with -i).")(f)
    f = click.option("-i", "--inventory", "inventories", multiple=True, metavar="INVENTORY",
                     help="Run the collection's playbook against this inventory (repeatable) instead of "
                     "working on this host.")(f)
    return f


def _fail(exc: Exception) -> HalctlError:
    return HalctlError(getattr(exc, "message", None) or str(exc))


def _target(config_path: str | None, database: str | None, backup_dir: str | None) -> tuple[Any, Path]:
    from halswarm.ops import datasafety

    try:
        target = datasafety.supervisor_target(config_path, database)
    except datasafety.DataSafetyFailure as exc:
        raise _fail(exc) from None
    return target, Path(backup_dir).expanduser().resolve() if backup_dir else datasafety.default_backup_dir()


def _backup_dir(backup_dir: str | None) -> Path:
    from halswarm.ops import datasafety

    return Path(backup_dir).expanduser().resolve() if backup_dir else datasafety.default_backup_dir()


def _human_size(size: Any) -> str:
    try:
        value = float(size)
    except (TypeError, ValueError):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


class _Progress:
    """`backup: 42% (620/1480 pages)` on stderr, at most twice a second, only on a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.last = 0.0
        self.enabled = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.5 and done < total):
            return
        self.last = now
        pct = 100 * done // total if total else 100
        click.echo(f"\r{self.label}: {pct}% ({done}/{total} pages)", err=True, nl=done >= total)


# ----------------------------------------------------------------------------------------------
# ops mode


def run_ops_playbook(playbook: str, inventories: tuple[str, ...], extravars: Mapping[str, Any], *,
                     limit: str | None = None, check: bool = False) -> int:
    """Run the collection playbook (`backup.yml`, `restore.yml`) through halswarm.ops.runner, with
    per-task progress; returns the exit code (0 when every host succeeded, 1 otherwise, 130 interrupted)."""
    try:
        from halswarm.ops.runner import run_collection_playbook

        return run_collection_playbook(playbook, inventory=list(inventories), extravars=dict(extravars), limit=limit,
                                       check=check, diff=check)
    except ModuleNotFoundError as exc:
        raise HalctlError(f"ops mode (-i) needs ansible-runner: pip install 'hal-o-swarm[ops]' ({exc})") from None


def _ops(playbook: str, inventories: tuple[str, ...], limit: str | None, extra: tuple[str, ...], check: bool,
         variables: Mapping[str, Any]) -> None:
    from halswarm.cli.ops_cmd import parse_extra_vars

    extravars = {k: v for k, v in variables.items() if v is not None}
    extravars.update(parse_extra_vars(extra))
    code = run_ops_playbook(playbook, inventories, extravars, limit=limit, check=check)
    if code:
        raise click.exceptions.Exit(code)


# ----------------------------------------------------------------------------------------------
# halctl backup ...


@click.group("backup")
def backup() -> None:
    """Online backups of the supervisor database: create, list, verify, recover.

    Works on the supervisor host (database from --config / --database), or on the hosts of an
    inventory with -i (the collection's backup.yml through ansible-runner).
    """


@backup.command("create")
@_target_options
@click.option("--keep", type=click.IntRange(min=0), default=7, show_default=True,
              help="Backups to keep (newest first); 0 keeps all.")
@click.option("--max-age-days", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Remove backups older than this; 0 disables.")
@click.option("--prefix", help="File name prefix [default: the database file name].")
@_ops_options
def create(config_path: str | None, database: str | None, backup_dir: str | None, keep: int, max_age_days: float,
           prefix: str | None, inventories: tuple[str, ...], limit: str | None, extra_vars: tuple[str, ...]) -> None:
    """Back up the live database (SQLite online backup API; the supervisor keeps running), check the
    copy with PRAGMA integrity_check, write its .sha256 and apply retention."""
    from halswarm.cli.output import emit, print_fields, print_table

    if inventories:
        _ops("backup.yml", inventories, limit, extra_vars, False,
             {"hal_backup_action": "create", "hal_backup_keep": keep, "hal_backup_max_age_days": max_age_days,
              "hal_backup_dir": backup_dir, "hal_backup_prefix": prefix, "hal_backup_database": database})
        return
    from halswarm.ops import datasafety

    target, dest = _target(config_path, database, backup_dir)
    try:
        result = datasafety.backup(target.db_path, dest, keep=keep, max_age_days=max_age_days, prefix=prefix,
                                   progress=_Progress("backup"))
    except datasafety.DataSafetyFailure as exc:
        raise _fail(exc) from None

    def table() -> None:
        print_fields([
            ("BACKUP", result["path"]), ("SIZE", _human_size(result["size"])), ("SHA256", result["sha256"]),
            ("INTEGRITY", result["integrity"]), ("DURATION", f"{result['duration']:.2f} s"),
            ("SOURCE", result["source"]), ("REMOVED", ", ".join(Path(p).name for p in result["removed"]) or "-"),
        ])
        click.echo()
        print_table(("TABLE", "ROWS"), sorted((t, str(n)) for t, n in result["tables"].items()))

    emit(app().output, result, table)


@backup.command("list")
@_target_options
@_ops_options
def list_backups(config_path: str | None, database: str | None, backup_dir: str | None, inventories: tuple[str, ...],
                 limit: str | None, extra_vars: tuple[str, ...]) -> None:
    """List backups, newest first (NAME CREATED SIZE CHECKSUM)."""
    from halswarm.cli.output import emit, print_table

    if inventories:
        _ops("backup.yml", inventories, limit, extra_vars, False,
             {"hal_backup_action": "list", "hal_backup_dir": backup_dir, "hal_backup_database": database})
        return
    from halswarm.ops import datasafety

    dest = _backup_dir(backup_dir)
    try:
        items = datasafety.list_backups(dest)
    except datasafety.DataSafetyFailure as exc:
        raise _fail(exc) from None

    def table() -> None:
        print_table(("NAME", "CREATED", "SIZE", "CHECKSUM"),
                    ((b["name"], b["created"].replace("T", " ").rstrip("Z"), _human_size(b["size"]),
                      "yes" if b["has_checksum"] else "MISSING") for b in items))

    emit(app().output, items, table)


@backup.command("verify")
@click.argument("backup_file", metavar="[BACKUP]", required=False)
@_target_options
@_ops_options
def verify(backup_file: str | None, config_path: str | None, database: str | None, backup_dir: str | None,
           inventories: tuple[str, ...], limit: str | None, extra_vars: tuple[str, ...]) -> None:
    """Verify BACKUP (a path, a name in the backup directory, or `latest`), or every backup: SQLite
    header, sha256 against its .sha256 file, PRAGMA integrity_check. Exit 1 if any fails."""
    from halswarm.cli.output import emit, print_table

    if inventories:
        _ops("backup.yml", inventories, limit, extra_vars, False,
             {"hal_backup_action": "verify", "hal_backup_dir": backup_dir, "hal_backup_file": backup_file,
              "hal_backup_database": database})
        return
    from halswarm.ops import datasafety

    if backup_file and (os.sep in backup_file or Path(backup_file).expanduser().exists()):
        paths = [Path(backup_file).expanduser()]  # a file needs no supervisor config
    else:
        dest = _backup_dir(backup_dir)
        try:
            if backup_file:
                paths = [datasafety.resolve_backup(backup_file, dest)]
            else:
                paths = [Path(b["path"]) for b in datasafety.list_backups(dest)]
        except datasafety.DataSafetyFailure as exc:
            raise _fail(exc) from None
        if not paths:
            raise HalctlError(f"no backups in {dest}")
    try:
        results = [datasafety.verify(p) for p in paths]
    except datasafety.DataSafetyFailure as exc:
        raise _fail(exc) from None

    def table() -> None:
        print_table(("BACKUP", "CHECKSUM", "INTEGRITY", "RESULT"),
                    ((r["path"], r["checksum"], "ok" if r["integrity"] == "ok" else ("-" if r["integrity"] is None
                                                                                     else "FAILED"),
                      "ok" if r["ok"] else "; ".join(r["problems"])) for r in results))

    emit(app().output, results if backup_file is None else results[0], table)
    failed = [r for r in results if not r["ok"]]
    if failed:
        raise HalctlError(f"{len(failed)} of {len(results)} backup(s) failed verification")


@backup.command("recover")
@click.argument("out_file", metavar="OUTPUT", type=click.Path(dir_okay=False, readable=False))
@click.option("--from", "source", type=click.Path(dir_okay=False, readable=False),
              help="The damaged database [default: database.path of the config].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, readable=False),
              help=f"Supervisor config to read database.path from [default: {DEFAULT_CONFIG}].")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=0, help="Time limit; 0 = none.")
def recover(out_file: str, source: str | None, config_path: str | None, force: bool, max_seconds: float) -> None:
    """Salvage the readable rows of a damaged database into OUTPUT (the damaged file is only read).

    Reports per table what was saved and lost. Restore OUTPUT with `halctl restore OUTPUT`."""
    from halswarm.cli.output import emit, note, print_table
    from halswarm.ops import datasafety

    if source is None:
        target, _dest = _target(config_path, None, None)
        src = target.db_path
    else:
        src = Path(source).expanduser().resolve()
    try:
        result = datasafety.recover(src, Path(out_file).expanduser().resolve(), force=force,
                                    max_seconds=max_seconds or None)
    except datasafety.DataSafetyFailure as exc:
        raise _fail(exc) from None

    def table() -> None:
        print_table(("TABLE", "SAVED", "EXPECTED", "LOST", "COMPLETE"),
                    ((t, str(r["saved"]), "?" if r["expected"] is None else str(r["expected"]),
                      "?" if r["lost"] is None else str(r["lost"]), "yes" if r["complete"] else "no")
                     for t, r in sorted(result["tables"].items())))
        for line in result["notes"]:
            note(f"note: {line}")
        note(f"recovered {result['totals']['saved']} rows into {result['dest']} (schema from "
             f"{result['schema_source']}); restore it with: halctl restore {result['dest']}")

    emit(app().output, result, table)


# ----------------------------------------------------------------------------------------------
# halctl restore BACKUP


@click.command("restore")
@click.argument("backup_file", metavar="BACKUP")
@_target_options
@click.option("--service", default="hal-supervisor.service", show_default=True,
              help="systemd unit stopped before and started after the restore.")
@click.option("--no-service", is_flag=True, help="Do not stop/start anything (the database must not be in use).")
@click.option("--stop-command", metavar="CMD", help="Command that stops the supervisor (instead of systemctl).")
@click.option("--start-command", metavar="CMD", help="Command that starts the supervisor (instead of systemctl).")
@click.option("--ready-url", metavar="URL", help="Readiness URL to wait for [default: /readyz of the config].")
@click.option("--ready-timeout", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Seconds to wait for the readiness URL.")
@click.option("--check", is_flag=True, help="Verify the backup and show the row counts; change nothing.")
@_ops_options
def restore(backup_file: str, config_path: str | None, database: str | None, backup_dir: str | None, service: str,
            no_service: bool, stop_command: str | None, start_command: str | None, ready_url: str | None,
            ready_timeout: float, check: bool, inventories: tuple[str, ...], limit: str | None,
            extra_vars: tuple[str, ...]) -> None:
    """Restore BACKUP (a path, a name in the backup directory, or `latest`) into the supervisor database.

    Refuses a backup whose checksum or integrity check fails, before touching anything. Then stops
    the supervisor, keeps the replaced database as <db>.replaced-<timestamp>, restores atomically,
    runs PRAGMA quick_check, starts the supervisor and waits for /readyz (if it does not become
    ready, the previous database is put back). Shows the row counts per table before and after.
    """
    from halswarm.cli.output import emit, note, print_table

    if (stop_command is None) != (start_command is None):
        raise UsageProblem("--stop-command and --start-command go together")
    if no_service and stop_command:
        raise UsageProblem("--no-service and --stop-command/--start-command exclude each other")
    if inventories:
        if no_service:
            raise UsageProblem("--no-service is for local mode; restore.yml always stops and starts the service")
        _ops("restore.yml", inventories, limit, extra_vars, check,
             {"hal_restore_backup": backup_file, "hal_restore_database": database, "hal_backup_dir": backup_dir,
              "hal_restore_service": service, "hal_restore_stop_command": stop_command,
              "hal_restore_start_command": start_command, "hal_restore_ready_url": ready_url})
        return
    from halswarm.ops import datasafety

    target, dest = _target(config_path, database, backup_dir)
    control: datasafety.ServiceControl
    if no_service:
        control = datasafety.NoService()
    elif stop_command and start_command:
        control = datasafety.CommandService(stop_command, start_command)
    else:
        control = datasafety.SystemdService(service)
    try:
        path = datasafety.resolve_backup(backup_file, dest)
        result = datasafety.restore(path, target.db_path, control, ready_url=ready_url or target.ready_url,
                                    ready_timeout=ready_timeout, check=check, note=note)
    except datasafety.DataSafetyFailure as exc:
        raise _fail(exc) from None
    output = app().output

    def table() -> None:
        rows = []
        for table_name, change in sorted(result["changes"].items()):
            before, after, delta = change["before"], change["after"], change["change"]
            rows.append((table_name, "-" if before is None else str(before), "-" if after is None else str(after),
                         "?" if delta is None else (f"{delta:+d}" if delta else "0")))
        print_table(("TABLE", "BEFORE", "AFTER", "CHANGE"), rows)
        if result.get("before_problem") and result["before"] is None:
            note(f"before: {result['before_problem']}")
        if check:
            note(f"check: {path} is intact; nothing was changed" + (" (the database is in use)"
                                                                        if result.get("in_use") else ""))
            return
        if not result["changed"]:
            note(f"{target.db_path} already holds this backup; nothing was changed")
            return
        note(f"restored {path} -> {target.db_path} (quick_check {result['quick_check']})")
        if result.get("replaced"):
            note(f"the replaced database is kept as {result['replaced']}")
        if result.get("ready"):
            note("the supervisor is ready")
        elif result.get("ready") is None and not isinstance(control, datasafety.NoService):
            note("readiness not checked (no --ready-url and none in the config)")

    emit(output, result, table)
