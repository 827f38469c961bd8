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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from halswarm.core.forwarding import FORWARD, route
from halswarm.core.model import Node
from halswarm.protocol import Command, CommandResult, CommandTarget, ProtocolError, encode
from halswarm.store.repos.audit import insert_audit
from halswarm.store.repos.commands import get_idempotent, insert_command, put_idempotent
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.redact import redact
from halswarm.supervisor.runtime.tracker import SessionTracker
from halswarm.supervisor.security import CLIENT_ACTOR

if TYPE_CHECKING:
    from halswarm.supervisor.runtime.forwarding import Forwarder

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL = 24 * 3600
# The agent gets a slightly shorter deadline than the caller, so its own `timeout` result (with whatever
# detail it has) can still arrive before the supervisor's deadline, which is the command's timeout itself.
AGENT_MARGIN_MAX = 0.5
AGENT_MARGIN_FRACTION = 0.1
FORWARD_HOLDER_GRACE = 1.0  # seconds the holder of a forwarded command waits past its deadline

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
        # Several supervisors on one PostgreSQL (issue 21): nodes another supervisor holds (a live lease)
        # are reached by forwarding the command to it. None on SQLite: every node is local or offline.
        self.forwarder: Forwarder | None = None
        self.owner: str | None = None  # this supervisor's id in leases
        # node -> (owner, its project names as stored), for every live lease
        self.lease_lookup: Callable[[], Awaitable[dict[str, tuple[str, frozenset[str]]]]] | None = None
        self.held_elsewhere: dict[str, str] = {}  # node -> owner, as of the last lookup
        self.remote_projects: dict[str, frozenset[str]] = {}  # node held elsewhere -> its projects

    def enable_forwarding(self, forwarder: Forwarder, owner: str,
                          lease_lookup: Callable[[], Awaitable[dict[str, tuple[str, frozenset[str]]]]]) -> None:
        self.forwarder, self.owner, self.lease_lookup = forwarder, owner, lease_lookup
        forwarder.run_row = self.run_forwarded

    async def refresh_leases(self) -> None:
        """Which nodes other supervisors hold now (one read), before a target is resolved."""
        if self.lease_lookup is None:
            return
        try:
            live = await self.lease_lookup()
        except Exception as exc:  # the database is away: the last view stands (a forward then waits for it)
            log.warning("command dispatch: cannot read node leases (%s); using the last view", exc)
            return
        self.held_elsewhere = {n: o for n, (o, _) in live.items() if o != self.owner}
        self.remote_projects = {n: p for n, (o, p) in live.items() if o != self.owner}

    def route_of(self, node_id: str) -> str:
        """Local, forward or offline for a resolved node (`core.forwarding.route`)."""
        return route(linked_here=node_id in self.hub.links, lease_owner=self.held_elsewhere.get(node_id),
                     me=self.owner if self.forwarder is not None else None)

    # ----- target resolution -----

    def resolve(self, ctype: str, target: CommandTarget, *, local_only: bool = False) -> str:
        """Return the node id to send to: session, then project, then node (SPEC 5). A node another
        supervisor holds counts as reachable (its commands are forwarded), unless `local_only`."""
        elsewhere: Mapping[str, str] = {} if local_only else self.held_elsewhere
        if target.session_id:
            s = self.tracker.get(target.session_id)
            if s is None:
                raise CommandError("NOT_FOUND", f"session {target.session_id} not found")
            return self._online(s.node_id, f"session {s.id} is on node {s.node_id}", elsewhere)
        if target.project:
            project = target.project
            if target.node_id:
                if not self._has_project(target.node_id, project, elsewhere):
                    raise CommandError("NOT_FOUND", f"node {target.node_id} has no project {project}")
                return self._online(target.node_id, f"project {project}", elsewhere)
            having = {n.id for n in self.nodes.values() if project in n.project_names}
            having |= {n for n in elsewhere if self._has_project(n, project, elsewhere)}
            candidates = sorted((n for n in having if self._reachable(n, elsewhere)),
                                key=lambda n: (self._busy(n), n))
            if not candidates:
                why = "no online node has" if having else "no node has"
                raise CommandError("DISPATCH_ERROR" if having else "NOT_FOUND", f"{why} project {project}")
            return candidates[0]
        if target.node_id:
            if target.node_id not in self.nodes and target.node_id not in elsewhere:
                raise CommandError("NOT_FOUND", f"node {target.node_id} not found")
            return self._online(target.node_id, f"node {target.node_id}", elsewhere)
        raise CommandError("BAD_REQUEST", "target needs a session_id, project or node_id")

    def _online(self, node_id: str, what: str, elsewhere: Mapping[str, str]) -> str:
        if not self._reachable(node_id, elsewhere):
            raise CommandError("DISPATCH_ERROR", f"{what}: node {node_id} is offline")
        return node_id

    def _reachable(self, node_id: str, elsewhere: Mapping[str, str]) -> bool:
        """Online here, or held by another supervisor that a command can be forwarded to."""
        node = self.nodes.get(node_id)
        return (node is not None and node.status == "online") or node_id in elsewhere

    def _has_project(self, node_id: str, project: str, elsewhere: Mapping[str, str]) -> bool:
        """The node's projects as its holder stored them when another supervisor holds it, else as known here."""
        if node_id in elsewhere:
            return project in self.remote_projects.get(node_id, frozenset())
        node = self.nodes.get(node_id)
        return node is not None and project in node.project_names

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
            await self.refresh_leases()
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
        record = {"command_id": command_id, "type": ctype, "target": target.to_payload(), "args": redact(args),
                  "node_id": node_id, "status": "pending", "actor": actor, "idempotency_key": idempotency_key,
                  "created_at": time.time()}
        await self.writer.run(lambda c: insert_command(c, record))
        if self.forwarder is not None and self.route_of(node_id) == FORWARD:
            result = await self._forward(cmd, node_id, deadline, timeout, actor)
        else:
            result = await self._send_and_wait(cmd, node_id, deadline, timeout)
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

    async def _send_and_wait(self, cmd: Command, node_id: str, deadline: float, timeout: float) -> CommandResult:
        """Send `cmd` to the agent connected here and wait for its result until `deadline` (monotonic)."""
        command_id = cmd.command_id
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = _Pending(node_id, fut)
        try:
            sent = await self.hub.send_command(node_id, encode(cmd, request_id=command_id))
            if not sent:
                return CommandResult(command_id, "failure", None, f"node {node_id} disconnected before send")
            try:
                # The caller's deadline is the command's timeout, counted from the request (SPEC 5).
                return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return CommandResult(command_id, "timeout", None, f"no result within {timeout:g} s")
        finally:
            self._pending.pop(command_id, None)

    async def _forward(self, cmd: Command, node_id: str, deadline: float, timeout: float,
                       actor: str) -> CommandResult:
        """The node's agent is connected to another supervisor: through the `command_forwards` table, with
        the same deadline and the same timeout answer as a local command."""
        assert self.forwarder is not None and self.owner is not None
        row = {"id": cmd.command_id, "node_id": node_id, "type": cmd.type,
               "target": json.dumps(cmd.target.to_payload()), "args": json.dumps(cmd.args, default=str),
               "timeout_ms": cmd.timeout_ms, "requested_by": self.owner, "actor": actor}
        try:
            result = await self.forwarder.forward(row, max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # not queued (the database refused): nothing was sent
            log.warning("command %s: could not forward it to node %s's supervisor: %s", cmd.command_id, node_id, exc)
            return CommandResult(cmd.command_id, "failure", None,
                                 f"node {node_id} disconnected before send (could not forward: {exc})")
        if result is None:
            return CommandResult(cmd.command_id, "timeout", None, f"no result within {timeout:g} s")
        return result

    async def run_forwarded(self, row: dict[str, Any]) -> CommandResult:
        """Run a command another supervisor forwarded for a node connected here. The row is data: it is
        parsed and validated exactly as an API call's command (the protocol's shape, the allow-list of
        types, the target resolved here to that very node), then sent with the time it has left."""
        cid = str(row.get("id") or "")
        node_id = str(row.get("node_id") or "")
        try:
            target = json.loads(row.get("target") or "{}")
            args = json.loads(row.get("args") or "{}")
            cmd = Command.from_payload({"command_id": cid, "type": row.get("type"), "target": target, "args": args})
            ctype = normalize_type(cmd.type)
            pinned = cmd.target if cmd.target.session_id else CommandTarget(node_id=node_id,
                                                                            project=cmd.target.project)
            if node_id not in self.hub.links:
                raise CommandError("DISPATCH_ERROR", f"node {node_id} is not connected here")
            if self.resolve(ctype, pinned, local_only=True) != node_id:
                raise CommandError("DISPATCH_ERROR", f"the target is not on node {node_id}")
        except (ValueError, ProtocolError, CommandError) as exc:
            why = exc.message if isinstance(exc, CommandError) else str(exc)
            log.warning("forwarded command %s refused: %s", cid, why)
            return CommandResult(cid, "failure", None, f"forwarded command refused: {why}")
        remaining = float(row.get("remaining") or 0.0)
        agent_timeout = min(remaining - min(AGENT_MARGIN_MAX, remaining * AGENT_MARGIN_FRACTION),
                            int(row.get("timeout_ms") or 0) / 1000)
        if ctype == "handover" and cmd.target.session_id:
            self.tracker.expect_handover(cmd.target.session_id, node_id)
        send = Command(cid, ctype, cmd.target, cmd.args, timeout_ms=max(1, int(agent_timeout * 1000)))
        # The asker answers the timeout itself, in the words of a local command, at the same deadline: the
        # holder waits a little longer, so its own timeout (written nowhere by then) never comes first.
        return await self._send_and_wait(send, node_id, time.monotonic() + remaining + FORWARD_HOLDER_GRACE,
                                         remaining)

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
