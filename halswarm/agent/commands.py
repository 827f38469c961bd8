"""Command handlers of the agent (docs/protocol.md "Command results").

``AgentCommands.handle(command)`` always returns a :class:`CommandResult`: ``success`` with the
documented output, or ``failure`` with a one-line ``error``. The connection runs each command as
its own task and enforces ``timeout_ms`` (a ``timeout`` result), so handlers may take their time
(handover waits up to 60 s) without blocking anything else.

Types the agent does not implement yet (``env_check``, ``credential_push``, ...: later issues)
answer ``unsupported command X on this agent``. Those issues plug their handlers in with
:meth:`AgentCommands.add_handlers` (a handler returns a ``CommandResult`` or the success output).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from halswarm.agent.bridge import EventBridge
from halswarm.agent.handover import replace_session
from halswarm.agent.opencode_client import OpencodeError, OpencodeNotFound, split_model
from halswarm.agent.projects import check_directory
from halswarm.agent.session_state import KILLED, TERMINAL
from halswarm.protocol import PERMISSION_REPLY, Command, CommandResult, PermissionReply, ProtocolError
from halswarm.protocol.permission import NOT_PENDING

log = logging.getLogger(__name__)

# Go-era names the supervisor normally normalises already; accepted here too.
ALIASES = {
    "start": "create_session",
    "inject": "prompt_session",
    "prompt": "prompt_session",
    "kill": "kill_session",
    "restart": "restart_session",
    "status": "session_status",
}
MAX_IDLE_TIMEOUT = 600.0
# Time kept back from a command's timeout_ms for the kill + create after a handover's idle wait.
HANDOVER_RESERVE = 15.0


class CommandFailed(Exception):
    """A command cannot be done; the message is the one-line ``error`` of the result."""


class OpencodeAPI(Protocol):
    """The subset of :class:`halswarm.agent.opencode_client.OpencodeClient` the commands use."""

    async def create_session(
        self, directory: str, title: str | None = None, model: str | None = None
    ) -> dict[str, Any]: ...
    async def get_session(self, session_id: str, *, directory: str | None = None) -> dict[str, Any]: ...
    async def prompt_async(
        self,
        session_id: str,
        text: str,
        *,
        model: str | None = None,
        directory: str | None = None,
        agent: str | None = None,
    ) -> None: ...
    async def abort(self, session_id: str, *, directory: str | None = None) -> bool: ...
    async def delete_session(self, session_id: str, *, directory: str | None = None) -> bool: ...
    async def list_permissions(self, *, directory: str | None = None) -> list[dict[str, Any]]: ...
    async def reply_permission(
        self, request_id: str, reply: str, *, message: str | None = None, directory: str | None = None
    ) -> bool: ...


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class AgentCommands:
    """Session commands against opencode, with state from the :class:`EventBridge`."""

    def __init__(
        self,
        bridge: EventBridge,
        *,
        client: Callable[[], OpencodeAPI | None],
        unavailable_reason: Callable[[], str],
        projects: Callable[[], Mapping[str, str]],
        resume_message: str = "continue",
        handover_idle_timeout: float = 60.0,
        start_wait: float = 1.5,
        kill_wait: float = 2.0,
        reassert_delay: float = 1.0,
        poll: float = 0.05,
    ) -> None:
        self.bridge = bridge
        self._client = client
        self._unavailable_reason = unavailable_reason
        self._projects = projects
        self.resume_message = resume_message
        self.handover_idle_timeout = handover_idle_timeout
        self.start_wait = start_wait
        self.kill_wait = kill_wait
        self.reassert_delay = reassert_delay
        self.poll = poll
        self.accepting = True
        self._inflight: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, Callable[[Command], Awaitable[Any]]] = {
            "create_session": self.create_session,
            "prompt_session": self.prompt_session,
            "resume": self.resume,
            "kill_session": self.kill_session,
            "restart_session": self.restart_session,
            "handover": self.handover,
            "session_status": self.session_status,
            PERMISSION_REPLY: self.permission_reply,
        }

    # ------------------------------------------------------------------ entry point

    def add_handlers(self, handlers: Mapping[str, Callable[[Command], Awaitable[Any]]]) -> None:
        """Serve more command types (env, auth... from later issues). Built-in types cannot be replaced."""
        for name, fn in handlers.items():
            if name in self._handlers or name in ALIASES:
                raise ValueError(f"command {name} is already served")
            self._handlers[name] = fn

    async def handle(self, cmd: Command) -> CommandResult:
        ctype = ALIASES.get(cmd.type, cmd.type)
        handler = self._handlers.get(ctype)
        if handler is None:
            return CommandResult(cmd.command_id, "failure", error=f"unsupported command {cmd.type} on this agent")
        if not self.accepting:
            return CommandResult(cmd.command_id, "failure", error="agent is shutting down")
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        started = time.monotonic()
        try:
            output = await handler(cmd)
            if isinstance(output, CommandResult):
                return output
        except CommandFailed as exc:
            return self._failed(cmd, str(exc), started)
        except OpencodeError as exc:
            return self._failed(cmd, f"opencode: {exc}", started)
        except (ValueError, TypeError, KeyError) as exc:
            return self._failed(cmd, f"{type(exc).__name__}: {exc}", started)
        finally:
            if task is not None:
                self._inflight.discard(task)
        log.info("command %s (%s) succeeded in %.0f ms", cmd.command_id, ctype, (time.monotonic() - started) * 1000)
        return CommandResult(cmd.command_id, "success", output=output)

    def _failed(self, cmd: Command, message: str, started: float) -> CommandResult:
        message = _one_line(message)
        log.warning("command %s (%s) failed after %.0f ms: %s", cmd.command_id, cmd.type,
                    (time.monotonic() - started) * 1000, message)
        return CommandResult(cmd.command_id, "failure", error=message)

    async def drain(self, timeout: float) -> int:
        """Wait (at most ``timeout`` s) for running commands; returns how many are still running."""
        pending = {t for t in self._inflight if not t.done()}
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            return len(still)
        return 0

    # ------------------------------------------------------------------ helpers

    def _need_client(self) -> OpencodeAPI:
        client = self._client()
        if client is None:
            raise CommandFailed(f"opencode is not available on this node: {self._unavailable_reason()}")
        return client

    @staticmethod
    def _arg_str(cmd: Command, name: str, *, required: bool = False) -> str | None:
        value = cmd.args.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise CommandFailed(f"{cmd.type}: '{name}' is required")
            return None
        if not isinstance(value, str):
            raise CommandFailed(f"{cmd.type}: '{name}' must be a string")
        return value

    async def _session(self, cmd: Command) -> dict[str, Any]:
        sid = cmd.target.session_id or cmd.args.get("session_id")
        if not isinstance(sid, str) or not sid:
            raise CommandFailed(f"{cmd.type}: session_id is required (target.session_id or args.session_id)")
        obj = self.bridge.get(sid)
        if obj is None and not self.bridge.is_gone(sid):
            # Not seen on the event stream (yet): ask opencode directly.
            client = self._client()
            if client is not None:
                with contextlib.suppress(OpencodeNotFound):
                    await self.bridge.seed([await client.get_session(sid)], None)
                obj = self.bridge.get(sid)
        if obj is None:
            raise CommandFailed(f"session {sid} not found on this node")
        return obj

    def _project_directory(self, project: str) -> str:
        directory = self._projects().get(project)
        if directory is None:
            raise CommandFailed(f"project {project} is not configured on this node")
        problem = check_directory(directory)
        if problem is not None:
            raise CommandFailed(f"project {project}: {directory}: {problem}")
        return directory

    async def _await_turn_start(self, sid: str, turns_before: int) -> dict[str, Any]:
        """After a prompt was accepted: the session object once the turn is visible (or over)."""
        deadline = time.monotonic() + self.start_wait
        while True:
            obj = self.bridge.get(sid) or self.bridge.last_reported(sid)
            if obj is not None and (obj["status"] != "idle" or self.bridge.turn_ends(sid) > turns_before):
                return obj
            if time.monotonic() >= deadline:
                if obj is None:
                    raise CommandFailed(f"session {sid} disappeared right after it was prompted")
                # opencode accepted the prompt (204), so a turn is under way even if its first
                # event has not arrived yet.
                return {**obj, "status": "running"}
            await asyncio.sleep(self.poll)

    # ------------------------------------------------------------------ SessionOps (used by handover too)

    async def send_prompt(self, session: dict[str, Any], text: str) -> None:
        await self._need_client().prompt_async(session["id"], text, directory=session.get("directory"))

    async def create(
        self, project: str, directory: str, *, model: str | None, prompt: str | None, title: str | None = None
    ) -> dict[str, Any]:
        client = self._need_client()
        info = await client.create_session(directory, title=title, model=model)
        sid = info.get("id") if isinstance(info, dict) else None
        if not isinstance(sid, str):
            raise CommandFailed("opencode created a session without an id")
        await self.bridge.seed([info], None)
        obj: dict[str, Any] | None
        if prompt:
            before = self.bridge.turn_ends(sid)
            try:
                await client.prompt_async(sid, prompt, model=model, directory=directory)
            except OpencodeError as exc:
                raise CommandFailed(f"session {sid} was created but its first prompt failed: opencode: {exc}") from exc
            obj = await self._await_turn_start(sid, before)
        else:
            obj = self.bridge.get(sid)
            if obj is None:
                raise CommandFailed(f"session {sid} was created in {directory}, outside the project {project}")
        self.bridge.reassert_later(obj, self.reassert_delay)
        return obj

    async def kill(self, session: dict[str, Any]) -> dict[str, Any]:
        """Abort, then delete in opencode; returns the session object with status ``killed``."""
        client = self._need_client()
        sid, directory = session["id"], session.get("directory")
        self.bridge.mark_killing(sid)
        try:
            await client.abort(sid, directory=directory)
            try:
                await client.delete_session(sid, directory=directory)
            except OpencodeNotFound:
                pass  # already gone: what the command asked for holds
        except BaseException:
            self.bridge.unmark_killing(sid)
            raise
        deadline = time.monotonic() + self.kill_wait
        while self.bridge.get(sid) is not None:
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(self.poll)
        if self.bridge.get(sid) is not None:
            # session.deleted did not arrive (event stream down?): report the kill ourselves.
            await self.bridge.vanished(sid)
        final = self.bridge.last_reported(sid)
        if final is None or final.get("status") not in TERMINAL:
            final = dict(session)
        final["status"] = KILLED
        return final

    # ------------------------------------------------------------------ handlers

    async def create_session(self, cmd: Command) -> dict[str, Any]:
        project = self._arg_str(cmd, "project") or cmd.target.project
        if not project:
            raise CommandFailed("create_session: 'project' is required")
        directory = self._project_directory(project)
        model = self._arg_str(cmd, "model")
        if model is not None:
            try:
                split_model(model)
            except ValueError as exc:
                raise CommandFailed(str(exc)) from None
        return await self.create(
            project, directory, model=model, prompt=self._arg_str(cmd, "prompt"), title=self._arg_str(cmd, "title")
        )

    async def prompt_session(self, cmd: Command) -> dict[str, Any]:
        message = self._arg_str(cmd, "message", required=True)
        session = await self._session(cmd)
        assert message is not None
        await self.send_prompt(session, message)
        return {"session_id": session["id"], "accepted": True}

    async def resume(self, cmd: Command) -> dict[str, Any]:
        message = self._arg_str(cmd, "message") or self.resume_message
        session = await self._session(cmd)
        await self.send_prompt(session, message)
        return {"session_id": session["id"], "accepted": True}

    async def kill_session(self, cmd: Command) -> dict[str, Any]:
        return await self.kill(await self._session(cmd))

    async def session_status(self, cmd: Command) -> dict[str, Any]:
        session = await self._session(cmd)
        self.bridge.reassert_later(session, self.reassert_delay)
        return session

    async def permission_reply(self, cmd: Command) -> dict[str, Any]:
        """Answer a permission request of a session of ours, only one seen asked for that very session
        (on the event stream, or listed by opencode's ``GET /permission`` after a restart of the agent)."""
        try:
            answer = PermissionReply.from_args(cmd.args)
        except ProtocolError as exc:
            raise CommandFailed(exc.message) from None
        session = await self._session(cmd)
        sid, directory, rid = session["id"], session.get("directory"), answer.permission_id
        client = self._need_client()
        state = self.bridge.tracker.get(sid)
        if state is None or rid not in state.pending_permissions:
            listed = await client.list_permissions(directory=directory)
            if not any(isinstance(p, dict) and p.get("id") == rid and p.get("sessionID") == sid for p in listed):
                raise CommandFailed(f"{NOT_PENDING}: {rid} for session {sid} on this node")
        try:
            await client.reply_permission(rid, answer.reply, message=answer.message, directory=directory)
        except OpencodeNotFound:  # answered or withdrawn meanwhile (its permission.replied may be on the way)
            raise CommandFailed(f"{NOT_PENDING}: {rid} for session {sid} (opencode no longer has it)") from None
        return {"session_id": sid, "permission_id": rid, "reply": answer.reply, "accepted": True}

    async def restart_session(self, cmd: Command) -> dict[str, Any]:
        session = await self._session(cmd)
        self._need_client()
        return await replace_session(self, session, handover=False, poll=self.poll)

    async def handover(self, cmd: Command) -> dict[str, Any]:
        session = await self._session(cmd)
        self._need_client()
        return await replace_session(
            self, session, handover=True, idle_timeout=self._idle_timeout(cmd), poll=max(self.poll, 0.1)
        )

    def _idle_timeout(self, cmd: Command) -> float:
        """The configured wait (or ``args.idle_timeout_sec``), kept inside the command's own timeout."""
        wanted = cmd.args.get("idle_timeout_sec")
        if isinstance(wanted, int | float) and not isinstance(wanted, bool) and wanted >= 0:
            timeout = min(float(wanted), MAX_IDLE_TIMEOUT)
        else:
            timeout = self.handover_idle_timeout
        budget = cmd.timeout_ms / 1000 - HANDOVER_RESERVE
        return max(0.5, min(timeout, budget))
