"""Run a tool's CLI once, with a timeout, as the agent's user (or another one), capturing output.

Every call is bounded: on timeout the whole process group is killed (the CLIs are Node launchers
that start native children). Nothing here logs arguments, input or output: they may hold secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from halswarm.core.auth_status.cli_output import CliResult

DEFAULT_TIMEOUT = 10.0
MAX_OUTPUT = 256 * 1024


@dataclass(frozen=True)
class RunAs:
    """Run children as this uid/gid (the agent itself must be root to use it; tests are)."""

    uid: int
    gid: int
    home: str
    name: str

    @classmethod
    def lookup(cls, user: str | int) -> RunAs:
        import pwd

        pw = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
        return cls(pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_name)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: str | None = None,
    run_as: RunAs | None = None,
    stdin: int | None = asyncio.subprocess.DEVNULL,
) -> asyncio.subprocess.Process:
    kwargs: dict[str, object] = {}
    if run_as is not None and os.geteuid() != run_as.uid:
        kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        **kwargs,  # type: ignore[arg-type]
    )


async def run_cli(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    input_data: bytes | None = None,
    cwd: str | None = None,
    run_as: RunAs | None = None,
) -> CliResult:
    """Run ``argv`` to completion (or ``timeout``); never raises for the child's own failures."""
    try:
        proc = await spawn(
            argv, env, cwd=cwd, run_as=run_as,
            stdin=asyncio.subprocess.PIPE if input_data is not None else asyncio.subprocess.DEVNULL,
        )
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return CliResult(-1, "", "", spawn_error=f"cannot run {os.path.basename(argv[0])}: {reason}")
    try:
        out, err = await asyncio.wait_for(proc.communicate(input_data), timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.communicate(), 5)
        return CliResult(-1, "", "", timed_out=True)
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    finally:
        if proc.returncode is not None:
            _kill_group(proc.pid)  # stragglers of the group (a child left running)
    return CliResult(
        proc.returncode if proc.returncode is not None else -1,
        (out or b"")[:MAX_OUTPUT].decode("utf-8", "replace"),
        (err or b"")[:MAX_OUTPUT].decode("utf-8", "replace"),
    )
