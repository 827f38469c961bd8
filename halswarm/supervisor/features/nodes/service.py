"""The fleet as the hub knows it; on a shared PostgreSQL, as every supervisor stored it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from halswarm.core.credential_sync import credential_sync
from halswarm.core.model import Node
from halswarm.core.paging import Page, PageRequest, slice_sorted
from halswarm.store.reader import Reader
from halswarm.store.repos.leases import live_leases
from halswarm.store.repos.sessions import session_ids_of_node
from halswarm.store.repos.state import stored_nodes
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.runtime.leases import merge_fleet

NODE_CURSOR = "s"  # (id,)


def node_key(n: Node) -> tuple[str]:
    return (n.id,)


@dataclass(frozen=True)
class SharedFleet:
    """Several supervisors on one PostgreSQL: this one's id in the leases and the nodes connected here."""

    owner: str
    linked: Callable[[], Iterable[str]]


class NodesService:
    def __init__(self, nodes: dict[str, Node], reader: Reader, credential_version: int | None,
                 shared: SharedFleet | None = None) -> None:
        self.nodes = nodes
        self.reader = reader  # a node's sessions are listed from the store (ended ones leave memory)
        self.credential_version = credential_version  # `credentials.version` of the config, if any
        self.shared = shared  # None on SQLite: this supervisor's memory is the whole fleet

    async def fleet(self) -> dict[str, Node]:
        """Every node: memory on SQLite; on a shared store the stored rows and live leases (one read)
        merged with the nodes connected here (runtime/leases.merge_fleet)."""
        shared = self.shared
        if shared is None:
            return self.nodes
        now = time.time()
        stored, leases = await self.reader.run(lambda c: (stored_nodes(c), live_leases(c, now)))
        return merge_fleet(self.nodes, shared.linked(), stored, leases, shared.owner)

    async def page(self, status: str | None, project: str | None, req: PageRequest) -> tuple[Page[Node], int]:
        """By id, with the exact total."""
        nodes = sorted((await self.fleet()).values(), key=lambda n: n.id)
        if status:
            nodes = [n for n in nodes if n.status == status]
        if project:
            nodes = [n for n in nodes if project in n.project_names]
        return slice_sorted(nodes, req, node_key, descending=False), len(nodes)

    async def get(self, node_id: str) -> Node:
        node = (await self.fleet()).get(node_id)
        if node is None:
            raise ApiError("NOT_FOUND", f"node {node_id} not found")
        return node

    async def describe(self, node_id: str) -> dict[str, Any]:
        node = await self.get(node_id)
        ids = await self.reader.run(lambda c: session_ids_of_node(c, node_id))
        return node.to_api() | {"sessions": ids}

    async def auth(self, node_id: str) -> dict[str, Any]:
        node = await self.get(node_id)
        sync = credential_sync(node.credential_version, self.credential_version)
        return {"node_id": node.id, "auth_states": node.auth_states, "credential_sync": sync,
                "credential_version": node.credential_version}
