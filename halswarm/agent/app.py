"""The hal-agent process: wires outbox, supervisor connection, opencode and the event bridge.

Start-up order (``Agent.start``):

1. open the durable outbox in ``data_dir`` (fails fast: unwritable dir, another agent holds it);
2. check project directories (missing ones are reported, not offered);
3. opencode: ``opencode.manage: true`` starts ``opencode serve`` on ``opencode_port`` (0: a free port,
   read from its stdout; binary from
   ``tool_paths.opencode``, else ``opencode.binary``) and restarts it when it dies; ``false``
   watches an already running server on that port. A binary that is not installed means no
   sessions on this node: an ``agent.warning`` event, capability ``opencode: false`` with the
   reason, and the agent still registers;
4. consume ``/global/event`` through the bridge; every (re)connection of that stream re-seeds
   the session tracker from opencode's session list, so a restarted agent (or opencode) reports
   the sessions that exist;
5. connect to the supervisor (register, heartbeats, commands, outbox replay).

opencode inherits the agent's environment (HOME, XDG dirs, ``OPENCODE_CONFIG_CONTENT``...): what
the service user's opencode uses is what the agent's unit sets up. The managed server's PID is kept
in ``data_dir/opencode.pid``; a server left running by a crashed agent (it lives in its own process
group, so it survives a SIGKILL of the agent) is stopped before a new one is started.

``shutdown`` (SIGTERM): refuse new commands, let running ones finish (bounded), flush coalesced
deltas, give the connection a moment to deliver the outbox, close it, stop a managed opencode,
close the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from halswarm import __version__
from halswarm.agent.auth import AuthService, opencode_restarter
from halswarm.agent.bridge import EventBridge
from halswarm.agent.capabilities import detect_tools, resolve_binary
from halswarm.agent.commands import AgentCommands
from halswarm.agent.connection import SupervisorConnection
from halswarm.agent.env import NodeEnvService
from halswarm.agent.env.procenv import OpencodeEnvSync
from halswarm.agent.env.service import node_probes
from halswarm.agent.opencode_client import OpencodeClient, OpencodeError, OpencodeNotFound
from halswarm.agent.opencode_events import GlobalEventStream
from halswarm.agent.opencode_process import OpencodeNotice, OpencodeProcess, ProcessState
from halswarm.agent.outbox import AsyncOutbox, OutboxLockedError
from halswarm.agent.progress import EVENT_TYPE as PROJECT_STATUS_EVENT
from halswarm.agent.progress import STATE_FILE as PROGRESS_STATE_FILE
from halswarm.agent.progress import ProgressWatcher
from halswarm.agent.projects import ProjectCheck, check_projects, project_map, warning_text
from halswarm.agent.resources import sample_resources
from halswarm.agent.session_state import SessionReducer, read_current_task
from halswarm.agent.vitals import sample_vitals
from halswarm.config.agent import AgentConfig
from halswarm.core.capabilities import ToolInfo
from halswarm.memwatch import MemoryWatch
from halswarm.protocol.agent_link import ConnState
from halswarm.systemd_restarts import read_own_nrestarts

log = logging.getLogger(__name__)

PID_FILE = "opencode.pid"
TASK_REFRESH_INTERVAL = 15.0


class StartupError(RuntimeError):
    """The agent cannot start; the message is one line for the operator."""


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode("utf-8", "replace") for p in raw.split(b"\0") if p]


def stop_stale_opencode(pid_file: Path, grace: float = 5.0) -> int | None:
    """Stop an ``opencode serve`` a previous (crashed) agent left behind; returns its pid if one was stopped.

    Only a process whose command line is ``... opencode... serve ...`` is touched, so a recycled pid
    of some other program is left alone.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    args = _proc_cmdline(pid)
    if not (args and "serve" in args[1:] and any("opencode" in os.path.basename(a) for a in args[:2])):
        with contextlib.suppress(OSError):
            pid_file.unlink()
        return None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            try:
                os.killpg(pid, sig)  # it leads its own process group (start_new_session)
            except ProcessLookupError:
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _proc_cmdline(pid):
            time.sleep(0.05)
        if not _proc_cmdline(pid):
            break
    with contextlib.suppress(OSError):
        pid_file.unlink()
    return pid


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        handover_idle_timeout: float = 60.0,
        coalesce_interval: float = 0.5,
        shutdown_flush_timeout: float = 3.0,
        startup_wait: float = 20.0,
    ) -> None:
        self.cfg = cfg
        self.startup_wait = startup_wait
        self._synced = asyncio.Event()
        self.data_dir = Path(cfg.data_dir)
        self.shutdown_flush_timeout = shutdown_flush_timeout
        self.hostname = socket.gethostname()
        self.tracker = SessionReducer(project_map(cfg.projects), task_reader=read_current_task)
        self.bridge = EventBridge(self.tracker, self._append, coalesce_interval=coalesce_interval)
        self.commands = AgentCommands(
            self.bridge,
            client=self._current_client,
            unavailable_reason=self.unavailable_reason,
            projects=lambda: {c.name: c.directory for c in check_projects(cfg.projects) if c.ok},
            resume_message=cfg.resume_message,
            handover_idle_timeout=handover_idle_timeout,
        )
        # Tool auth (issue 7): detection, device flows and pushed credentials, served as commands.
        self._restarter = opencode_restarter(lambda: self.opencode)
        self.auth = AuthService(
            cfg,
            self._send_frame,
            self._current_client,
            emit_event=lambda etype, data: self._append(None, etype, None, None, data),
            restart_opencode=self._restarter,
        )
        self.commands.add_handlers(self.auth.handlers())
        # Environment manifest (issue 9): checks, safe provisioning, AGENT.md, served as commands.
        self.env = NodeEnvService(
            projects=lambda: {c.name: c.directory for c in check_projects(cfg.projects) if c.ok},
            data_dir=cfg.data_dir,
            node_id=cfg.node_id,
            # the only programs env checks run for versions: known tools + this node's env.probe_tools
            probes=node_probes(cfg.probe_tools, cfg.tool_paths, opencode_binary=cfg.opencode_binary),
            # provisioned env vars reach the managed opencode: restarted at a safe point (no busy session)
            opencode_env=OpencodeEnvSync(
                lambda: self.opencode, lambda: list(self.tracker.sessions.values()),
                emit=lambda etype, data: self._append(None, etype, None, None, data), client=self._current_client,
                directories=lambda: [c.directory for c in check_projects(cfg.projects) if c.ok]),
        )
        self.commands.add_handlers(self.env.handlers())
        # PROGRESS.md status changes -> `project.status` events (dependencies autostart, issue 8).
        self.progress = ProgressWatcher(
            lambda: {c.name: c.directory for c in check_projects(cfg.projects) if c.ok},
            lambda project, data: self._append(None, PROJECT_STATUS_EVENT, None, project, data),
            self.data_dir / PROGRESS_STATE_FILE,
        )
        self.outbox: AsyncOutbox | None = None
        self.connection: SupervisorConnection | None = None
        self.opencode: OpencodeProcess | None = None
        self._client: OpencodeClient | None = None
        self._no_opencode: str | None = None  # why this node has no opencode at all
        self._tools_task: asyncio.Task[dict[str, ToolInfo]] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._invalid_reported: set[tuple[str, str | None]] = set()
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        cfg = self.cfg
        try:
            self.outbox = await AsyncOutbox.open(cfg.data_dir, max_events=cfg.outbox_max_events)
        except OutboxLockedError as exc:
            raise StartupError(f"{exc}: is another hal-agent running with data_dir {cfg.data_dir}?") from None
        except OSError as exc:
            raise StartupError(f"cannot use data_dir {cfg.data_dir}: {exc.strerror or exc}") from None
        self._tools_task = asyncio.create_task(
            detect_tools(cfg.tool_paths, opencode_binary=cfg.opencode_binary), name="agent-tools"
        )
        await self._report_invalid_projects(check_projects(cfg.projects))
        await asyncio.to_thread(self.auth.load)  # pushed credentials survive restarts: opencode starts with them
        await self._start_opencode()
        # Register with a settled picture (capabilities and the session snapshot are only sent
        # at registration): give opencode a bounded moment to come up and be listed.
        await self._await_opencode_settled()
        unit_restarts = await asyncio.to_thread(read_own_nrestarts)  # fixed for this process's lifetime
        self.connection = SupervisorConnection(
            cfg.supervisor_urls or cfg.supervisor_url,
            cfg.auth_token,
            self.outbox,
            register_builder=self._register_payload,
            command_handler=self.commands.handle,
            on_ready=self.auth.on_ready,
            resources_fn=lambda: sample_resources(cfg.data_dir),
            process_fn=lambda: sample_vitals(unit_restarts, self._opencode_restarts()),
        )
        self.connection.start()
        self.auth.start()
        self._spawn(self._ticker(), "agent-ticker")
        self._spawn(self.progress.run(), "agent-progress")
        self._spawn(MemoryWatch(cfg.memory_warn_percent).run(), "memory-watch")
        log.info(
            "hal-agent %s started as node %s (data_dir %s, %d project(s))",
            __version__,
            cfg.node_id,
            cfg.data_dir,
            len(cfg.projects),
        )

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def shutdown(self) -> None:
        """Graceful stop (idempotent enough to call once after ``start``)."""
        log.info("hal-agent shutting down")
        self.commands.accepting = False
        still = await self.commands.drain(5.0)
        if still:
            log.warning("%d command(s) still running at shutdown; they are cancelled", still)
        await self.auth.stop()
        if self.env.opencode_env is not None:
            await self.env.opencode_env.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.bridge.flush_all()
        await self.bridge.close()
        if self.connection is not None and self.outbox is not None:
            deadline = time.monotonic() + self.shutdown_flush_timeout
            while self.outbox.core.size() > 0 and self.connection.state is ConnState.READY:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
            await self.connection.close()
        # Close our keep-alive connections first: opencode's graceful stop waits for open ones.
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.opencode is not None:
            await self.opencode.stop()
            if self.opencode.manage:
                with contextlib.suppress(OSError):
                    (self.data_dir / PID_FILE).unlink()
        if self._tools_task is not None and not self._tools_task.done():
            self._tools_task.cancel()
            await asyncio.gather(self._tools_task, return_exceptions=True)
        if self.outbox is not None:
            left = self.outbox.core.size()
            await self.outbox.close()
            if left:
                log.info("%d event(s) stay in the outbox for the next start", left)
        log.info("hal-agent stopped")

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    # ------------------------------------------------------------------ events out

    def _send_frame(self, msg: Any) -> None:
        """auth_state / credential_sync frames; dropped while there is no connection (resent on ready)."""
        if self.connection is not None:
            self.connection.send_frame(msg)

    async def _append(
        self, event_id: str | None, etype: str, session_id: str | None, project: str | None, data: Any
    ) -> Any:
        assert self.outbox is not None
        return await self.outbox.append(event_id, etype, session_id, project, data)

    def _opencode_restarts(self) -> int | None:
        """Restarts of the opencode serve this agent supervises (None when it only attaches to one)."""
        oc = self.opencode
        return oc.restarts if oc is not None and oc.manage else None

    async def warn(self, message: str) -> None:
        log.warning("%s", message)
        await self._append(None, "agent.warning", None, None, {"message": message})

    async def _report_invalid_projects(self, checks: list[ProjectCheck]) -> None:
        """One ``agent.warning`` per project problem, again only when the problem changes."""
        current = {(c.name, c.problem) for c in checks if not c.ok}
        for c in checks:
            if not c.ok and (c.name, c.problem) not in self._invalid_reported:
                await self.warn(warning_text(c))
        self._invalid_reported = current

    # ------------------------------------------------------------------ opencode

    async def _start_opencode(self) -> None:
        cfg = self.cfg
        if cfg.opencode_manage:
            path = resolve_binary(cfg.opencode_binary, cfg.tool_paths.get("opencode"))
            if path is None:
                where = cfg.tool_paths.get("opencode") or cfg.opencode_binary
                self._no_opencode = f"opencode is not installed ({where} not found); this node runs no sessions"
                await self.warn(self._no_opencode)
                return
            stale = await asyncio.to_thread(stop_stale_opencode, self.data_dir / PID_FILE)
            if stale is not None:
                await self.warn(f"stopped opencode serve pid {stale} left running by a previous agent")
            self.opencode = OpencodeProcess(
                path,
                manage=True,
                port=cfg.opencode_port,
                cwd=str(self.data_dir),
                password=cfg.opencode_password,
                # provisioned project env vars (spec 8.4), then the restored pushed credentials (they win)
                env=(self.env.process_env() or {}) | self.auth.toolenv.pushed or None,
            )
            self._restarter.pushed = set(self.auth.toolenv.pushed)
        else:
            self.opencode = OpencodeProcess(
                manage=False,
                base_url=f"http://127.0.0.1:{cfg.opencode_port}",
                password=cfg.opencode_password,
            )
        await self.opencode.start()
        self._spawn(self._notices(self.opencode), "agent-opencode-notices")
        self._spawn(self._events(self.opencode), "agent-opencode-events")

    async def _await_opencode_settled(self) -> None:
        proc = self.opencode
        if proc is None or self.startup_wait <= 0:
            return
        if not proc.manage and not await self._attach_target_answers():
            return  # nothing listens there: the attach loop keeps trying in the background

        async def settled() -> None:
            # (right after start() the state may still read "stopped": the task has not run yet)
            state = await proc.wait_state(ProcessState.RUNNING, ProcessState.BACKOFF, ProcessState.NOT_INSTALLED)
            if state is ProcessState.RUNNING:
                await self._synced.wait()

        waiter = asyncio.ensure_future(settled())
        stop = asyncio.ensure_future(self._stopping.wait())  # a SIGTERM during start-up ends the wait
        done, _ = await asyncio.wait({waiter, stop}, timeout=self.startup_wait, return_when=asyncio.FIRST_COMPLETED)
        for t in (waiter, stop):
            t.cancel()
        await asyncio.gather(waiter, stop, return_exceptions=True)
        if not done:
            log.warning("opencode not ready after %.0f s; registering anyway", self.startup_wait)

    async def _attach_target_answers(self) -> bool:
        url = f"http://127.0.0.1:{self.cfg.opencode_port}"
        try:
            async with OpencodeClient(url, password=self.cfg.opencode_password, timeout=2.0) as client:
                await client.health()
            return True
        except OpencodeError:
            return False

    def _current_client(self) -> OpencodeClient | None:
        proc = self.opencode
        if proc is None or proc.state is not ProcessState.RUNNING or proc.base_url is None:
            return None
        if self._client is None or self._client.base_url != proc.base_url.rstrip("/"):
            old = self._client
            self._client = OpencodeClient(proc.base_url, password=self.cfg.opencode_password, timeout=15.0)
            if old is not None:
                self._spawn(old.aclose(), "agent-close-client")
        return self._client

    def unavailable_reason(self) -> str:
        if self._no_opencode:
            return self._no_opencode
        proc = self.opencode
        if proc is None:
            return "opencode is not configured"
        if proc.state is ProcessState.RUNNING:
            return ""
        detail = f" ({proc.last_error})" if proc.last_error else ""
        if not proc.manage:
            where = f"127.0.0.1:{self.cfg.opencode_port}"
            return f"no opencode server answers at {where} (opencode.manage is false){detail}"
        return f"opencode serve is {proc.state.value.replace('_', ' ')}{detail}"

    async def _notices(self, proc: OpencodeProcess) -> None:
        """Forward the managed/attached server's lifecycle as ``opencode.*`` events."""
        while True:
            notice: OpencodeNotice = await proc.notices.get()
            if notice.type == "opencode.started" and proc.manage and notice.data.get("pid"):
                with contextlib.suppress(OSError):
                    (self.data_dir / PID_FILE).write_text(f"{notice.data['pid']}\n")
            log.info("%s %s", notice.type, notice.data)
            await self._append(None, notice.type, None, None, dict(notice.data))

    async def _events(self, proc: OpencodeProcess) -> None:
        stream = GlobalEventStream(lambda: proc.base_url, password=self.cfg.opencode_password, backoff_initial=0.1)
        async with contextlib.aclosing(stream.events()) as events:
            async for ev in events:
                if ev.type == "server.connected":
                    try:
                        await self._resync(stream.current_url)
                    except Exception:  # never let a resync bug end the event loop
                        log.exception("resynchronising with opencode failed")
                try:
                    await self.bridge.handle(ev)
                except Exception:  # one bad event must not end the bridge
                    log.exception("bridge failed on %s event", ev.type)

    async def _resync(self, url: str | None) -> None:
        """Seed the tracker from opencode's session list (each time the event stream (re)connects)."""
        client = self._current_client()
        if client is None and url:
            client = OpencodeClient(url, password=self.cfg.opencode_password, timeout=15.0)
            own = True
        else:
            own = False
        if client is None:
            return
        try:
            dirs = sorted({c.directory for c in check_projects(self.cfg.projects) if c.ok})
            infos = [
                i
                for i in await client.list_sessions(dirs)
                if isinstance(i, dict) and self.tracker.project_for(i.get("directory"))
            ]
            statuses: dict[str, dict[str, Any]] = {}
            for d in sorted({i["directory"] for i in infos if isinstance(i.get("directory"), str)}):
                statuses.update(await client.session_status_map(directory=d))
            await self.bridge.seed(infos, statuses)
            listed = {i.get("id") for i in infos}
            for sid in self.bridge.tracked_ids() - listed:
                try:
                    info = await client.get_session(sid)
                except OpencodeNotFound:
                    await self.bridge.vanished(sid)
                else:
                    await self.bridge.seed([info], statuses)
            log.info("opencode session list synchronised: %d session(s) of our projects", len(infos))
            self._synced.set()
        except OpencodeError as exc:
            log.warning("could not list opencode sessions: %s", exc)
        finally:
            if own:
                await client.aclose()

    async def _ticker(self) -> None:
        """Flush coalesced deltas when due; re-read CURRENT_TASK.md now and then."""
        last_tasks = time.monotonic()
        while True:
            await asyncio.sleep(0.2 if self.bridge.coalescer.pending_count else 1.0)
            try:
                await self.bridge.flush_due()
                if time.monotonic() - last_tasks >= TASK_REFRESH_INTERVAL:
                    last_tasks = time.monotonic()
                    await self.bridge.refresh_tasks()
            except Exception:
                log.exception("agent ticker failed")

    # ------------------------------------------------------------------ registration

    async def _tools(self, wait: float = 3.0) -> dict[str, ToolInfo]:
        """Detected tools; waits at most ``wait`` s (``register`` must go out within the hub's 10 s)."""
        if self._tools_task is None:
            return {}
        try:
            return await asyncio.wait_for(asyncio.shield(self._tools_task), wait)
        except TimeoutError:
            log.warning("tool detection still running; registering without it")
            return {}
        except Exception as exc:
            log.warning("tool detection failed: %s", exc)
            return {}

    def opencode_server_info(self) -> dict[str, Any]:
        proc = self.opencode
        if proc is None:
            return {"mode": "manage" if self.cfg.opencode_manage else "attach", "state": "not_installed",
                    "url": None, "version": None, "reason": self._no_opencode}
        return {
            "mode": "manage" if proc.manage else "attach",
            "state": proc.state.value,
            "url": proc.base_url,
            "version": proc.version,
            "pid": proc.pid if proc.manage else None,
            "reason": None if proc.state is ProcessState.RUNNING else (proc.last_error or proc.state.value),
        }

    async def capabilities(self, checks: list[ProjectCheck] | None = None) -> dict[str, Any]:
        tools = await self._tools()
        checks = checks if checks is not None else check_projects(self.cfg.projects)
        server = self.opencode_server_info()
        if self.cfg.opencode_manage:
            oc_tool = tools.get("opencode")
            opencode_ok = self.opencode is not None and (oc_tool is None or oc_tool.installed)
        else:
            opencode_ok = server["state"] == ProcessState.RUNNING.value
        reason = self.unavailable_reason() or None
        caps: dict[str, Any] = {
            "opencode": opencode_ok,
            "claude_code": bool(tools.get("claude_code") and tools["claude_code"].installed),
            "codex": bool(tools.get("codex") and tools["codex"].installed),
            "tools": {name: info.to_dict() for name, info in tools.items()},
            "opencode_server": server,
            "sessions": {"available": reason is None, "reason": reason},
            "projects_invalid": [c.to_dict() for c in checks if not c.ok],
            "auth": self.auth.snapshot(),
            "env": self.env.snapshot(),
        }
        return caps

    async def _register_payload(self) -> dict[str, Any]:
        checks = check_projects(self.cfg.projects)
        await self._report_invalid_projects(checks)
        return {
            "node_id": self.cfg.node_id,
            "hostname": self.hostname,
            "version": __version__,
            "projects": [{"name": c.name, "directory": c.directory} for c in checks if c.ok],
            "capabilities": await self.capabilities(checks),
            "resources": {},  # filled in by the connection (sample_resources on data_dir's disk)
            "sessions": self.bridge.snapshot(),
            "last_acked_seq": 0,  # the connection puts the outbox's value here
        }
