"""Readiness of each component, and the gauges refreshed before a scrape."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from halswarm.core.model import SESSION_STATUSES, Node
from halswarm.store.probes import ping
from halswarm.store.reader import Reader
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.dispatcher import Dispatcher
from halswarm.supervisor.runtime.hub import Hub
from halswarm.supervisor.runtime.leadership import Leadership
from halswarm.supervisor.runtime.tracker import SessionTracker

READINESS_TIMEOUT_SEC = 2.0


class HealthService:
    def __init__(self, writer: Writer, reader: Reader, hub: Hub, dispatcher: Dispatcher, metrics: Metrics,
                 tracker: SessionTracker, nodes: dict[str, Node]) -> None:
        self.writer, self.reader, self.hub, self.dispatcher = writer, reader, hub, dispatcher
        self.metrics, self.tracker, self.nodes = metrics, tracker, nodes
        self.leadership: Leadership | None = None  # PostgreSQL: several supervisors, one leader
        self.listener: Any = None  # PostgreSQL: the supervisor's LISTEN connection (store.pg_listen.PgListener)

    async def readiness(self) -> dict[str, dict[str, Any]]:
        """Each component: `{"status": "ok"}` or `{"status": "error", "error": why}`."""
        out: dict[str, dict[str, Any]] = {}
        try:
            if not self.writer.alive:
                raise RuntimeError("writer stopped")
            await asyncio.wait_for(self.reader.run(ping),
                                   READINESS_TIMEOUT_SEC)
            out["database"] = {"status": "ok"}
            problem = self.writer.health()
            if problem:
                out["database"] = {"status": "error", "error": problem}
        except Exception as exc:
            out["database"] = {"status": "error", "error": str(exc) or type(exc).__name__}
        out["websocket_hub"] = ({"status": "ok"} if self.hub.serving
                                else {"status": "error", "error": self.hub.listener_error or "not serving"})
        out["command_dispatcher"] = (
            {"status": "ok"} if self.dispatcher.running else {"status": "error", "error": "stopped"}
        )
        if self.leadership is not None:  # a follower is as ready as the leader: it serves agents and the API
            lead = self.leadership
            out["leadership"] = {"status": "ok", "role": lead.role.value, "supervisor_id": lead.name,
                                 "detail": lead.detail}
        if self.listener is not None:
            out["listen"] = listen_component(self.listener)
        return out

    def refresh_gauges(self) -> None:
        if self.listener is not None:
            self.metrics.pg_listen_up.set(1 if self.listener.connected else 0)
        counts = self.tracker.counts()
        for status in SESSION_STATUSES:
            self.metrics.sessions_active.labels(status).set(counts.get(status, 0))
        self.metrics.sessions_in_memory.set(self.tracker.in_memory())
        self.metrics.sessions_evicted.set(self.tracker.evicted)
        self.metrics.nodes_online.set(sum(1 for n in self.nodes.values() if n.status == "online"))

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of the current metrics, and its content type."""
        self.refresh_gauges()
        return generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST


def listen_component(listener: Any) -> dict[str, Any]:
    """The LISTEN connection as a readiness component: `ok`, or `degraded` while it is down. Degraded is
    still ready: command forwarding and the event streams poll the store (0.5 s and 1 s), so nothing is
    lost, only the wake-up latency grows."""
    channels = listener.channels
    if listener.connected:
        return {"status": "ok", "channels": channels, "connects": listener.connects}
    since = listener.down_since
    down = f" for {max(0.0, time.time() - since):.0f} s" if since is not None else ""
    return {"status": "degraded", "channels": channels, "connects": listener.connects,
            "detail": f"LISTEN connection down{down} ({listener.last_error or 'connecting'}); polling carries "
                      "command forwarding and the event streams meanwhile"}
