"""Command dispatch: target resolution, per-command timeout, idempotency, audit.

Every command ends with a result (success, failure or timeout) and one audit row, whatever
happens to the node in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from halswarm.core.model import Node
from halswarm.protocol import Command, CommandResult, CommandTarget, encode
from halswarm.store.repos.audit import insert_audit
from halswarm.store.repos.commands import get_idempotent, insert_command, put_idempotent
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.redact import redact
from halswarm.supervisor.runtime.tracker import SessionTracker
from halswarm.supervisor.security import CLIENT_ACTOR

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL = 24 * 3600
# The agent gets a slightly shorter deadline than the caller, so its own `timeout` result (with whatever
# detail it has) can still arrive before the supervisor's deadline, which is the command's timeout itself.
AGENT_MARGIN_MAX = 0.5
AGENT_MARGIN_FRACTION = 0.1

CANONICAL = (
    "create_session", "prompt_session", "resume", "kill_session", "restart_session", "handover",
    "session_status", "env_check", "env_provision", "agentmd_show", "agentmd_diff", "agentmd_sync",
    "credential_push", "oauth_trigger", "auth_refresh", "permission_reply",
)
ALIASES = {
    "start": "create_session", "inject": "prompt_session", "prompt": "prompt_session",
    "kill": "kill_session", "restart": "restart_session", "status": "session_status",
    "push_credentials": "credential_push", "trigger_oauth": "oauth_trigger", "check_env": "env_check",
    "provision_env": "env_provision", "diff_agentmd": "agentmd_diff", "sync_agentmd": "agentmd_sync",
    "show_agentmd": "agentmd_show", "refresh_auth": "auth_refresh", "reply_permission": "permission_reply",
}
# Commands that take longer by nature (spec 7.2: handover waits up to 60 s for idle).
DEFAULT_TIMEOUTS = {"handover": 120.0, "restart_session": 120.0, "env_provision": 300.0, "oauth_trigger": 900.0}


class CommandError(Exception):
    """The command was not sent: unknown type, bad target. `code` maps to an HTTP error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def normalize_type(raw: str) -> str:
    t = raw.strip().lower().lstrip("/")
    t = ALIASES.get(t, t)
    if t not in CANONICAL:
        raise CommandError("BAD_REQUEST", f"unsupported command type {raw!r}")
    return t


@dataclass
class Result:
    command_id: str
    status: str
    output: Any = None
    error: str | None = None
    node_id: str | None = None
    type: str = ""
    duration_ms: int = 0
    replayed: bool = False

    def to_api(self) -> dict[str, Any]:
        out = {"command_id": self.command_id, "type": self.type, "status": self.status, "output": self.output,
               "error": self.error, "node_id": self.node_id, "duration_ms": self.duration_ms}
        if self.replayed:
            out["idempotent_replay"] = True
        return out


@dataclass
class _Pending:
    node_id: str
    future: asyncio.Future[CommandResult]
    created: float = field(default_factory=time.monotonic)


class Dispatcher:
    def __init__(self, hub: Any, nodes: dict[str, Node], tracker: SessionTracker, writer: Writer, metrics: Metrics,
                 *, default_timeout: float = 30.0) -> None:
        self.hub = hub
        self.nodes = nodes
        self.tracker = tracker
        self.writer = writer
        self.metrics = metrics
        self.default_timeout = default_timeout
        self._pending: dict[str, _Pending] = {}
        self._inflight: dict[str, asyncio.Future[Result]] = {}
        self.running = True

    # ----- target resolution -----

    def resolve(self, ctype: str, target: CommandTarget) -> str:
        """Return the node id to send to: session, then project, then node (SPEC 5)."""
        if target.session_id:
            s = self.tracker.get(target.session_id)
            if s is None:
                raise CommandError("NOT_FOUND", f"session {target.session_id} not found")
            return self._online(s.node_id, f"session {s.id} is on node {s.node_id}")
        if target.project:
            if target.node_id:
                node = self.nodes.get(target.node_id)
                if node is None or target.project not in node.project_names:
                    raise CommandError("NOT_FOUND", f"node {target.node_id} has no project {target.project}")
                return self._online(target.node_id, f"project {target.project}")
            candidates = sorted(
                (n for n in self.nodes.values() if target.project in n.project_names and n.status == "online"),
                key=lambda n: (self._busy(n.id), n.id),
            )
            if not candidates:
                known = any(target.project in n.project_names for n in self.nodes.values())
                why = "no online node has" if known else "no node has"
                raise CommandError("DISPATCH_ERROR" if known else "NOT_FOUND", f"{why} project {target.project}")
            return candidates[0].id
        if target.node_id:
            if target.node_id not in self.nodes:
                raise CommandError("NOT_FOUND", f"node {target.node_id} not found")
            return self._online(target.node_id, f"node {target.node_id}")
        raise CommandError("BAD_REQUEST", "target needs a session_id, project or node_id")

    def _online(self, node_id: str, what: str) -> str:
        node = self.nodes.get(node_id)
        if node is None or node.status != "online":
            raise CommandError("DISPATCH_ERROR", f"{what}: node {node_id} is offline")
        return node_id

    def _busy(self, node_id: str) -> int:
        return sum(1 for s in self.tracker.live_on(node_id) if s.status == "running")

    # ----- dispatch -----

    async def dispatch(self, ctype: str, target: CommandTarget, args: dict[str, Any] | None = None, *,
                       timeout: float | None = None, actor: str = "api", ip: str | None = None,
                       idempotency_key: str | None = None, command_id: str | None = None) -> Result:
        """Send one command and wait for its result. Raises CommandError only when nothing was sent."""
        ctype = normalize_type(ctype)
        args = args or {}
        timeout = timeout if timeout and timeout > 0 else DEFAULT_TIMEOUTS.get(ctype, self.default_timeout)
        key_hash = None
        if idempotency_key:
            payload = json.dumps({"type": ctype, "target": target.to_payload(), "args": args}, sort_keys=True,
                                 default=str)
            key_hash = hashlib.sha256(f"{idempotency_key}:{payload}".encode()).hexdigest()
            cached = await self.writer.run(lambda c: get_idempotent(c, key_hash, time.time()))
            if cached is not None:
                res = Result(**{k: cached.get(k) for k in ("command_id", "status", "output", "error", "node_id",
                                                           "type", "duration_ms")})
                res.replayed = True
                await self._audit_replay(actor, ctype, target, args, res, ip)
                return res
            if key_hash in self._inflight:
                joined = await asyncio.shield(self._inflight[key_hash])
                await self._audit_replay(actor, ctype, target, args, joined, ip)
                return joined
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        if key_hash:
            self._inflight[key_hash] = fut
        try:
            res = await self._run(ctype, target, args, timeout, actor, ip, idempotency_key,
                                  command_id or str(uuid.uuid4()))
            if key_hash and res.status == "success":
                # Only successes are replayed: a retry after a failure must really run again.
                await self.writer.run(lambda c: put_idempotent(
                    c, key_hash, res.command_id, res.to_api() | {"node_id": res.node_id},
                    time.time() + IDEMPOTENCY_TTL))
            fut.set_result(res)
            return res
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: joiners re-raise it, nobody else must
            raise
        finally:
            if key_hash:
                self._inflight.pop(key_hash, None)

    async def _run(self, ctype: str, target: CommandTarget, args: dict[str, Any], timeout: float, actor: str,
                   ip: str | None, idempotency_key: str | None, command_id: str) -> Result:
        started = time.monotonic()
        target_desc = target.session_id or target.project or target.node_id or "unknown"
        try:
            node_id = self.resolve(ctype, target)
        except CommandError as exc:
            self.metrics.commands_total.labels(ctype, "rejected").inc()
            await self._audit(actor, ctype, target_desc, args, "rejected", exc.message, started, ip, command_id)
            raise
        if ctype == "handover" and target.session_id:
            # The only way a session changes owner: the node this handover goes to may report it next.
            self.tracker.expect_handover(target.session_id, node_id)
        deadline = started + timeout
        agent_timeout = timeout - min(AGENT_MARGIN_MAX, timeout * AGENT_MARGIN_FRACTION)
        cmd = Command(command_id, ctype, target, args, timeout_ms=max(1, int(agent_timeout * 1000)))
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = _Pending(node_id, fut)
        record = {"command_id": command_id, "type": ctype, "target": target.to_payload(), "args": redact(args),
                  "node_id": node_id, "status": "pending", "actor": actor, "idempotency_key": idempotency_key,
                  "created_at": time.time()}
        await self.writer.run(lambda c: insert_command(c, record))
        try:
            sent = await self.hub.send_command(node_id, encode(cmd, request_id=command_id))
            if not sent:
                result = CommandResult(command_id, "failure", None, f"node {node_id} disconnected before send")
            else:
                try:
                    # The caller's deadline is the command's timeout, counted from the request (SPEC 5).
                    result = await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    result = CommandResult(command_id, "timeout", None, f"no result within {timeout:g} s")
        finally:
            self._pending.pop(command_id, None)
        duration = time.monotonic() - started
        self.metrics.commands_total.labels(ctype, result.status).inc()
        self.metrics.command_duration.labels(ctype).observe(duration)
        if result.status != "success":
            self.metrics.errors_total.labels("dispatcher", result.status).inc()
        res = Result(command_id, result.status, result.output, result.error, node_id, ctype, int(duration * 1000))
        record |= {"status": res.status, "output": redact(res.output), "error": res.error, "finished_at": time.time()}

        row = _audit_row(actor, ctype, f"{target_desc}@{node_id}", args, res.status, res.error, res.duration_ms, ip,
                         command_id)  # built here, in the request's context (client actor), not in the writer

        def job(c: Any) -> None:
            insert_command(c, record)
            insert_audit(c, row)

        await self.writer.run(job)
        return res

    async def _audit_replay(self, actor: str, ctype: str, target: CommandTarget, args: dict[str, Any],
                            res: Result, ip: str | None) -> None:
        """An idempotent replay runs nothing, but it is still an operator action: audit it as such."""
        target_desc = target.session_id or target.project or target.node_id or "unknown"
        if res.node_id:
            target_desc += f"@{res.node_id}"
        row = _audit_row(actor, ctype, target_desc, args, "replayed", f"idempotent replay of command {res.command_id}"
                         f" ({res.status})", 0, ip, res.command_id)
        await self.writer.run(lambda c: insert_audit(c, row))

    async def _audit(self, actor: str, action: str, target: str, args: dict[str, Any], result: str,
                     error: str | None, started: float, ip: str | None, command_id: str | None) -> None:
        row = _audit_row(actor, action, target, args, result, error, int((time.monotonic() - started) * 1000), ip,
                         command_id)
        await self.writer.run(lambda c: insert_audit(c, row))

    # ----- results from the hub -----

    def on_result(self, node_id: str, result: CommandResult) -> None:
        p = self._pending.get(result.command_id)
        if p is None:
            log.warning("late or unknown command_result %s from %s", result.command_id, node_id)
            return
        if p.node_id != node_id:
            log.warning("command_result %s from %s, but it was sent to %s", result.command_id, node_id, p.node_id)
            return
        if not p.future.done():
            p.future.set_result(result)

    def node_gone(self, node_id: str) -> None:
        """Fail fast the commands waiting on a node that just went offline."""
        for cid, p in list(self._pending.items()):
            if p.node_id == node_id and not p.future.done():
                p.future.set_result(CommandResult(cid, "failure", None, f"node {node_id} went offline"))


def _audit_row(actor: str, action: str, target: str, args: dict[str, Any], result: str, error: str | None,
               duration_ms: int, ip: str | None, command_id: str | None) -> dict[str, Any]:
    return {"timestamp": time.time(), "actor": actor, "action": action, "target": target, "args": redact(args),
            "result": result, "error": error, "duration_ms": duration_ms, "ip_address": ip,
            "command_id": command_id, "client_actor": CLIENT_ACTOR.get()}
