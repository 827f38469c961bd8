"""Series rendered from the live state at each scrape (a custom collector), so none goes stale.

Per node: `up` and `connected` for every known node (0 once it leaves), its last heartbeat time, and the
figures its agent reports (RSS, MemoryMax, restarts, outbox) only while it is connected. The supervisor's own RSS,
MemoryMax and systemd restarts; the database's size and its filesystem's free space. A figure that cannot
be read has no sample (never a made-up 0).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from halswarm.core.model import Node
from halswarm.memwatch import read_memory_max, read_rss
from halswarm.supervisor.metrics import MAX_NODE_LABELS, P

# heartbeat `process` key -> (metric name, help, counter?)
AGENT_FIGURES = {
    "rss_bytes": ("agent_resident_memory_bytes", "Resident memory of the node's hal-agent", False),
    "memory_max_bytes": ("agent_memory_max_bytes", "MemoryMax (cgroup memory.max) of the node's hal-agent", False),
    "restarts": ("agent_systemd_restarts", "systemd NRestarts of the node's hal-agent unit", True),
    "opencode_restarts": ("agent_opencode_restarts",
                          "Restarts of opencode serve by the node's hal-agent since the agent started", True),
}

# what the supervisor keeps of a heartbeat's `outbox` (node.resources key) -> (metric name, help, counter?)
OUTBOX_FIGURES = {
    "outbox_pending": ("agent_outbox_pending", "Events in the agent's outbox waiting for an ack", False),
    "outbox_max_events": ("agent_outbox_max_events", "Bound of the agent's outbox (outbox.max_events)", False),
    "outbox_refused_total": ("agent_outbox_refused",
                             "Events the agent refused because its outbox was full (since the agent started)", True),
}


def database_files_size(path: Path) -> int | None:
    """Bytes of the database file and its WAL (what grows on disk); None when the file is unreadable."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    try:
        size += Path(f"{path}-wal").stat().st_size
    except OSError:
        pass
    return size


def filesystem_space(path: Path) -> tuple[int, int] | None:
    """(bytes available to this unprivileged process, total bytes) of the filesystem holding `path`."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


class LiveMetrics(Collector):
    def __init__(self, nodes: Mapping[str, Node], connected: Callable[[], Iterable[str]],
                 vitals: Mapping[str, Mapping[str, float]], database_path: Path, *,
                 rss_fn: Callable[[], int | None] = read_rss,
                 limit_fn: Callable[[], int | None] = read_memory_max, max_nodes: int = MAX_NODE_LABELS) -> None:
        self.nodes, self.connected, self.vitals, self.database_path = nodes, connected, vitals, database_path
        self.rss_fn, self.limit_fn, self.max_nodes = rss_fn, limit_fn, max_nodes
        self.restarts: int | None = None  # the supervisor unit's NRestarts, set once known

    def collect(self) -> Iterable[Metric]:
        yield from self._nodes()
        yield from self._own()
        yield from self._database()

    def _nodes(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(P + "node_up", "1 while the node is online (heartbeats in time), 0 once it is not",
                               labels=["node"])
        conn = GaugeMetricFamily(P + "node_connected", "1 while the node's agent has an open connection",
                                 labels=["node"])
        seen = GaugeMetricFamily(P + "node_last_heartbeat_timestamp_seconds",
                                 "Unix time of the node's last heartbeat or registration", labels=["node"])
        fams = {key: (CounterMetricFamily if counter else GaugeMetricFamily)(P + name, doc, labels=["node"])
                for key, (name, doc, counter) in AGENT_FIGURES.items()}
        outbox = {key: (CounterMetricFamily if counter else GaugeMetricFamily)(P + name, doc, labels=["node"])
                  for key, (name, doc, counter) in OUTBOX_FIGURES.items()}
        linked = set(self.connected())
        # Node ids are chosen by agents: at most max_nodes of them, the online ones first.
        known = sorted(self.nodes.values(), key=lambda n: (n.status != "online", n.id))[:self.max_nodes]
        for node in known:
            up.add_metric([node.id], 1.0 if node.status == "online" else 0.0)
            conn.add_metric([node.id], 1.0 if node.id in linked else 0.0)
            if node.last_heartbeat is not None:
                seen.add_metric([node.id], node.last_heartbeat)
            if node.id in linked:
                for key, value in self.vitals.get(node.id, {}).items():
                    if key in fams:
                        fams[key].add_metric([node.id], value)
                for key, fam in outbox.items():
                    if key in node.resources:
                        fam.add_metric([node.id], node.resources[key])
        yield from (up, conn, seen, *fams.values(), *outbox.values())

    def _own(self) -> Iterable[Metric]:
        rss, limit = self.rss_fn(), self.limit_fn()
        if rss is not None:
            yield GaugeMetricFamily(P + "supervisor_resident_memory_bytes", "Resident memory of hal-supervisor",
                                    value=rss)
        if limit is not None:
            yield GaugeMetricFamily(P + "supervisor_memory_max_bytes",
                                    "MemoryMax (cgroup memory.max) of hal-supervisor", value=limit)
        if self.restarts is not None:
            yield CounterMetricFamily(P + "supervisor_systemd_restarts",
                                      "systemd NRestarts of the hal-supervisor unit", value=self.restarts)

    def _database(self) -> Iterable[Metric]:
        size = database_files_size(self.database_path)
        if size is not None:
            yield GaugeMetricFamily(P + "database_size_bytes", "Size of the SQLite database file and its WAL",
                                    value=size)
        space = filesystem_space(self.database_path.parent)
        if space is not None:
            yield GaugeMetricFamily(P + "database_filesystem_avail_bytes",
                                    "Free bytes (for unprivileged use) of the database's filesystem", value=space[0])
            yield GaugeMetricFamily(P + "database_filesystem_size_bytes",
                                    "Total bytes of the database's filesystem", value=space[1])
