"""Auth routes of the HTTP API (SPEC 6) and the credential drift watcher.

- ``GET /api/v1/auth/drift[?all=true]``: nodes whose reported ``credential_version`` differs from the
  supervisor's ``credentials.version`` (Go shape: ``[{node_id, credential_sync, credential_version}]``).
- ``POST /api/v1/oauth/trigger`` {node_id, tool, provider?, method?}: the OAuthResult
  ``{status: challenge|success|failure|manual_required, challenge_url?, user_code?, reason?,
  manual_guidance?}``. Tools without a remote flow (claude_code) get the runbook's ``manual_required``
  answer at once, and the agent is told (fire-and-forget ``oauth_trigger``) so it reports the tool as
  ``manual_required`` until a probe shows it authenticated; the others run the agent's device flow,
  which answers as soon as the URL and code are known.
- ``POST /api/v1/commands/credentials/push`` {target_node?, env_vars?, version?, idempotency_key?}
  (Go body): with ``env_vars`` it pushes them to ``target_node``; without, it pushes the supervisor's
  configured ``credentials`` (``defaults.env`` + ``agents.<node>.env``, ``credentials.version``), to
  ``target_node`` or, when none is given, to every online node that drifts.

The watcher recomputes drift when a node's ``credential_sync`` arrives (the hub calls ``on_sync``) and,
as a fallback, every ``WATCH_INTERVAL`` s. It emits ``credential.drift_detected`` / ``credential.in_sync``
when a node's state changes and, when the supervisor has credentials configured for a drifting node
(``credentials.auto_push``, default true), pushes them (at most once per ``cooldown`` per node).
Values never reach logs, events, audit rows or responses: the dispatcher stores ``redact(args)``,
and answers name variables only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field

from halswarm.core.auth_capability import CAPABILITIES, FAILURE, SUCCESS, manual_required
from halswarm.core.roles import Role
from halswarm.protocol import CommandTarget
from halswarm.supervisor.apikit.deps import actor_of, role_dependencies
from halswarm.supervisor.apikit.envelope import ApiError, ok
from halswarm.supervisor.runtime.dispatcher import CommandError, Result

if TYPE_CHECKING:
    from halswarm.core.model import Node
    from halswarm.supervisor.app import Supervisor

log = logging.getLogger(__name__)

IN_SYNC, DRIFT, UNKNOWN = "in_sync", "drift_detected", "unknown"
OAUTH_TIMEOUT = 90.0
PUSH_TIMEOUT = 60.0
WATCH_INTERVAL = 2.0
AUTO_PUSH_COOLDOWN = 60.0


# ----- the supervisor's credentials section -----

def credentials_section(sup: Supervisor) -> Mapping[str, Any]:
    raw = sup.config.raw.get("credentials")
    return raw if isinstance(raw, Mapping) else {}


def expected_version(sup: Supervisor) -> int | None:
    v = credentials_section(sup).get("version")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def configured_env(sup: Supervisor, node_id: str) -> dict[str, str]:
    """``defaults.env`` overlaid with ``agents.<node_id>.env`` (non-empty string values only)."""
    section = credentials_section(sup)
    env: dict[str, str] = {}
    defaults = section.get("defaults")
    agents = section.get("agents")
    for part in (defaults, agents.get(node_id) if isinstance(agents, Mapping) else None):
        e = part.get("env") if isinstance(part, Mapping) else None
        if isinstance(e, Mapping):
            env.update({str(k): v for k, v in e.items() if isinstance(v, str) and v})
    return env


def sync_state(node: Node, expected: int | None) -> str:
    if node.credential_version is None or expected is None:
        return UNKNOWN
    return IN_SYNC if node.credential_version == expected else DRIFT


def drift_row(node: Node, expected: int | None) -> dict[str, Any]:
    return {"node_id": node.id, "credential_sync": sync_state(node, expected),
            "credential_version": node.credential_version, "expected_version": expected, "status": node.status}


# ----- request bodies -----

class OAuthBody(BaseModel):
    node_id: str = Field(min_length=1)
    tool: str = Field(min_length=1)
    provider: str | None = None
    method: str | None = None


class PushBody(BaseModel):
    target_node: str | None = None
    node_id: str | None = None  # alias
    env_vars: dict[str, str] | None = Field(default=None, repr=False)
    version: int | None = Field(default=None, ge=0, le=2**63 - 1)  # SQLite INTEGER
    idempotency_key: str | None = None


# ----- pushing -----

async def push_to_node(sup: Supervisor, node_id: str, env: dict[str, str], version: int, *, actor: str,
                       ip: str | None = None, idempotency_key: str | None = None) -> Result:
    """Dispatch ``credential_push`` and record a ``credential.pushed`` event (names only)."""
    res = await sup.dispatcher.dispatch("credential_push", CommandTarget(node_id=node_id),
                                        {"env_vars": env, "version": version}, actor=actor, ip=ip,
                                        idempotency_key=idempotency_key, timeout=PUSH_TIMEOUT)
    await sup.ingestor.emit_stored(node_id, "credential.pushed", {
        "version": version, "names": sorted(env), "status": res.status, "error": res.error, "actor": actor,
        "command_id": res.command_id,
    })
    return res


def _push_answer(sup: Supervisor, res: Result) -> dict[str, Any]:
    node = sup.nodes.get(res.node_id or "")
    data = res.to_api()
    if node is not None:
        data["credential_sync"] = sync_state(node, expected_version(sup))
        data["credential_version"] = node.credential_version
    return data


def _validate_env(env: Mapping[str, str]) -> None:
    if not env:
        raise ApiError("VALIDATION_ERROR", "env_vars must not be empty")
    for k, v in env.items():
        if not k or not isinstance(v, str) or not v:
            raise ApiError("VALIDATION_ERROR", f"env_vars.{k or '<empty>'}: value must be a non-empty string")


# ----- the watcher -----

class DriftWatcher:
    def __init__(self, sup: Supervisor, interval: float | None = None, cooldown: float = AUTO_PUSH_COOLDOWN) -> None:
        self.sup = sup
        self.interval = interval if interval is not None else WATCH_INTERVAL
        self.cooldown = cooldown
        self.last: dict[str, str] = {}
        self._last_push: dict[str, float] = {}
        self._inflight: set[str] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="auth-drift-watcher")
        hub = getattr(self.sup, "hub", None)
        if hub is not None:
            hub.on_credential_sync = self.on_sync

    def on_sync(self, node_id: str) -> None:
        """A ``credential_sync`` of ``node_id`` arrived: recompute its drift now, not at the next poll."""
        try:
            self.check(node_id)
        except Exception:
            log.exception("credential drift check of %s failed", node_id)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for t in list(self._bg):
            t.cancel()

    @property
    def auto_push(self) -> bool:
        return credentials_section(self.sup).get("auto_push", True) is not False

    async def _run(self) -> None:
        while getattr(getattr(self.sup, "dispatcher", None), "running", True):
            try:
                self.check()
            except Exception:
                log.exception("credential drift check failed")
            await asyncio.sleep(self.interval)

    def check(self, node_id: str | None = None) -> None:
        expected = expected_version(self.sup)
        for node in list(self.sup.nodes.values()):
            if node.status != "online" or (node_id is not None and node.id != node_id):
                continue
            state = sync_state(node, expected)
            previous = self.last.get(node.id)
            self.last[node.id] = state
            if state != previous and state != UNKNOWN and not (previous is None and state == IN_SYNC):
                self.sup.ingestor.emit(node.id, f"credential.{state}", {
                    "credential_version": node.credential_version, "expected_version": expected})
                log.info("credential sync of node %s: %s (reported %s, expected %s)", node.id, state,
                         node.credential_version, expected)
            if state == DRIFT and expected is not None and self.auto_push:
                self._maybe_push(node.id, expected)

    def _maybe_push(self, node_id: str, version: int) -> None:
        if node_id in self._inflight or time.monotonic() - self._last_push.get(node_id, -1e9) < self.cooldown:
            return
        env = configured_env(self.sup, node_id)
        if not env:
            return
        self._inflight.add(node_id)
        self._last_push[node_id] = time.monotonic()

        async def run() -> None:
            try:
                res = await push_to_node(self.sup, node_id, env, version, actor="supervisor:auto-push")
                log.info("auto-push of credentials version %d to %s: %s", version, node_id, res.status)
            except CommandError as exc:
                log.warning("auto-push of credentials to %s not sent: %s", node_id, exc.message)
            finally:
                self._inflight.discard(node_id)

        t = asyncio.get_running_loop().create_task(run())
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)


# ----- routes -----

def include_auth_routes(app: FastAPI, sup: Supervisor) -> None:
    """Add the auth routes to ``app`` and start the drift watcher (idempotent)."""
    if getattr(app.state, "auth_routes_included", False):
        return
    app.state.auth_routes_included = True

    need = role_dependencies()

    def node_or_404(node_id: str) -> Node:
        return sup.node(node_id)

    @app.get("/api/v1/auth/drift", dependencies=need[Role.viewer], tags=["auth"])
    async def auth_drift(include_all: bool = Query(False, alias="all")) -> Any:
        expected = expected_version(sup)
        rows = [drift_row(n, expected) for n in sorted(sup.nodes.values(), key=lambda n: n.id)]
        if not include_all:
            rows = [r for r in rows if r["credential_sync"] == DRIFT]
        return ok(rows, meta={"total": len(rows), "expected_version": expected})

    @app.post("/api/v1/oauth/trigger", dependencies=need[Role.admin], tags=["auth"])
    async def oauth_trigger(body: OAuthBody, request: Request) -> Any:
        node = node_or_404(body.node_id)
        cap = CAPABILITIES.get(body.tool)
        actor, ip = actor_of(request)
        if cap is None or not cap.remote_oauth:
            answer = manual_required(body.tool, node.id)
            await sup.ingestor.emit_stored(node.id, "auth.oauth_triggered", {
                "tool": body.tool, "status": answer["status"], "actor": actor})
            if cap is not None:
                _spawn(_tell_agent_manual(sup, node.id, body.tool, actor, ip))
            return ok(answer)
        args: dict[str, Any] = {"tool": body.tool}
        if body.provider:
            args["provider"] = body.provider
        if body.method:
            args["method"] = body.method
        try:
            res = await sup.dispatcher.dispatch("oauth_trigger", CommandTarget(node_id=node.id), args, actor=actor,
                                                ip=ip, timeout=OAUTH_TIMEOUT)
        except CommandError as exc:
            raise ApiError(exc.code, exc.message) from None
        answer = oauth_result(res, body.tool)
        await sup.ingestor.emit_stored(node.id, "auth.oauth_triggered", {
            "tool": body.tool, "status": answer.get("status"), "challenge_url": answer.get("challenge_url"),
            "reason": answer.get("reason"), "actor": actor, "command_id": res.command_id})
        return ok(answer)

    @app.post("/api/v1/commands/credentials/push", dependencies=need[Role.admin], tags=["auth"])
    async def credentials_push(body: PushBody, request: Request) -> Any:
        actor, ip = actor_of(request)
        target = body.target_node or body.node_id
        version = body.version if body.version is not None else expected_version(sup)
        if body.env_vars is not None:
            if not target:
                raise ApiError("VALIDATION_ERROR", "target_node is required with env_vars")
            _validate_env(body.env_vars)
            env, targets = dict(body.env_vars), [target]
        elif target:
            node_or_404(target)
            env, targets = configured_env(sup, target), [target]
            if not env:
                raise ApiError("VALIDATION_ERROR", f"no env_vars given and no credentials configured for {target}")
        else:
            expected = expected_version(sup)
            targets = [n.id for n in sorted(sup.nodes.values(), key=lambda n: n.id)
                       if n.status == "online" and sync_state(n, expected) != IN_SYNC and configured_env(sup, n.id)]
            env = {}
        if version is None:
            version = 0
        if target:
            node_or_404(target)
            try:
                res = await push_to_node(sup, target, env, version, actor=actor, ip=ip,
                                         idempotency_key=body.idempotency_key)
            except CommandError as exc:
                raise ApiError(exc.code, exc.message) from None
            if res.status == "timeout":
                raise ApiError("TIMEOUT", f"credential_push: {res.error or 'timed out'} (command {res.command_id})")
            if res.status != SUCCESS:
                raise ApiError("DISPATCH_ERROR", f"credential_push failed on {target}: {res.error or 'no detail'} "
                                                 f"(command {res.command_id})")
            return ok(_push_answer(sup, res))
        results = []
        for node_id in targets:
            try:
                res = await push_to_node(sup, node_id, configured_env(sup, node_id), version, actor=actor, ip=ip)
                results.append(_push_answer(sup, res))
            except CommandError as exc:
                results.append({"node_id": node_id, "status": FAILURE, "error": exc.message})
        failed = sum(1 for r in results if r.get("status") != SUCCESS)
        return ok(results, meta={"total": len(results), "pushed": len(results) - failed, "failed": failed})

    try:
        watcher = DriftWatcher(sup)
        watcher.start()
        app.state.auth_drift_watcher = watcher
    except RuntimeError:  # no running loop (app built outside the supervisor): no watcher
        log.debug("no event loop: credential drift watcher not started")


_BG: set[asyncio.Task[Any]] = set()


def _spawn(coro: Any) -> None:
    t = asyncio.get_running_loop().create_task(coro)
    _BG.add(t)
    t.add_done_callback(_BG.discard)


async def _tell_agent_manual(sup: Supervisor, node_id: str, tool: str, actor: str, ip: str | None) -> None:
    """Fire-and-forget ``oauth_trigger`` for a tool without a remote flow: the agent then reports it as
    ``manual_required`` (while logged out). The operator already has the answer; failures are only logged."""
    try:
        res = await sup.dispatcher.dispatch("oauth_trigger", CommandTarget(node_id=node_id), {"tool": tool},
                                            actor=actor, ip=ip, timeout=OAUTH_TIMEOUT)
        if res.status != SUCCESS:
            log.info("telling %s that %s needs a manual login: %s %s", node_id, tool, res.status, res.error or "")
    except CommandError as exc:
        log.info("telling %s that %s needs a manual login: not sent: %s", node_id, tool, exc.message)
    except Exception:
        log.exception("telling %s that %s needs a manual login failed", node_id, tool)


def oauth_result(res: Result, tool: str) -> dict[str, Any]:
    """The OAuthResult from an ``oauth_trigger`` command result (status defaults to the command's)."""
    out = res.output
    if isinstance(out, Mapping) and isinstance(out.get("status"), str):
        answer = dict(out)
    elif res.status == SUCCESS:
        answer = {"status": SUCCESS}
    else:
        answer = {"status": FAILURE, "reason": res.error or res.status}
    if res.status == "timeout":
        answer = {"status": FAILURE, "reason": res.error or "timed out"}
    answer.setdefault("tool", tool)
    answer["node_id"] = res.node_id
    answer["command_id"] = res.command_id
    return answer
