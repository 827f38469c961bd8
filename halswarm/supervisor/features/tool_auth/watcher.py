"""The credential drift watcher: a service started and stopped by the supervisor, with or without HTTP.

It recomputes drift when a node's ``credential_sync`` arrives (the hub calls ``on_sync``) and, as a
fallback, every ``WATCH_INTERVAL`` s. It emits ``credential.drift_detected`` / ``credential.in_sync`` when
a node's state changes and, when ``credentials.auto_push`` is on and credentials are configured for a
drifting node, pushes them (at most once per ``cooldown`` per node).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from halswarm.core.credential_sync import DRIFT, IN_SYNC, UNKNOWN, credential_sync
from halswarm.core.model import Node
from halswarm.supervisor.features.tool_auth.service import ToolAuthService
from halswarm.supervisor.features.tool_auth.settings import CredentialsSettings
from halswarm.supervisor.runtime.dispatcher import CommandError
from halswarm.supervisor.runtime.ingest import Ingestor

log = logging.getLogger(__name__)

# Fallback poll (s); read when the watcher is built (tests set a module value before start-up).
WATCH_INTERVAL = 2.0
AUTO_PUSH_COOLDOWN = 60.0
AUTO_PUSH_ACTOR = "supervisor:auto-push"


class CredentialDriftWatcher:
    def __init__(self, settings: CredentialsSettings, nodes: dict[str, Node], ingestor: Ingestor,
                 tool_auth: ToolAuthService, *, interval: float | None = None,
                 cooldown: float = AUTO_PUSH_COOLDOWN) -> None:
        self.settings = settings
        self.nodes = nodes
        self.ingestor = ingestor
        self.tool_auth = tool_auth
        self.interval = interval if interval is not None else WATCH_INTERVAL
        self.cooldown = cooldown
        self.last: dict[str, str] = {}
        self._last_push: dict[str, float] = {}
        self._inflight: set[str] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(self) -> None:
        if self.running:
            return
        self.task = asyncio.get_running_loop().create_task(self._run(), name="credential-drift-watcher")

    async def stop(self) -> None:
        """End the poll and the auto-pushes in flight (their commands finish or time out on their own)."""
        task, self.task = self.task, None
        pending = [t for t in (task, *self._bg) if t is not None]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def on_sync(self, node_id: str) -> None:
        """A ``credential_sync`` of ``node_id`` arrived: recompute its drift now, not at the next poll."""
        if not self.running:
            return
        try:
            self.check(node_id)
        except Exception:
            log.exception("credential drift check of %s failed", node_id)

    async def _run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:
                log.exception("credential drift check failed")
            await asyncio.sleep(self.interval)

    def check(self, node_id: str | None = None) -> None:
        expected = self.settings.version
        for node in list(self.nodes.values()):
            if node.status != "online" or (node_id is not None and node.id != node_id):
                continue
            state = credential_sync(node.credential_version, expected)
            previous = self.last.get(node.id)
            self.last[node.id] = state
            if state != previous and state != UNKNOWN and not (previous is None and state == IN_SYNC):
                self.ingestor.emit(node.id, f"credential.{state}", {
                    "credential_version": node.credential_version, "expected_version": expected})
                log.info("credential sync of node %s: %s (reported %s, expected %s)", node.id, state,
                         node.credential_version, expected)
            if state == DRIFT and expected is not None and self.settings.auto_push:
                self._maybe_push(node.id, expected)

    def _maybe_push(self, node_id: str, version: int) -> None:
        if node_id in self._inflight or time.monotonic() - self._last_push.get(node_id, -1e9) < self.cooldown:
            return
        env = self.settings.env_for(node_id)
        if not env:
            return
        self._inflight.add(node_id)
        self._last_push[node_id] = time.monotonic()
        t = asyncio.get_running_loop().create_task(self._push(node_id, env, version))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _push(self, node_id: str, env: dict[str, str], version: int) -> None:
        try:
            res = await self.tool_auth.push_to_node(node_id, env, version, actor=AUTO_PUSH_ACTOR)
            log.info("auto-push of credentials version %d to %s: %s", version, node_id, res.status)
        except CommandError as exc:
            log.warning("auto-push of credentials to %s not sent: %s", node_id, exc.message)
        finally:
            self._inflight.discard(node_id)
