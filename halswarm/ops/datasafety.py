"""Backup, verify, restore and recover the supervisor's SQLite database from halctl (local mode).

One implementation: the collection's `plugins/module_utils/hal_sqlite_*.py` files (one per job:
common, backup, restore, recover, facts, archive) do the SQLite work for the Ansible modules, for
the systemd backup timer (hal_sqlite_backup.py run as a script on the host) and, loaded from the
same files by `core(part)`, for halctl. They are standard-library only, so loading them by path costs
nothing and nothing is duplicated here. This module adds what only halctl needs: where the
database is (from the supervisor config), stopping and starting the service around a restore,
waiting for `/readyz`, and undoing a restore the supervisor does not come up with.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

DEFAULT_SUPERVISOR_CONFIG = "/etc/hal-o-swarm/supervisor.config.json"
DEFAULT_SERVICE = "hal-supervisor.service"
DEFAULT_BACKUP_DIR = "/var/backups/hal-o-swarm"
BACKUP_DIR_ENV = "HALCTL_BACKUP_DIR"
_REL = Path("ansible_collections", "halswarm", "ops")
_UTILS_REL = Path("plugins", "module_utils")
_UTILS_PACKAGE = "ansible_collections.halswarm.ops.plugins.module_utils"
# The jobs of the hal_sqlite_<job>.py files, each after the files it imports.
CORE_PARTS = ("common", "backup", "restore", "recover", "facts", "archive")


class DataSafetyFailure(RuntimeError):
    """A failure of a local data-safety operation; the message is one line for the operator."""

    def __init__(self, message: str, kind: str = "io", details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.details = dict(details or {})


# ----------------------------------------------------------------------------------------------
# the single implementation


def collection_candidates() -> Iterator[Path]:
    """Where the halswarm.ops collection may be: the places halctl's playbook runner gives Ansible
    (``$HALCTL_COLLECTIONS_PATH``, the checkout's ``collections/``, ANSIBLE_COLLECTIONS_PATH or
    Ansible's defaults), then a copy shipped inside the installed package, then sys.path."""
    from halswarm.ops.runner import collections_paths

    for entry in collections_paths():
        yield Path(entry).expanduser() / _REL
    package = Path(__file__).resolve().parents[1]  # .../halswarm
    yield package / "_data" / "collections" / _REL  # the copy a wheel carries (setup.py)
    yield Path(sys.prefix) / "share" / "hal-o-swarm" / "collections" / _REL
    for entry in sys.path:
        if entry:
            yield Path(entry) / _REL


def _core_file(part: str) -> str:
    return f"hal_sqlite_{part}.py"


def _holds_core(directory: Path) -> bool:
    return all((directory / _core_file(part)).is_file() for part in CORE_PARTS)


def collection_root() -> Path:
    """The directory of the halswarm.ops collection (the one holding galaxy.yml)."""
    for candidate in collection_candidates():
        if _holds_core(candidate / _UTILS_REL):
            return candidate
    raise DataSafetyFailure(
        f"cannot find the halswarm.ops collection (looked for {_REL / _UTILS_REL / _core_file('*')}); "
        "set HALCTL_COLLECTIONS_PATH", "missing")


def core_dir() -> Path:
    """Where the hal_sqlite_* files are: the collection's module_utils, else the copies the supervisor
    role installs for its backup timer (<release root>/libexec/) on a host that has only the wheel."""
    try:
        return collection_root() / _UTILS_REL
    except DataSafetyFailure:
        prefix = Path(sys.prefix).resolve()  # /opt/hal-o-swarm/releases/<v> -> /opt/hal-o-swarm/libexec
        near = [prefix.parents[1] / "libexec"] if len(prefix.parents) > 1 else []
        for candidate in (*near, Path("/opt/hal-o-swarm/libexec")):
            if _holds_core(candidate):
                return candidate
        raise


def load_file_module(name: str, path: Path) -> ModuleType:
    """Load a standard-library-only module_utils file of the collection by path, once per process
    (registered as ``name``), so halctl and the collection's modules share one implementation."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file exists
        raise DataSafetyFailure(f"cannot load {path}", "missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def core(part: str) -> ModuleType:
    """The collection's module_utils file hal_sqlite_<part>.py, loaded once from its path.

    Each file is registered under the module name Ansible gives it, and the files it imports are
    loaded first, so its `from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common
    import ...` finds the file loaded here without Ansible's collection loader.
    """
    if part not in CORE_PARTS:
        raise ValueError(f"no hal_sqlite_{part}.py (one of {', '.join(CORE_PARTS)})")
    name = f"{_UTILS_PACKAGE}.hal_sqlite_{part}"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    directory = core_dir()
    for needed in CORE_PARTS[:CORE_PARTS.index(part) + 1]:
        load_file_module(f"{_UTILS_PACKAGE}.hal_sqlite_{needed}", directory / _core_file(needed))
    return sys.modules[name]


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn the core's DataSafetyError into DataSafetyFailure (one exception type for callers)."""
    error = core("common").DataSafetyError
    try:
        yield
    except error as exc:
        raise DataSafetyFailure(exc.message, exc.kind, exc.details) from None


# ----------------------------------------------------------------------------------------------
# where things are


@dataclass(frozen=True)
class SupervisorTarget:
    """The database (and API) of one supervisor, as its config file says."""

    db_path: Path
    ready_url: str | None
    config_path: Path | None = None


def _read_supervisor_config(path: Path) -> dict[str, Any]:
    from halswarm.config.errors import ConfigError
    from halswarm.config.loader import read_config_file
    from halswarm.config.supervisor import normalize_supervisor

    try:
        return normalize_supervisor(read_config_file(path))
    except ConfigError as exc:
        detail = "; ".join(str(p) for p in exc.problems) or str(exc)
    except Exception as exc:  # defaults cannot be applied to a document of the wrong shape
        detail = str(exc)
    raise DataSafetyFailure(f"cannot read the supervisor config {path}: {detail} (give --config FILE or "
                            "--database FILE)", "invalid")


def supervisor_target(config_path: str | os.PathLike[str] | None = None,
                      database: str | os.PathLike[str] | None = None) -> SupervisorTarget:
    """The database (`database.path`, defaults applied) and /readyz URL of the supervisor config.

    Only those keys are read, so a config whose token lives in the environment works too.
    `database` overrides the config's path; the config is then read only when given explicitly.
    A relative path is taken relative to the current directory, like the supervisor does.
    """
    doc: dict[str, Any] | None = None
    path = Path(config_path) if config_path is not None else Path(DEFAULT_SUPERVISOR_CONFIG)
    if config_path is not None or database is None:
        doc = _read_supervisor_config(path)
    ready = None
    if doc is not None:
        server = doc.get("server") or {}
        tls = bool(((doc.get("security") or {}).get("tls") or {}).get("enabled"))
        host = str(server.get("host") or "127.0.0.1")
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        host = f"[{host}]" if ":" in host else host
        if server.get("http_port"):
            ready = f"{'https' if tls else 'http'}://{host}:{server['http_port']}/readyz"
    storage_url = str(((doc or {}).get("storage") or {}).get("url") or "")
    if database is None and storage_url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        # database.path would name a SQLite file the supervisor no longer writes: never back that up instead.
        raise DataSafetyFailure(
            f"{path}: the store is PostgreSQL (storage.url), not a SQLite file: back it up and restore it with "
            "pg_dump / pg_restore through the collection (halctl backup create -i INVENTORY, halctl restore "
            "latest -i INVENTORY; docs/ha.md)", "invalid")
    raw = database if database is not None else (doc or {}).get("database", {}).get("path")
    if not raw:
        raise DataSafetyFailure(f"{path}: no database.path", "invalid")
    return SupervisorTarget(db_path=Path(raw).expanduser().resolve(), ready_url=ready,
                            config_path=path if doc is not None else None)


def default_backup_dir() -> Path:
    """``$HALCTL_BACKUP_DIR``, else /var/backups/hal-o-swarm: where the supervisor role's backup timer,
    backup.yml, restore.yml and upgrade.yml keep the backups too, so `halctl backup list` shows them."""
    return Path(os.environ.get(BACKUP_DIR_ENV) or DEFAULT_BACKUP_DIR).expanduser()


def resolve_backup(name: str, backup_dir: Path) -> Path:
    """A backup given as a path, as a file name in the backup directory, or as `latest`."""
    if name == "latest":
        with translated():
            found = core("backup").list_backups(str(backup_dir))
        if not found:
            raise DataSafetyFailure(f"no backups in {backup_dir}", "missing")
        return Path(found[0]["path"])
    given = Path(name).expanduser()
    if given.exists() or os.sep in name:
        return given
    candidate = backup_dir / name
    return candidate if candidate.exists() else given


# ----------------------------------------------------------------------------------------------
# local operations


def backup(db: Path, dest_dir: Path, *, keep: int = 7, max_age_days: float = 0, prefix: str | None = None,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Online backup + integrity check + checksum, then retention. Returns the core's result plus
    `removed` (paths deleted by retention)."""
    with translated():
        c = core("backup")
        result = c.backup_database(str(db), str(dest_dir), prefix=prefix, progress=progress)
        result["removed"] = c.apply_retention(str(dest_dir), result["prefix"], keep, max_age_days,
                                              protect=(result["name"],))
    return result


def list_backups(dest_dir: Path) -> list[dict[str, Any]]:
    with translated():
        return list(core("backup").list_backups(str(dest_dir)))


def verify(path: Path, *, require_checksum: bool = True) -> dict[str, Any]:
    with translated():
        return dict(core("backup").verify_backup(str(path), require_checksum=require_checksum))


def recover(src: Path, dest: Path, *, force: bool = False, max_seconds: float | None = None) -> dict[str, Any]:
    """Salvage `src` into `dest`; the schema fallback is this package's own migration files."""
    from halswarm.store.migrations import bundled_migrations

    migrations = [(m.name, m.sql) for m in bundled_migrations()]
    with translated():
        return dict(core("recover").recover_database(str(src), str(dest), migrations=migrations, force=force,
                                            max_seconds=max_seconds))


# ----------------------------------------------------------------------------------------------
# the service around a restore


class ServiceControl(Protocol):
    description: str

    def stop(self) -> None: ...

    def start(self) -> None: ...


class SystemdService:
    """`systemctl stop|start NAME`."""

    def __init__(self, name: str = DEFAULT_SERVICE, systemctl: str = "systemctl") -> None:
        self.name = name
        self.systemctl = systemctl
        self.description = f"systemd unit {name}"

    def _run(self, verb: str) -> None:
        try:
            proc = subprocess.run([self.systemctl, verb, self.name], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataSafetyFailure(f"systemctl {verb} {self.name}: {exc}", "service") from None
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split())[:300]
            raise DataSafetyFailure(f"systemctl {verb} {self.name} failed (rc {proc.returncode}): {detail}",
                                    "service")

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("start")


class CommandService:
    """Operator-given shell commands (hosts without systemd, containers, tests)."""

    def __init__(self, stop_command: str, start_command: str) -> None:
        self.stop_command = stop_command
        self.start_command = start_command
        self.description = "service commands"

    @staticmethod
    def _run(command: str, what: str) -> None:
        try:
            proc = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            raise DataSafetyFailure(f"{what} command failed: {exc}", "service") from None
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split())[:300]
            raise DataSafetyFailure(f"{what} command exited {proc.returncode}: {detail}", "service")

    def stop(self) -> None:
        self._run(self.stop_command, "stop")

    def start(self) -> None:
        self._run(self.start_command, "start")


class NoService:
    """The operator manages the service; the database must already be free."""

    description = "no service control"

    def stop(self) -> None:
        return None

    def start(self) -> None:
        return None


def wait_released(db: Path, timeout: float = 30.0) -> bool:
    """Wait until no process holds `db` open (the supervisor may take a moment to exit)."""
    c = core("common")
    deadline = time.monotonic() + timeout
    while c.database_in_use(str(db)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def wait_ready(url: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Poll GET `url` until it answers 200; (ready, last status or error)."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            response = httpx.get(url, timeout=2.0, verify=False)  # loopback readiness probe
            if response.status_code == 200:
                return True, "200"
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() > deadline:
            return False, last
        time.sleep(0.25)


def undo_restore(db: Path, replaced: str, replaced_files: list[str]) -> str:
    """Put the replaced database (and its WAL) back; the rejected restored file is kept as
    `<db>.rejected-<ts>`. Returns that path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rejected = core("restore")._free_name(f"{db}.rejected-{stamp}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{db}-shm")
    os.rename(db, rejected)
    for suffix in ("-wal", "-journal"):
        if os.path.exists(f"{db}{suffix}"):
            os.rename(f"{db}{suffix}", f"{rejected}{suffix}")
    for kept in replaced_files:
        suffix = kept[len(replaced):]
        os.rename(kept, f"{db}{suffix}")
    os.rename(replaced, db)
    core("common").fsync_dir(str(db.parent))
    return rejected


def restore(backup_path: Path, db: Path, service: ServiceControl, *, ready_url: str | None,
            ready_timeout: float = 60.0, check: bool = False, require_checksum: bool = True,
            note: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Verify the backup, stop the service, restore, quick_check, start, wait for /readyz.

    A bad backup is refused before the service is touched. When the supervisor does not become
    ready with the restored database, the replaced one is put back and the service started again
    (and DataSafetyFailure says so). The service is started again whatever fails after the stop.
    """
    c = core("restore")
    verification = verify(backup_path, require_checksum=require_checksum)
    if not verification["ok"]:
        raise DataSafetyFailure(f"refusing to restore {backup_path}: {verification['problems'][0]}",
                                verification["kind"] or "corrupt", {"verification": verification})
    if check:
        with translated():
            result = dict(c.restore_database(str(backup_path), str(db), require_checksum=require_checksum,
                                             check_mode=True))
        result.pop("verification", None)
        result.update(check=True, service=service.description, ready=None)
        return result
    managed = not isinstance(service, NoService)
    if managed:
        note(f"stopping the supervisor ({service.description})")
    service.stop()
    started = False
    try:
        if not wait_released(db):
            holders = ", ".join(f"pid {pid} ({name})" for pid, name in core("common").holders(str(db)))
            raise DataSafetyFailure(f"{db} is still in use after stopping the service ({holders or 'unknown'}); "
                                    "nothing was restored", "in_use")
        note(f"restoring {backup_path} -> {db}")
        with translated():
            result = dict(c.restore_database(str(backup_path), str(db), require_checksum=require_checksum))
        result.pop("verification", None)
        if managed:
            note("starting the supervisor")
        service.start()
        started = True
        result.update(check=False, service=service.description, ready=None)
        if ready_url:
            note(f"waiting for {ready_url}")
            ready, detail = wait_ready(ready_url, ready_timeout)
            result["ready"] = ready
            if not ready:
                if not result.get("replaced"):
                    raise DataSafetyFailure(f"the supervisor did not become ready with the restored database "
                                            f"({detail}); no replaced database to go back to", "not_ready", result)
                note("not ready: putting the replaced database back")
                service.stop()
                started = False
                wait_released(db)
                rejected = undo_restore(db, result["replaced"], result.get("replaced_files") or [])
                service.start()
                started = True
                raise DataSafetyFailure(
                    f"the supervisor did not become ready with the restored database ({detail}); the previous "
                    f"database was put back and the restored one kept as {rejected}", "not_ready", result)
        return result
    finally:
        if not started:
            with contextlib.suppress(DataSafetyFailure):
                if managed:
                    note("starting the supervisor again")
                service.start()
