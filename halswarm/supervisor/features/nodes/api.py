"""`/api/v1/nodes`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from halswarm.core.paging import page_meta
from halswarm.supervisor.apikit.deps import VIEWER, After, Before, Limit, Offset, cursor_page, service
from halswarm.supervisor.apikit.envelope import ok
from halswarm.supervisor.features.nodes.service import NODE_CURSOR, NodesService

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"], dependencies=[VIEWER])
Nodes = Annotated[NodesService, service(NodesService)]


@router.get("")
async def list_nodes(nodes: Nodes, status: str | None = None, project: str | None = None, limit: Limit = 100,
                     offset: Offset = 0, after: After = None, before: Before = None) -> JSONResponse:
    req = cursor_page(limit, offset, after, before, NODE_CURSOR)
    page, total = await nodes.page(status, project, req)
    return ok([n.to_api() for n in page.items], meta=page_meta(page, req, total, False))


@router.get("/{node_id}")
async def get_node(nodes: Nodes, node_id: str) -> JSONResponse:
    return ok(await nodes.describe(node_id))


@router.get("/{node_id}/auth")
async def node_auth(nodes: Nodes, node_id: str) -> JSONResponse:
    return ok(await nodes.auth(node_id))
