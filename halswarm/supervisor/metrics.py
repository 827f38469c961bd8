"""Prometheus metrics of the supervisor (names kept from the Go version, all of them updated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

P = "hal_o_swarm_"


class Metrics:
    """One registry per supervisor instance, so tests can run several in one process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.commands_total = Counter(P + "commands_total", "Commands dispatched", ["type", "status"], registry=r)
        self.command_duration = Histogram(
            P + "command_duration_seconds", "Command round-trip time", ["type"], registry=r
        )
        self.errors_total = Counter(P + "errors_total", "Errors by component", ["component", "type"], registry=r)
        self.events_total = Counter(P + "events_total", "Events durably stored", ["type"], registry=r)
        self.connections_total = Counter(
            P + "connections_total", "Agent connection attempts by outcome", ["status"], registry=r
        )
        self.connections_active = Gauge(P + "connections_active", "Open agent connections", registry=r)
        self.sessions_active = Gauge(P + "sessions_active", "Sessions by status", ["status"], registry=r)
        self.nodes_online = Gauge(P + "nodes_online", "Nodes currently online", registry=r)
        self.event_processing = Histogram(
            P + "event_processing_duration_seconds",
            "Time from receiving an event frame to its durable commit",
            ["type"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
