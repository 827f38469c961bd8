"""`/api/v1/events` and `/api/v1/events/stream`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from halswarm.core.paging import page_meta
from halswarm.core.sse import LastEventIdError, parse_last_event_id
from halswarm.supervisor.apikit.deps import VIEWER, After, Before, Limit, Offset, cursor_page, parse_since, service
from halswarm.supervisor.apikit.envelope import ApiError, ok
from halswarm.supervisor.features.events.service import EVENT_CURSOR, EventsService

router = APIRouter(prefix="/api/v1/events", tags=["events"], dependencies=[VIEWER])
Events = Annotated[EventsService, service(EventsService)]


def _filters(session_id: str | None, project: str | None, node_id: str | None, type: str | None,
             since_: str | None) -> dict[str, Any]:
    return {"session_id": session_id, "project": project, "node_id": node_id, "type": type,
            "since": parse_since(since_)}


@router.get("")
async def list_events(events: Events, session_id: str | None = None, project: str | None = None,
                      node_id: str | None = None, type: str | None = None, since: str | None = None,
                      limit: Limit = 100, offset: Offset = 0,
                      order: str = Query("asc", pattern="^(asc|desc)$"), after: After = None,
                      before: Before = None) -> JSONResponse:
    req = cursor_page(limit, offset, after, before, EVENT_CURSOR)
    page, total, estimate = await events.page(_filters(session_id, project, node_id, type, since), req, order)
    return ok(page.items, meta=page_meta(page, req, total, estimate))


@router.get("/stream")
async def stream_events(events: Events, request: Request, session_id: str | None = None, project: str | None = None,
                        node_id: str | None = None, type: str | None = None,
                        since: str | None = None) -> StreamingResponse:
    f = _filters(session_id, project, node_id, type, since)
    try:
        last_seen = parse_last_event_id(request.headers.get("last-event-id"))
    except LastEventIdError as exc:
        raise ApiError("VALIDATION_ERROR", str(exc)) from None
    return StreamingResponse(events.stream(f, last_seen), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
