"""Node ownership among supervisors sharing one PostgreSQL (the hub's side of halswarm.store.repos.leases).

The hub takes a node's lease when its agent registers, renews it with every heartbeat and releases it
when the connection ends. The newer connection wins: an agent is on one supervisor at a time, so the one
it registered with last is where it is; the previous holder learns it at its next renewal (the lease
belongs to someone else) and drops its link without writing the node's state. The leader sweeps leases
that expired (their supervisor died without releasing them) and marks those nodes offline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from halswarm.core.model import Node
from halswarm.store.repos.leases import held_elsewhere_liveness, live_leases, sweep_expired
from halswarm.supervisor.runtime.periodic import PeriodicEngine

log = logging.getLogger(__name__)


def supervisor_id(port: int) -> str:
    """This supervisor's name in leases: host and agent port, the same across its restarts (so a restart
    recognises its previous run's leases) and distinct for two supervisors on one host."""
    return f"{socket.gethostname()}:{port}"


@dataclass(frozen=True)
class LeaseSettings:
    owner: str
    ttl: float  # seconds: the hub's liveness timeout (heartbeat interval x missed heartbeats)


@dataclass(frozen=True)
class RemoteLiveness:
    """A node held by another supervisor as that supervisor stored it at the node's last heartbeat."""

    last_heartbeat: float | None = None
    resources: dict[str, float] = field(default_factory=dict)
    vitals: dict[str, float] = field(default_factory=dict)
    hostname: str = ""


class FleetView(Mapping[str, Node]):
    """The nodes as the leader's engines must see them on a shared store: a node that another supervisor
    holds (a live lease) is online, though it is not connected here. Without that, the leader would take
    every node of the other supervisors for crashed (auto-remediation's `agent-crashed`). Such a node reads
    with the last heartbeat and resources its holder stored (`agent-high-memory` counts those heartbeats),
    and one this supervisor never loaded is in the view too."""

    def __init__(self, nodes: Mapping[str, Node]) -> None:
        self.nodes = nodes
        self.held_elsewhere: frozenset[str] = frozenset()  # refreshed by LeaseSweep
        self.remote: dict[str, RemoteLiveness] = {}  # refreshed by LeaseSweep

    def __getitem__(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node_id not in self.held_elsewhere:
            if node is None:
                raise KeyError(node_id)
            return node
        seen = self.remote.get(node_id)
        if node is None:
            node = Node(id=node_id, hostname=seen.hostname if seen else "")
        if node.status == "online" and seen is None:
            return node
        changes: dict[str, Any] = {"status": "online"}
        if seen is not None:
            changes |= {"last_heartbeat": seen.last_heartbeat, "resources": dict(seen.resources)}
        return dataclasses.replace(node, **changes)

    def __iter__(self) -> Iterator[str]:
        yield from self.nodes
        yield from sorted(n for n in self.held_elsewhere if n not in self.nodes)

    def __len__(self) -> int:
        return len(self.nodes) + sum(1 for n in self.held_elsewhere if n not in self.nodes)


class FleetVitals(Mapping[str, Mapping[str, float]]):
    """The agents' process figures for the leader's engines: from this supervisor's hub for the nodes
    connected here, from the lease rows their holders write with each heartbeat for the others."""

    def __init__(self, local: Mapping[str, Mapping[str, float]], view: FleetView) -> None:
        self.local, self.view = local, view

    def __getitem__(self, node_id: str) -> Mapping[str, float]:
        if node_id in self.local:
            return self.local[node_id]
        seen = self.view.remote.get(node_id)
        if seen is None or node_id not in self.view.held_elsewhere:
            raise KeyError(node_id)
        return seen.vitals

    def __iter__(self) -> Iterator[str]:
        yield from self.local
        yield from (n for n in self.view.remote if n not in self.local and n in self.view.held_elsewhere)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def merge_fleet(here: Mapping[str, Node], linked: Iterable[str], stored: Iterable[Node],
                leases: Mapping[str, str], owner: str) -> dict[str, Node]:
    """The fleet as any supervisor on a shared store answers it (the operator API, issue 21).

    A node connected here is this supervisor's memory (the freshest word). Any other node is its stored
    row, as the supervisor holding it persisted it (liveness and resources with each heartbeat, `last_seq`
    with each commit), online exactly when a live lease says another supervisor holds it: a row left
    `online` by a supervisor that died counts as offline once its lease expired, before the leader's sweep
    rewrites it. A node only in memory here (its first row not committed yet) is shown from memory."""
    connected = set(linked)
    out: dict[str, Node] = {}
    for node in stored:
        if node.id in connected and node.id in here:
            continue
        holder = leases.get(node.id)
        online = holder is not None and holder != owner
        if (node.status == "online") != online:
            node = dataclasses.replace(node, status="online" if online else "offline")
        out[node.id] = node
    for node_id, node in here.items():
        if node_id in connected or node_id not in out:
            out[node_id] = node
    return out


class LeaseSweep(PeriodicEngine):
    """Leader-only: expired leases out, their nodes offline (stored, in memory, and a `node.offline`
    event); and the view of which nodes other supervisors hold, for the leader's engines."""

    def __init__(self, writer: Any, nodes: dict[str, Node], emit: Callable[[str, str, dict[str, Any]], Any],
                 interval: float, *, owner: str, view: FleetView, linked: Callable[[], Iterable[str]]) -> None:
        super().__init__()
        self.writer, self.nodes, self.emit, self.interval, self.linked = writer, nodes, emit, interval, linked
        self.owner, self.view = owner, view
        self.held: int | None = None  # nodes with a live lease fleet-wide at the last check (None: not running)

    async def check(self) -> list[str]:
        now = time.time()
        here = list(self.linked())

        owner = self.owner

        def job(c: Any) -> tuple[list[str], dict[str, str], dict[str, Any]]:
            return sweep_expired(c, now, keep=here), live_leases(c, now), held_elsewhere_liveness(c, now, owner)

        swept, live, remote = await self.writer.run(job)
        self.held = len(live)
        self.view.remote = {n: _liveness(row) for n, row in remote.items()}
        self.view.held_elsewhere = frozenset(n for n, o in live.items() if o != self.owner)
        for node_id in swept:
            node = self.nodes.get(node_id)
            if node is not None:
                node.set_status("offline")
            log.warning("node %s: its lease expired (the supervisor holding it stopped renewing); marked offline",
                        node_id)
            self.emit(node_id, "node.offline", {"reason": "lease expired", "unreachable_sessions": []})
        return swept

    async def start(self) -> None:
        try:  # the view is right before the engines that read it start
            await self.check()
        except Exception as exc:
            log.warning("lease sweep: %s", exc)
        self._start_loop(self.interval, "lease-sweep", log)

    async def stop(self) -> None:
        await self._stop_loop(0)
        self.held = None  # stepped down: another supervisor's sweep counts them now


def _numbers(text: Any) -> dict[str, float]:
    """A stored JSON object of numbers (resources, vitals); anything else is empty, never trusted further."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def _liveness(row: tuple[Any, ...]) -> RemoteLiveness:
    beat, resources, vitals, hostname = row
    return RemoteLiveness(beat, _numbers(resources), _numbers(vitals), str(hostname or ""))
