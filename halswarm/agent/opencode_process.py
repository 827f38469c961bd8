"""Run and supervise ``opencode serve`` (manage mode), or watch an existing server (attach mode).

State machine (transitions are checked; an illegal one raises :class:`InvalidTransition`, a bug)::

    stopped -> starting -> running -> backoff -> starting -> ...
                  |            \\-----> stopping -> stopped      (stop() from any live state)
                  \\-> backoff (start failed: timeout, early exit)
    stopped/starting -> not_installed   (binary missing: no crash loop; start() again to retry)

Restarts use bounded exponential backoff (``backoff_initial`` doubling up to ``backoff_max``); the
delay resets once a run stayed up ``stable_after`` seconds, like supervisord's ``startsecs``.

Lifecycle notices (:class:`OpencodeNotice`) go to an optional callback and to :attr:`notices`
(an asyncio queue) so the agent can forward them as events: ``opencode.started`` {pid, url,
version}, ``opencode.exited`` {returncode}, ``opencode.restarting`` {delay}, ``opencode.start_failed``
{reason}.  In attach mode "exited" means the health check failed (returncode None).

Nothing here blocks the event loop: the child is an asyncio subprocess, its output is drained by a
task, and stop() escalates SIGTERM -> SIGKILL by PID (to the child's own process group, which it
leads because it is started in a new session, so tool subprocesses go too).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

log = logging.getLogger(__name__)

URL_RE = re.compile(r"https?://127\.0\.0\.1:\d+")
DEFAULT_ENV = {"OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1"}


class ProcessState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    NOT_INSTALLED = "not_installed"


_TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    ProcessState.STOPPED: frozenset({ProcessState.STARTING, ProcessState.NOT_INSTALLED}),
    ProcessState.STARTING: frozenset(
        {ProcessState.RUNNING, ProcessState.BACKOFF, ProcessState.STOPPING, ProcessState.NOT_INSTALLED}
    ),
    ProcessState.RUNNING: frozenset({ProcessState.BACKOFF, ProcessState.STOPPING}),
    ProcessState.BACKOFF: frozenset({ProcessState.STARTING, ProcessState.STOPPING}),
    ProcessState.STOPPING: frozenset({ProcessState.STOPPED}),
    ProcessState.NOT_INSTALLED: frozenset({ProcessState.STARTING, ProcessState.STOPPING}),
}


class InvalidTransition(RuntimeError):
    pass


@dataclass(frozen=True)
class OpencodeNotice:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)


class _StartFailed(Exception):
    pass


class OpencodeProcess:
    """Supervise one ``opencode serve`` (``manage=True``) or watch ``base_url`` (``manage=False``).

    ``start()`` launches the supervision task and returns; ``wait_running()`` waits for readiness;
    ``stop()`` stops it.  ``base_url`` is the current server URL (None while there is none): pass the
    bound method ``lambda: proc.base_url`` to consumers that must follow restarts on new ports.
    """

    def __init__(
        self,
        binary: str = "opencode",
        *,
        manage: bool = True,
        base_url: str | None = None,
        hostname: str = "127.0.0.1",
        port: int = 0,
        cwd: str | None = None,
        password: str | None = None,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        stop_grace: float = 5.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        stable_after: float = 60.0,
        health_interval: float = 10.0,
        health_failures: int = 3,
        on_notice: Callable[[OpencodeNotice], Any] | None = None,
    ) -> None:
        if not manage and not base_url:
            raise ValueError("attach mode (manage=False) needs base_url")
        self.binary = binary
        self.manage = manage
        self.hostname = hostname
        self.port = port
        self.cwd = cwd
        self.password = password
        self.extra_env = dict(env or {})
        self.inherit_env = inherit_env
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.health_interval = health_interval
        self.health_failures = health_failures
        self.on_notice = on_notice
        self.notices: asyncio.Queue[OpencodeNotice] = asyncio.Queue(maxsize=1000)

        self._attach_url = base_url.rstrip("/") if base_url else None
        self._state = ProcessState.STOPPED
        self._state_changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._url: str | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=50)
        self._url_found: asyncio.Future[str] | None = None
        self._failures = 0  # consecutive short runs / failed starts, drives the backoff
        self.version: str | None = None
        self.last_error: str | None = None
        self.last_returncode: int | None = None
        self.restarts = 0
        self.history: collections.deque[ProcessState] = collections.deque([self._state], maxlen=100)

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> ProcessState:
        return self._state

    @property
    def base_url(self) -> str | None:
        """URL of the server while it is running (None otherwise)."""
        if self._state is not ProcessState.RUNNING:
            return None
        return self._url

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def output_tail(self) -> list[str]:
        """Last lines the child printed (stdout and stderr merged)."""
        return list(self._output)

    def _set_state(self, new: ProcessState) -> None:
        old = self._state
        if new not in _TRANSITIONS[old]:
            raise InvalidTransition(f"opencode process: illegal transition {old} -> {new}")
        log.debug("opencode process: %s -> %s", old, new)
        self._state = new
        self.history.append(new)
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    def _notify(self, kind: str, **data: Any) -> None:
        notice = OpencodeNotice(kind, data)
        if self.notices.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.notices.get_nowait()  # drop the oldest rather than block or grow
        self.notices.put_nowait(notice)
        if self.on_notice is not None:
            try:
                self.on_notice(notice)
            except Exception:  # a broken callback must not kill supervision
                log.exception("opencode notice callback failed")

    async def wait_state(self, *states: ProcessState) -> ProcessState:
        """Wait until the state is one of ``states`` (bound it with ``asyncio.timeout``)."""
        while self._state not in states:
            await self._state_changed.wait()
        return self._state

    async def wait_running(self) -> str:
        """Wait for a running server and return its URL (bound it with ``asyncio.timeout``).

        Raises RuntimeError when the binary is missing or supervision is stopped."""
        while True:
            if self._state is ProcessState.RUNNING and self._url:
                return self._url
            if self._state is ProcessState.NOT_INSTALLED:
                raise RuntimeError(self.last_error or "opencode not installed")
            if self._state is ProcessState.STOPPED and self._task is None:
                raise RuntimeError("opencode process is stopped")
            await self._state_changed.wait()

    # -- public control ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start supervising (returns immediately).  No-op if already supervising."""
        if self._task is not None and not self._task.done():
            return
        if self._state is not ProcessState.STOPPED and self._state is not ProcessState.NOT_INSTALLED:
            raise InvalidTransition(f"start() in state {self._state}")
        self._failures = 0
        self._task = asyncio.create_task(self._supervise(), name="opencode-supervisor")

    async def stop(self) -> None:
        """Stop supervising and terminate the child (SIGTERM, then SIGKILL after ``stop_grace``)."""
        if self._state is ProcessState.STOPPED and self._task is None:
            return
        if self._state is not ProcessState.STOPPING and self._state is not ProcessState.STOPPED:
            self._set_state(ProcessState.STOPPING)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # unlike awaiting it, keeps our own cancellation intact
            if not task.cancelled() and task.exception() is not None:
                log.error("opencode supervision had failed", exc_info=task.exception())
        await self._terminate()
        if self._state is ProcessState.STOPPING:
            self._set_state(ProcessState.STOPPED)

    async def __aenter__(self) -> OpencodeProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- supervision loop ---------------------------------------------------------------------
    async def _supervise(self) -> None:
        while True:
            self._set_state(ProcessState.STARTING)
            try:
                up_since = await (self._start_child() if self.manage else self._attach_once())
            except FileNotFoundError as exc:
                self.last_error = f"opencode binary not found: {exc}"
                log.error("%s", self.last_error)
                self._notify("opencode.start_failed", reason=self.last_error)
                await self._terminate()
                self._set_state(ProcessState.NOT_INSTALLED)
                return
            except Exception as exc:  # _StartFailed, or a bug: never let supervision die silently
                reason = str(exc) if isinstance(exc, _StartFailed) else f"{type(exc).__name__}: {exc}"
                self.last_error = reason
                log.warning("opencode start failed: %s", reason, exc_info=not isinstance(exc, _StartFailed))
                self._notify("opencode.start_failed", reason=reason)
                await self._terminate()
                self._failures += 1
            else:
                self._set_state(ProcessState.RUNNING)
                self._notify("opencode.started", pid=self.pid, url=self._url, version=self.version)
                returncode = await (self._watch_child() if self.manage else self._watch_attached())
                if self.manage:
                    await self._terminate()  # reap, finish draining, end stragglers
                self._notify("opencode.exited", returncode=returncode)
                if time.monotonic() - up_since >= self.stable_after:
                    self._failures = 0
                else:
                    self._failures += 1
            delay = self._next_delay()
            self._set_state(ProcessState.BACKOFF)
            self.restarts += 1
            self._notify("opencode.restarting", delay=delay)
            await asyncio.sleep(delay)

    def _next_delay(self) -> float:
        n = max(0, self._failures - 1)
        return float(min(self.backoff_max, self.backoff_initial * (2**n)))

    # -- manage mode ------------------------------------------------------------------------------
    def _resolve_binary(self) -> str:
        path = self.binary if os.sep in self.binary else shutil.which(self.binary)
        if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise FileNotFoundError(self.binary)
        return path

    def build_env(self) -> dict[str, str]:
        env = dict(os.environ) if self.inherit_env else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.pop("OPENCODE_SERVER_PASSWORD", None)  # only ours: the client must know the password
        env.update(DEFAULT_ENV)
        if self.password:
            env["OPENCODE_SERVER_PASSWORD"] = self.password
        env.update(self.extra_env)
        return env

    def build_args(self, binary: str) -> list[str]:
        return [binary, "serve", "--hostname", self.hostname, "--port", str(self.port), *self.extra_args]

    async def _start_child(self) -> float:
        binary = self._resolve_binary()
        self._url = None
        self.version = None
        self._output.clear()
        loop = asyncio.get_running_loop()
        self._url_found = loop.create_future()
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *self.build_args(binary),
                cwd=self.cwd,
                env=self.build_env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        )
        try:
            self._proc = await asyncio.shield(spawn)
        except OSError as exc:  # e.g. a missing cwd: worth retrying, unlike a missing binary
            raise _StartFailed(f"cannot spawn {binary}: {exc}") from exc
        except asyncio.CancelledError:
            # stop() arrived mid-spawn: let the spawn finish and record the child so that
            # stop() can kill it, instead of leaking a running opencode.
            with contextlib.suppress(Exception):
                self._proc = await spawn
            raise
        log.info("opencode serve started, pid %s", self._proc.pid)
        self._drain_task = asyncio.create_task(self._drain(self._proc, self._url_found), name="opencode-output")
        deadline = time.monotonic() + self.startup_timeout
        try:
            url = await self._wait_url(deadline)
            self.version = await self._wait_healthy(url, deadline)
        except TimeoutError as exc:
            raise _StartFailed(f"not ready within {self.startup_timeout:.0f}s{self._tail_hint()}") from exc
        self._url = url
        return time.monotonic()

    def _tail_hint(self) -> str:
        tail = [ln for ln in self._output if ln.strip()]
        return f" (last output: {tail[-1][:200]})" if tail else ""

    async def _drain(self, proc: asyncio.subprocess.Process, url_found: asyncio.Future[str]) -> None:
        """Read the child's output for its whole life, so the pipe never fills up."""
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip()
            self._output.append(line)
            log.debug("opencode: %s", line)
            if not url_found.done() and "listening" in line and (m := URL_RE.search(line)):
                url_found.set_result(m.group(0))

    async def _wait_url(self, deadline: float) -> str:
        assert self._proc is not None and self._url_found is not None
        proc_done = asyncio.ensure_future(self._proc.wait())
        waiters: set[asyncio.Future[Any]] = {self._url_found, proc_done}
        try:
            done, _ = await asyncio.wait(
                waiters,
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if not proc_done.done():
                proc_done.cancel()
        if self._url_found in done:
            return self._url_found.result()
        if proc_done in done:
            if self._drain_task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._drain_task), 1.0)
            raise _StartFailed(f"exited with code {self._proc.returncode} during startup{self._tail_hint()}")
        if self.port:  # fixed port: the listening line is a nicety, health decides
            return f"http://{self.hostname}:{self.port}"
        raise TimeoutError

    async def _wait_healthy(self, url: str, deadline: float) -> str | None:
        async with httpx.AsyncClient(auth=self._auth(), timeout=2.0) as client:
            while True:
                if self._proc is not None and self._proc.returncode is not None:
                    raise _StartFailed(f"exited with code {self._proc.returncode} during startup{self._tail_hint()}")
                version = await self._probe(client, url)
                if version is not False:
                    return version
                if time.monotonic() >= deadline:
                    raise TimeoutError
                await asyncio.sleep(0.1)

    def _auth(self) -> httpx.BasicAuth | None:
        return httpx.BasicAuth("opencode", self.password) if self.password else None

    @staticmethod
    async def _probe(client: httpx.AsyncClient, url: str) -> str | Literal[False] | None:
        """Health check: the version string (or None) when healthy, False when not."""
        try:
            resp = await client.get(url + "/global/health")
            if resp.status_code == 200 and "json" in resp.headers.get("content-type", ""):
                body = resp.json()
                if isinstance(body, dict) and body.get("healthy"):
                    version = body.get("version")
                    return version if isinstance(version, str) else None
        except (httpx.HTTPError, ValueError, OSError):
            pass
        return False

    async def _watch_child(self) -> int | None:
        """Wait for the child to exit; kill it if it stops answering health checks."""
        proc = self._proc
        assert proc is not None and self._url is not None
        misses = 0
        async with httpx.AsyncClient(auth=self._auth(), timeout=min(5.0, self.health_interval)) as client:
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(proc.wait()), self.health_interval)
                except TimeoutError:
                    pass
                if await self._probe(client, self._url) is False:
                    misses += 1
                    log.warning("opencode health check failed (%d/%d)", misses, self.health_failures)
                    if misses >= self.health_failures:
                        self.last_error = "health check failed; killing opencode"
                        await self._terminate()
                        return proc.returncode
                else:
                    misses = 0

    async def _terminate(self) -> None:
        """SIGTERM the child, SIGKILL after the grace period; always reap it.

        Signals go to the child's process group (it leads one: ``start_new_session``), so the
        shells and tools opencode started are ended too, also when opencode itself already died.
        """
        # self._proc stays set until the child is reaped, so a cancelled _terminate can be redone.
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                self._signal_group(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), self.stop_grace)
                except TimeoutError:
                    log.warning("opencode pid %s ignored SIGTERM for %.1fs; SIGKILL", proc.pid, self.stop_grace)
                    self._signal_group(proc.pid, signal.SIGKILL)
                    await proc.wait()
            # Leftover group members (tool subprocesses), right after the reap.  Linux does not hand
            # out a pid that is still some group's id, so this reaches only what opencode left behind.
            self._signal_group(proc.pid, signal.SIGKILL, fallback=False)
            self.last_returncode = proc.returncode
            self._proc = None
        drain = self._drain_task
        if drain is not None:
            if not drain.done():
                # asyncio.wait (unlike wait_for) never swallows our own cancellation.
                done, _ = await asyncio.wait({drain}, timeout=2.0)
                if not done:
                    drain.cancel()
            self._drain_task = None

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals, *, fallback: bool = True) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            if fallback:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    # -- attach mode -------------------------------------------------------------------------------
    async def _attach_once(self) -> float:
        assert self._attach_url is not None
        deadline = time.monotonic() + self.startup_timeout
        async with httpx.AsyncClient(auth=self._auth(), timeout=2.0) as client:
            while True:
                version = await self._probe(client, self._attach_url)
                if version is not False:
                    self.version = version
                    self._url = self._attach_url
                    return time.monotonic()
                if time.monotonic() >= deadline:
                    raise _StartFailed(f"{self._attach_url} not healthy within {self.startup_timeout:.0f}s")
                await asyncio.sleep(min(1.0, self.health_interval))

    async def _watch_attached(self) -> int | None:
        assert self._attach_url is not None
        misses = 0
        async with httpx.AsyncClient(auth=self._auth(), timeout=min(5.0, self.health_interval)) as client:
            while misses < self.health_failures:
                await asyncio.sleep(self.health_interval)
                misses = misses + 1 if await self._probe(client, self._attach_url) is False else 0
        self.last_error = f"{self._attach_url} stopped answering health checks"
        return None
