"""Root side of the remediation requests (`halswarm.core.remediation.requests`).

Run by ``hal-supervisor-remediate.service`` (started by its ``.path`` unit when the supervisor's request
directory is not empty): every file there is read once and removed, whatever it holds (so the path unit
never loops); each valid request runs the fixed ``halctl remediate <incident>`` command line, with the
inventory, limit, state directory and timeout taken from the supervisor's own config, never from the
request; the incident must also be listed in that config's `remediation.auto`. No shell. One line per
decision on stdout (the journal).

    python -m halswarm.supervisor.features.remediations.request_runner --config CONFIG --dir DIR
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from halswarm.core.remediation.requests import MAX_BYTES, Request, RequestError, parse_request, valid_file_name
from halswarm.supervisor.features.remediations.db_launch import SUPERVISORS_GROUP
from halswarm.supervisor.features.remediations.halctl_run import display_command, halctl_argv
from halswarm.supervisor.features.remediations.settings import AutoConfig


def take_requests(directory: Path, now: float, say: Callable[[str], None]) -> list[Request]:
    """Read and remove every entry of `directory`; the valid requests, one per incident.

    The directory belongs to the service user, so everything happens relative to one descriptor of it,
    opened without following a symlink: a link put in its place or inside it never leads root elsewhere.
    Nothing read is echoed (a hard link to a secret would otherwise end in the journal)."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    found: dict[str, Request] = {}
    try:
        for name in sorted(os.listdir(dfd)):
            shown = name.encode("unicode_escape").decode()[:80]
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):  # an empty one goes (a leftover would re-trigger the path unit)
                    os.rmdir(name, dir_fd=dfd)
                    say(f"{shown}: refused (a directory), removed")
                    continue
                body = b""
                if stat.S_ISREG(st.st_mode):
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
                    with os.fdopen(fd, "rb") as f:
                        body = f.read(MAX_BYTES + 1)
                os.unlink(name, dir_fd=dfd)
            except OSError as exc:
                say(f"{shown}: refused ({exc.strerror or exc})")
                continue
            if not stat.S_ISREG(st.st_mode) or not valid_file_name(name):
                say(f"{shown}: refused (not a request file name or not a regular file), removed")
                continue
            try:
                req = parse_request(body, now)
            except RequestError as exc:
                say(f"{shown}: refused ({exc}), removed")
                continue
            say(f"{shown}: accepted ({req.incident})")
            found.setdefault(req.incident, req)
    finally:
        os.close(dfd)
    return list(found.values())


def run_request(req: Request, auto: AutoConfig, run: Callable[..., Any] = subprocess.run) -> int:
    """The fixed command line for `req` (config decides everything but the allowlisted incident)."""
    limit = auto.supervisor_host or SUPERVISORS_GROUP
    shown = display_command(req.incident, auto.inventory, limit)
    if not auto.inventory:
        print(f"{req.incident}: remediation.inventory is not set: run `{shown}`", flush=True)
        return 1
    argv = halctl_argv(req.incident, auto.inventory, limit, state_dir=auto.state_dir,
                       timeout=auto.timeout_seconds, json_output=False, send=True)
    print(f"{req.incident}: running `{shown}`", flush=True)
    res = run(argv, stdin=subprocess.DEVNULL, check=False, timeout=auto.timeout_seconds + 60)
    print(f"{req.incident}: halctl remediate exited {res.returncode}", flush=True)
    return int(res.returncode)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hal-remediation-requests", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the supervisor's config file")
    ap.add_argument("--dir", required=True, help="the request directory the supervisor writes")
    args = ap.parse_args(argv)
    from halswarm.config.errors import ConfigError
    from halswarm.config.supervisor import load_supervisor_config

    try:
        requests = take_requests(Path(args.dir), time.time(), lambda line: print(line, flush=True))
    except OSError as exc:
        print(f"error: cannot read {args.dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if not requests:
        return 0
    try:
        cfg, _ = load_supervisor_config(args.config, env={})
    except ConfigError as exc:
        print(f"error: invalid configuration {args.config}: {exc}", file=sys.stderr)
        return 1
    auto = AutoConfig.from_config(cfg)
    allowed = [r for r in requests if r.incident in auto.auto]
    for r in requests:
        if r.incident not in auto.auto:
            print(f"{r.incident}: refused (not listed in remediation.auto of {args.config})", flush=True)
    return max((run_request(r, auto) for r in allowed), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
