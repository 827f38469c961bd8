"""The manifest push: an ``env_check`` to every node when it registers (a new ``connected_at``), to every
online node when the manifest changes, and again every ``recheck_interval`` seconds. No extra command type,
no hub hook: a loop that looks at the node table every ``watch_interval`` seconds.

A service with ``start()``/``stop()``: the supervisor starts it whether or not it serves HTTP, and stops it
at shutdown (pushes in flight get a short grace, then are cancelled)."""

from __future__ import annotations

import logging
import time
from typing import Any

from halswarm.core.model import Node
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.env.checks import EnvChecks
from halswarm.supervisor.features.env.manifests import EnvManifests
from halswarm.supervisor.runtime.dispatcher import Dispatcher
from halswarm.supervisor.runtime.periodic import PeriodicEngine

log = logging.getLogger(__name__)

STOP_GRACE_S = 2.0  # a check in flight at shutdown: only its record would be lost


class EnvWatcher(PeriodicEngine):
    def __init__(self, manifests: EnvManifests, checks: EnvChecks, dispatcher: Dispatcher, nodes: dict[str, Node],
                 *, watch_interval: float, recheck_interval: float) -> None:
        super().__init__()
        self.manifests, self.checks, self.dispatcher, self.nodes = manifests, checks, dispatcher, nodes
        self.watch_interval = watch_interval
        self.recheck_interval = recheck_interval
        self._pushing: dict[str, Any] = {}  # node -> reason of one more push after the one in flight, or None
        self._registered: dict[str, float | None] = {}  # node -> the connected_at it was last pushed for
        self._last_recheck = time.monotonic()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is None:
            self._last_recheck = time.monotonic()
            self._start_loop(self.watch_interval, "env-watcher", log)

    async def stop(self) -> None:
        await self._stop_loop(grace=STOP_GRACE_S)

    def push(self, node_id: str, reason: str) -> None:
        """Send the manifest (as an ``env_check``) to one node, at most one at a time per node."""
        if self._task is None:
            return  # not started, or stopped: nothing runs outside the service's lifetime
        if node_id in self._pushing:
            self._pushing[node_id] = reason  # run once more after the one in flight
            return
        self._pushing[node_id] = None
        self._spawn(self._push(node_id, reason), name=f"env-push-{node_id}")

    async def _push(self, node_id: str, reason: str) -> None:
        try:
            again: Any = reason
            while again:
                if not self.dispatcher.running:
                    return
                node = self.nodes.get(node_id)
                if node is None or node.status != "online":
                    return
                try:
                    res = await self.checks.check(node_id, None, actor=f"supervisor:env:{again}")
                    if res.status != "success":
                        log.info("env check of %s (%s) did not succeed: %s", node_id, again, res.error)
                except ApiError as exc:
                    log.info("env check of %s (%s) not sent: %s", node_id, again, exc.message)
                again, self._pushing[node_id] = self._pushing.get(node_id), None
        except Exception:
            log.exception("env push to %s failed", node_id)
        finally:
            self._pushing.pop(node_id, None)

    def push_all(self, reason: str) -> None:
        for node in list(self.nodes.values()):
            if node.status == "online":
                self.push(node.id, reason)

    async def check(self) -> None:
        """One look at the nodes: push to the (re-)registered ones, and to all when a re-check is due."""
        man = await self.manifests.current()
        for node in list(self.nodes.values()):
            if node.status != "online":
                self._registered.pop(node.id, None)
                self.manifests.forget_node(node.id)
                continue
            seen = self._registered.get(node.id)
            if seen != node.connected_at:
                self._registered[node.id] = node.connected_at
                if seen is not None:  # registered again (maybe a new agent process): ask its capabilities
                    self.manifests.forget_node(node.id)
                if man is not None:
                    self.push(node.id, "registration")
        if man is not None and time.monotonic() - self._last_recheck >= self.recheck_interval:
            self._last_recheck = time.monotonic()
            self.push_all("periodic")
