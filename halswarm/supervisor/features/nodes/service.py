"""The fleet as the hub knows it."""

from __future__ import annotations

from typing import Any

from halswarm.core.credential_sync import credential_sync
from halswarm.core.model import Node
from halswarm.core.paging import Page, PageRequest, slice_sorted
from halswarm.store.reader import Reader
from halswarm.store.repos.sessions import session_ids_of_node
from halswarm.supervisor.apikit.envelope import ApiError

NODE_CURSOR = "s"  # (id,)


def node_key(n: Node) -> tuple[str]:
    return (n.id,)


class NodesService:
    def __init__(self, nodes: dict[str, Node], reader: Reader, credential_version: int | None) -> None:
        self.nodes = nodes
        self.reader = reader  # a node's sessions are listed from the store (ended ones leave memory)
        self.credential_version = credential_version  # `credentials.version` of the config, if any

    def page(self, status: str | None, project: str | None, req: PageRequest) -> tuple[Page[Node], int]:
        """By id, with the exact total (in memory)."""
        nodes = sorted(self.nodes.values(), key=lambda n: n.id)
        if status:
            nodes = [n for n in nodes if n.status == status]
        if project:
            nodes = [n for n in nodes if project in n.project_names]
        return slice_sorted(nodes, req, node_key, descending=False), len(nodes)

    def get(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise ApiError("NOT_FOUND", f"node {node_id} not found")
        return node

    async def describe(self, node_id: str) -> dict[str, Any]:
        node = self.get(node_id)
        ids = await self.reader.run(lambda c: session_ids_of_node(c, node_id))
        return node.to_api() | {"sessions": ids}

    def auth(self, node_id: str) -> dict[str, Any]:
        node = self.get(node_id)
        sync = credential_sync(node.credential_version, self.credential_version)
        return {"node_id": node.id, "auth_states": node.auth_states, "credential_sync": sync,
                "credential_version": node.credential_version}
