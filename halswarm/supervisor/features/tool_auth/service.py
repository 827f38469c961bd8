"""Drift report, credential push and OAuth trigger of the tools on the agents.

- Drift: nodes whose reported ``credential_version`` differs from ``credentials.version``.
- Push: ``credential_push`` of given or configured env to one node, or of the configured env to every
  online node not in sync; each push is recorded as a ``credential.pushed`` event naming variables only.
- OAuth: tools without a remote flow (claude_code) get the runbook's ``manual_required`` answer at once
  and the agent is told in the background (so it reports the tool as ``manual_required`` until a probe
  shows it logged in); the others run the agent's device flow, answered as soon as the URL and code are
  known.

Values never reach logs, events, audit rows or answers: the dispatcher stores ``redact(args)`` and the
answers name variables only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from halswarm.core.auth_capability import CAPABILITIES, FAILURE, SUCCESS, manual_required
from halswarm.core.credential_sync import DRIFT, IN_SYNC, credential_sync
from halswarm.core.model import Node
from halswarm.protocol import CommandTarget
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.tool_auth.settings import CredentialsSettings
from halswarm.supervisor.runtime.commands import CommandRunner
from halswarm.supervisor.runtime.dispatcher import CommandError, Result
from halswarm.supervisor.runtime.ingest import Ingestor

log = logging.getLogger(__name__)

OAUTH_TIMEOUT = 90.0
PUSH_TIMEOUT = 60.0


def drift_row(node: Node, expected: int | None) -> dict[str, Any]:
    return {"node_id": node.id, "credential_sync": credential_sync(node.credential_version, expected),
            "credential_version": node.credential_version, "expected_version": expected, "status": node.status}


def validate_env(env: Mapping[str, str]) -> None:
    if not env:
        raise ApiError("VALIDATION_ERROR", "env_vars must not be empty")
    for k, v in env.items():
        if not k or not isinstance(v, str) or not v:
            raise ApiError("VALIDATION_ERROR", f"env_vars.{k or '<empty>'}: value must be a non-empty string")


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


class ToolAuthService:
    def __init__(self, settings: CredentialsSettings, nodes: dict[str, Node], commands: CommandRunner,
                 ingestor: Ingestor) -> None:
        self.settings = settings
        self.nodes = nodes
        self.commands = commands
        self.ingestor = ingestor
        self._bg: set[asyncio.Task[Any]] = set()

    @property
    def expected(self) -> int | None:
        return self.settings.version

    def sync_of(self, node: Node) -> str:
        return credential_sync(node.credential_version, self.expected)

    def node(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise ApiError("NOT_FOUND", f"node {node_id} not found")
        return node

    # ----- drift -----

    def drift(self, include_all: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Rows of the nodes that drift (every node with ``include_all``), and the answer's meta."""
        rows = [drift_row(n, self.expected) for n in sorted(self.nodes.values(), key=lambda n: n.id)]
        if not include_all:
            rows = [r for r in rows if r["credential_sync"] == DRIFT]
        return rows, {"total": len(rows), "expected_version": self.expected}

    # ----- push -----

    async def push_to_node(self, node_id: str, env: dict[str, str], version: int, *, actor: str,
                           ip: str | None = None, idempotency_key: str | None = None) -> Result:
        """Dispatch ``credential_push`` and record a ``credential.pushed`` event (names only)."""
        res = await self.commands.dispatch("credential_push", CommandTarget(node_id=node_id),
                                           {"env_vars": env, "version": version}, actor=actor, ip=ip,
                                           idempotency_key=idempotency_key, timeout=PUSH_TIMEOUT)
        await self.ingestor.emit_stored(node_id, "credential.pushed", {
            "version": version, "names": sorted(env), "status": res.status, "error": res.error, "actor": actor,
            "command_id": res.command_id,
        })
        return res

    def _push_answer(self, res: Result) -> dict[str, Any]:
        node = self.nodes.get(res.node_id or "")
        data = res.to_api()
        if node is not None:
            data["credential_sync"] = self.sync_of(node)
            data["credential_version"] = node.credential_version
        return data

    async def push(self, target: str | None, env_vars: dict[str, str] | None, version: int | None, *,
                   idempotency_key: str | None, actor: str,
                   ip: str | None) -> tuple[dict[str, Any] | list[dict[str, Any]], dict[str, Any] | None]:
        """``env_vars`` to ``target``; without them the configured env to ``target``, or to every online
        node not in sync when there is no target. The answer's data and meta (None for one node)."""
        version = version if version is not None else self.expected
        if env_vars is not None:
            if not target:
                raise ApiError("VALIDATION_ERROR", "target_node is required with env_vars")
            validate_env(env_vars)
            env, targets = dict(env_vars), [target]
        elif target:
            self.node(target)
            env, targets = self.settings.env_for(target), [target]
            if not env:
                raise ApiError("VALIDATION_ERROR", f"no env_vars given and no credentials configured for {target}")
        else:
            targets = [n.id for n in sorted(self.nodes.values(), key=lambda n: n.id)
                       if n.status == "online" and self.sync_of(n) != IN_SYNC and self.settings.env_for(n.id)]
            env = {}
        if version is None:
            version = 0
        if target:
            self.node(target)
            res = await self.push_to_node(target, env, version, actor=actor, ip=ip, idempotency_key=idempotency_key)
            if res.status == "timeout":
                raise ApiError("TIMEOUT", f"credential_push: {res.error or 'timed out'} (command {res.command_id})")
            if res.status != SUCCESS:
                raise ApiError("DISPATCH_ERROR", f"credential_push failed on {target}: {res.error or 'no detail'} "
                                                 f"(command {res.command_id})")
            return self._push_answer(res), None
        results = []
        for node_id in targets:
            try:
                res = await self.push_to_node(node_id, self.settings.env_for(node_id), version, actor=actor, ip=ip)
                results.append(self._push_answer(res))
            except CommandError as exc:
                results.append({"node_id": node_id, "status": FAILURE, "error": exc.message})
        failed = sum(1 for r in results if r.get("status") != SUCCESS)
        return results, {"total": len(results), "pushed": len(results) - failed, "failed": failed}

    # ----- OAuth -----

    async def trigger_oauth(self, node_id: str, tool: str, provider: str | None, method: str | None, *,
                            actor: str, ip: str | None) -> dict[str, Any]:
        """The OAuthResult of ``tool``'s login on ``node_id``."""
        node = self.node(node_id)
        cap = CAPABILITIES.get(tool)
        if cap is None or not cap.remote_oauth:
            answer = manual_required(tool, node.id)
            await self.ingestor.emit_stored(node.id, "auth.oauth_triggered", {
                "tool": tool, "status": answer["status"], "actor": actor})
            if cap is not None:
                self._spawn(self._tell_agent_manual(node.id, tool, actor, ip))
            return answer
        args: dict[str, Any] = {"tool": tool}
        if provider:
            args["provider"] = provider
        if method:
            args["method"] = method
        res = await self.commands.dispatch("oauth_trigger", CommandTarget(node_id=node.id), args, actor=actor,
                                           ip=ip, timeout=OAUTH_TIMEOUT)
        answer = oauth_result(res, tool)
        await self.ingestor.emit_stored(node.id, "auth.oauth_triggered", {
            "tool": tool, "status": answer.get("status"), "challenge_url": answer.get("challenge_url"),
            "reason": answer.get("reason"), "actor": actor, "command_id": res.command_id})
        return answer

    async def _tell_agent_manual(self, node_id: str, tool: str, actor: str, ip: str | None) -> None:
        """Fire-and-forget ``oauth_trigger`` for a tool without a remote flow: the agent then reports it as
        ``manual_required`` (while logged out). The operator already has the answer; failures are only
        logged."""
        try:
            res = await self.commands.dispatch("oauth_trigger", CommandTarget(node_id=node_id), {"tool": tool},
                                               actor=actor, ip=ip, timeout=OAUTH_TIMEOUT)
            if res.status != SUCCESS:
                log.info("telling %s that %s needs a manual login: %s %s", node_id, tool, res.status,
                         res.error or "")
        except CommandError as exc:
            log.info("telling %s that %s needs a manual login: not sent: %s", node_id, tool, exc.message)
        except Exception:
            log.exception("telling %s that %s needs a manual login failed", node_id, tool)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def stop(self) -> None:
        """Cancel the background notes to agents still waiting for an answer (at shutdown)."""
        for t in list(self._bg):
            t.cancel()
        if self._bg:
            await asyncio.gather(*self._bg, return_exceptions=True)
