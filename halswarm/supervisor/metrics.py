"""Prometheus metrics of the supervisor (names kept from the Go version, all of them updated)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

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

# Command forwarding between supervisors on a shared PostgreSQL (issue 21), a fixed set. `asked`: this
# supervisor forwarded the command to the node's holder; `held`: it ran one another supervisor forwarded.
# Outcomes: the command's result status (success, failure, timeout: the holder's answer, or the agent's
# for `held`); `expired`: no answer by the deadline (answered as a local timeout); `offline`: the node's
# lease went (answered as a node gone offline); `lost`: the row was gone; `shutdown`: this supervisor
# stopped while waiting; `error`: the holder failed before the agent answered.
FORWARD_ROLES = ("asked", "held")
FORWARD_OUTCOMES = {"asked": ("success", "failure", "timeout", "expired", "offline", "lost", "shutdown"),
                    "held": ("success", "failure", "timeout", "error")}
FORWARD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


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

        # Shared PostgreSQL only (issue 21): exported on SQLite too, where they stay at zero.
        self.forwarded_commands = Counter(
            P + "forwarded_commands_total",
            "Commands forwarded between supervisors on a shared PostgreSQL, by role (asked: forwarded from "
            "here; held: run here for another supervisor) and outcome", ["role", "outcome"], registry=r,
        )
        for role in FORWARD_ROLES:
            for outcome in FORWARD_OUTCOMES[role]:
                self.forwarded_commands.labels(role, outcome)
        self.forwarding_duration = Histogram(
            P + "forwarding_duration_seconds",
            "Forwarded commands: time from queueing the command to reading the holder's answer (asker side)",
            buckets=FORWARD_BUCKETS, registry=r,
        )
        # Only on a shared PostgreSQL: registered by `shared_store()`, absent on SQLite (no alert on them fires
        # there, and a dashboard shows no series rather than a misleading 0).
        self.pg_listen_up = Gauge(
            P + "pg_listen_up", "1 while this supervisor's PostgreSQL LISTEN connection is up (0: polling alone "
            "carries command forwarding and the event streams, with more latency)", registry=None,
        )
        self.pg_listen_connects = Counter(
            P + "pg_listen_connects_total", "PostgreSQL LISTEN connections made (the first and each reconnection)",
            registry=None,
        )
        self.event_tail_lag = Gauge(
            P + "event_tail_lag_events",
            "Event ids the store had assigned at the tail's last probe that this supervisor had not handed to its "
            "streams yet (0 while no stream is open)", registry=None,
        )
        self.event_tail_horizon_waits = Counter(
            P + "event_tail_horizon_waits_total",
            "Probes of the event tail whose candidate horizon had to wait for another transaction on events",
            registry=None,
        )

    def shared_store(self, fleet_nodes_held: Callable[[], int | None]) -> None:
        """PostgreSQL (several supervisors): register the series that exist only there. `fleet_nodes_held`:
        the nodes held by a live lease fleet-wide, None on a supervisor that is not the leader (the series
        is then absent, so a sum over the supervisors counts each node once)."""
        for m in (self.pg_listen_up, self.pg_listen_connects, self.event_tail_lag, self.event_tail_horizon_waits):
            self.registry.register(m)
        self.registry.register(_LeaderOnly(fleet_nodes_held))

    def listen_changed(self, up: bool) -> None:
        """The LISTEN connection (store.pg_listen.PgListener.on_change) went up or down."""
        self.pg_listen_up.set(1 if up else 0)
        if up:
            self.pg_listen_connects.inc()

    def forwarded(self, role: str, outcome: str) -> None:
        known = FORWARD_OUTCOMES.get(role, ())
        if outcome in known:
            self.forwarded_commands.labels(role, outcome).inc()

    def connection_failed(self, reason: str) -> None:
        self.agent_connection_failures.labels(reason if reason in CONNECTION_FAILURE_REASONS else "other").inc()


class _LeaderOnly(Collector):
    """`hal_o_swarm_fleet_nodes_held`, only while this supervisor is the leader (its lease sweep runs)."""

    def __init__(self, value: Callable[[], int | None]) -> None:
        self._value = value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = self._value()
        if value is not None:
            yield GaugeMetricFamily(
                P + "fleet_nodes_held", "Nodes held by a live lease on any supervisor sharing this PostgreSQL "
                "(exported by the leader only, so it is counted once)", value=value)
