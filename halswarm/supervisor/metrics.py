"""Prometheus metrics of the supervisor (names kept from the Go version, all of them updated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

P = "hal_o_swarm_"
MAX_NODE_LABELS = 2000  # distinct `node` label values of the per-node series (far above a real fleet)

# Why an agent connection failed (hub side), a fixed set: the label never carries what a peer sent.
# Handshake: origin, token in the URL, no token, unknown token, throttled after failures. Registration:
# no register in time, first frame not a register, a per-node token used for another node, the shared
# token used for a node that has its own. Frames: the codec's error codes.
HANDSHAKE_FAILURES = ("origin_forbidden", "token_in_url", "no_token", "bad_token", "throttled")
REGISTER_FAILURES = ("register_timeout", "not_registered", "token_node_mismatch", "shared_token_refused")
FRAME_FAILURES = ("frame_too_large", "bad_json", "bad_envelope", "unsupported_version", "unknown_type",
                  "bad_payload")
CONNECTION_FAILURE_REASONS = (*HANDSHAKE_FAILURES, *REGISTER_FAILURES, *FRAME_FAILURES, "other")

# Request durations: the runbook alerts above 5 s, so 5 is a bucket bound.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
        self.values_normalised = Counter(
            P + "ingest_values_normalised_total",
            "Time values from agents read as milliseconds or replaced (halswarm.core.timestamps)",
            ["field", "reason"], registry=r,
        )
        self.events_total = Counter(P + "events_total", "Events durably stored", ["type"], registry=r)
        self.connections_total = Counter(
            P + "connections_total", "Agent connection attempts by outcome", ["status"], registry=r
        )
        self.foreign_sessions_refused = Counter(
            P + "foreign_session_refused_total",
            "Session ids a node claimed that belong to another node (refused, not applied)", ["via"], registry=r,
        )
        self.connections_active = Gauge(P + "connections_active", "Open agent connections", registry=r)
        self.sessions_active = Gauge(P + "sessions_active", "Sessions by status", ["status"], registry=r)
        self.nodes_online = Gauge(P + "nodes_online", "Nodes currently online", registry=r)
        self.leader = Gauge(P + "leader", "1 while this supervisor runs the leader-only periodic engines "
                            "(always on SQLite; the holder of the leader lock on PostgreSQL)", registry=r)
        self.sessions_in_memory = Gauge(
            P + "sessions_in_memory", "Sessions held in memory (live, and ended within the grace period)", registry=r
        )
        self.sessions_evicted = Gauge(
            P + "sessions_evicted", "Ended sessions that left memory since start", registry=r
        )
        self.loop_lag_max = Gauge(
            P + "event_loop_lag_max_seconds", "Longest event-loop stall seen since start", registry=r
        )
        self.loop_lag = Gauge(P + "event_loop_lag_seconds", "Event-loop stall at the last probe", registry=r)
        # Per-node series (up, heartbeat, the agent's own figures and outbox) are rendered from live state
        # by runtime/live_metrics.LiveMetrics, so none lingers after a node leaves.
        self.http_request_duration = Histogram(
            P + "http_request_duration_seconds",
            "HTTP API time to the response status line, by route template, method and status class",
            ["route", "method", "status_class"], buckets=HTTP_BUCKETS, registry=r,
        )
        self.agent_connection_failures = Counter(
            P + "agent_connection_failures_total",
            "Agent connections refused or frames rejected by the hub, by reason (a fixed set)", ["reason"],
            registry=r,
        )
        for reason in CONNECTION_FAILURE_REASONS:  # every series exists from the start: rate() sees the first
            self.agent_connection_failures.labels(reason)
        self.event_processing = Histogram(
            P + "event_processing_duration_seconds",
            "Time from receiving an event frame to its durable commit",
            ["type"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )

    def connection_failed(self, reason: str) -> None:
        self.agent_connection_failures.labels(reason if reason in CONNECTION_FAILURE_REASONS else "other").inc()
