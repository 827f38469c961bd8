"""Provisioned env vars in the managed opencode's environment (spec 8.4, issue 9).

Merge rule for several projects (one opencode serves all projects of a node): a variable set by one
project, or by several projects with the same value, is passed; a variable that projects set to
different values is NOT passed at all (no project's value silently wins for the others) and is reported
as a conflict (names and projects only, never values) in the provisioning result (``env_conflicts``).

When provisioning changes the merged env, the managed process gets the new env and is restarted, but
only at a safe point: with no session busy (``running`` or ``waiting_input``) it restarts now; otherwise
the restart is reported as pending (an ``env.opencode.restart_pending`` event) and happens as soon as no
session is busy (``env.opencode.restarted``). A running session is never killed for an env change. An
opencode the agent does not manage (attach mode) is not restarted: the result says a restart is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

BUSY = frozenset({"running", "waiting_input"})
Emit = Callable[[str, dict[str, Any]], Awaitable[Any]]


def merge_project_env(per_project: Mapping[str, Mapping[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(merged env, conflicts: name -> the projects that set it to different values)."""
    values: dict[str, dict[str, str]] = {}
    for project in sorted(per_project):
        for name, value in per_project[project].items():
            values.setdefault(name, {})[project] = value
    merged: dict[str, str] = {}
    conflicts: dict[str, list[str]] = {}
    for name, by_project in sorted(values.items()):
        if len(set(by_project.values())) == 1:
            merged[name] = next(iter(by_project.values()))
        else:
            conflicts[name] = sorted(by_project)
    return merged, conflicts


class OpencodeEnvSync:
    """Keeps the managed opencode's env in step with the provisioned vars (see the module doc)."""

    def __init__(self, process: Callable[[], Any], sessions: Callable[[], Iterable[Any]],
                 emit: Emit | None = None, *, client: Callable[[], Any] | None = None,
                 directories: Callable[[], Iterable[str]] | None = None, poll_interval: float = 1.0,
                 ready_timeout: float = 60.0) -> None:
        self._process = process
        self._sessions = sessions
        self._client = client or (lambda: None)
        self._directories = directories or (lambda: ())
        self._emit = emit
        self.poll_interval = poll_interval
        self.ready_timeout = ready_timeout
        self.applied: dict[str, str] = {}  # what the running process was started with
        self._wanted: dict[str, str] | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def started_with(self, env: Mapping[str, str]) -> None:
        """The env the process is (about to be) started with."""
        self.applied = dict(env)

    async def busy(self) -> list[str]:
        """Sessions in a turn: the tracker's view, and opencode's own ``/session/status`` per project
        directory (a prompt just accepted may not have reached the tracker yet). When opencode cannot be
        asked, the answer is ``["unknown"]``: not a safe point."""
        out = {str(s.id) for s in self._sessions() if getattr(s, "status", None) in BUSY}
        client = self._client()
        if client is not None:
            for directory in self._directories():
                try:
                    statuses = await client.session_status_map(directory=directory)
                except Exception as exc:
                    log.info("could not ask opencode for busy sessions: %s", exc)
                    return sorted(out | {"unknown"})
                out |= {sid for sid, st in statuses.items()
                        if isinstance(st, Mapping) and st.get("type") in ("busy", "retry")}
        return sorted(out)

    @property
    def restart_pending(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    async def update(self, env: Mapping[str, str]) -> dict[str, Any]:
        """Put ``env`` on the managed process; restart it now or at the next safe point. Returns a report."""
        env = dict(env)
        proc = self._process()
        if proc is None:
            self.applied = env
            return {"restart": "not_needed", "message": "no opencode process on this node"}
        if not getattr(proc, "manage", False):
            if env == self.applied:
                return {"restart": "not_needed", "message": "opencode already has these env vars"}
            return {"restart": "needed", "message": "opencode is not managed by the agent (attach mode): restart it "
                                                    "yourself to pick up the provisioned env vars"}
        if env == self.applied and not self.restart_pending:
            return {"restart": "not_needed", "message": "opencode already has these env vars"}
        self._put(proc, env)
        busy = await self.busy()
        log.info("provisioned env vars changed (%s); busy sessions: %s", ", ".join(sorted(env)) or "none",
                 ", ".join(busy) or "none")
        if busy:
            self._wanted = env
            if not self.restart_pending:
                self._waiter = asyncio.get_running_loop().create_task(self._restart_when_idle(),
                                                                      name="env-opencode-restart")
            msg = (f"opencode restart pending: {len(busy)} busy session(s); it restarts with the new env vars as "
                   "soon as none is busy")
            if self._emit is not None:
                with contextlib.suppress(Exception):
                    await self._emit("env.opencode.restart_pending", {"busy_sessions": busy, "message": msg,
                                                                      "vars": sorted(env)})
            return {"restart": "pending", "busy_sessions": busy, "message": msg}
        await self._restart(proc, env)
        return {"restart": "done", "pid": getattr(proc, "pid", None),
                "message": "opencode restarted with the provisioned env vars"}

    def _put(self, proc: Any, env: dict[str, str]) -> None:
        # keys others put there (pushed credentials) stay and win over provisioned values
        others = {k: v for k, v in proc.extra_env.items() if k not in self.applied or proc.extra_env[k] !=
                  self.applied[k]}
        proc.extra_env = env | others

    async def _restart(self, proc: Any, env: dict[str, str]) -> None:
        async with self._lock:
            await proc.stop()
            self.applied = env
            await proc.start()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.ready_timeout):
                    await proc.wait_running()

    async def _restart_when_idle(self) -> None:
        try:
            while True:  # sessions change through events the tracker folds in; poll its state
                if not await self.busy():
                    break
                await asyncio.sleep(self.poll_interval)
            proc, env = self._process(), self._wanted
            if proc is None or env is None:
                return
            self._put(proc, env)
            await self._restart(proc, env)
            if self._emit is not None:
                with contextlib.suppress(Exception):
                    await self._emit("env.opencode.restarted", {"pid": getattr(proc, "pid", None),
                                                                "vars": sorted(env)})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("restarting opencode for the provisioned env vars failed")

    async def close(self) -> None:
        if self._waiter is not None:
            self._waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._waiter
