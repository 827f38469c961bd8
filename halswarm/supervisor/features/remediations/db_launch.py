"""`supervisor-db-corruption` in `remediation.auto`: the database failed its check at start.

The supervisor cannot repair a file it holds, so it has the run started outside itself before exiting, at
most once per window (a stamp file beside the database), or names the command to run. Deployed, it runs
as an unprivileged user with NoNewPrivileges and cannot start a root unit: when its request directory
exists (the supervisor role creates it, with a root ``.path`` unit watching it), it writes a request
there (`halswarm.core.remediation.requests`); elsewhere it tries ``systemd-run`` (a root supervisor).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from halswarm.core.remediation.requests import encode_request, request_file_name
from halswarm.supervisor.features.remediations.halctl_run import display_command, halctl_argv
from halswarm.supervisor.features.remediations.settings import DB_CORRUPTION, SUPERVISORS_GROUP, AutoConfig


def under_systemd(env: Mapping[str, str] = os.environ) -> bool:
    """Started by systemd (a service has INVOCATION_ID) on a host where systemd-run can start units."""
    return bool(env.get("INVOCATION_ID")) and Path("/run/systemd/system").is_dir() and \
        shutil.which("systemd-run") is not None


def db_stamp_path(database_path: str) -> Path:
    return Path(database_path).expanduser().with_name(Path(database_path).name + ".auto-remediation.json")


def systemd_run_argv(unit: str, inner: list[str]) -> list[str]:
    return ["systemd-run", "--unit", unit, "--collect", "--quiet", "--no-block", *inner]


def write_request(directory: Path, incident: str, now: float) -> Path:
    """Atomically: written beside the directory, then renamed into it (the root path unit watching it never
    sees half a request, nor a temporary)."""
    final = directory / request_file_name(incident, now)
    tmp = directory.parent / f".{final.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode_request(incident, now))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return final


def launch_db_remediation(cfg: AutoConfig, *, now: float | None = None, systemd: bool | None = None,
                          run: Callable[..., Any] = subprocess.run) -> str:
    """Start the run detached (it must outlive this process, which exits), at most once per window.
    Returns the clause appended to the one-line start-up error."""
    now = time.time() if now is None else now
    limit = cfg.supervisor_host or SUPERVISORS_GROUP
    shown = display_command(DB_CORRUPTION, cfg.inventory, limit)
    if not cfg.inventory:
        return f"auto remediation not started (remediation.inventory is not set): run `{shown}`"
    stamp = db_stamp_path(cfg.database_path)
    try:
        prev = json.loads(stamp.read_text())
        if now - float(prev["started_at"]) < cfg.window_seconds:
            return (f"auto remediation already started as {prev.get('unit')} "
                    f"{now - float(prev['started_at']):.0f} s ago (window {cfg.window_seconds / 60:g} min)")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if cfg.request_dir is not None and cfg.request_dir.is_dir():
        try:
            req = write_request(cfg.request_dir, DB_CORRUPTION, now)
        except OSError as exc:
            return f"auto remediation could not be requested ({exc.strerror or exc}): run `{shown}`"
        with contextlib.suppress(OSError):
            stamp.write_text(json.dumps({"started_at": now, "unit": "hal-supervisor-remediate.service",
                                         "request": str(req)}))
        return f"auto remediation requested ({req}; hal-supervisor-remediate.service runs `{shown}`)"
    if not (under_systemd() if systemd is None else systemd):
        return f"not under systemd, auto remediation not started: run `{shown}`"
    unit = f"hal-remediate-db-{int(now)}"
    inner = halctl_argv(DB_CORRUPTION, cfg.inventory, limit, state_dir=cfg.state_dir, timeout=cfg.timeout_seconds,
                        json_output=False, send=True)
    try:
        res = run(systemd_run_argv(unit, inner), capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"auto remediation could not be started ({exc}): run `{shown}`"
    if res.returncode != 0:
        why = (res.stderr or "").strip().splitlines()
        return f"auto remediation could not be started ({why[-1] if why else f'rc {res.returncode}'}): run `{shown}`"
    with contextlib.suppress(OSError):
        stamp.write_text(json.dumps({"started_at": now, "unit": unit, "command": inner}))
    return f"auto remediation started as systemd unit {unit} (`{shown}`)"
