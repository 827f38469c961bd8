"""`POST /api/v1/alerts`: Alertmanager's webhook receiver (docs/monitoring.md).

Callers: the dedicated `alerts.token` (audit actor ``alertmanager``; it opens no other route) or an admin.
The body is Alertmanager's webhook payload (version "4"); a malformed one answers 400 with one line.
The answer: ``{received, truncated, results: [{fingerprint, status, alertname, incident, host, command,
action: started|throttled|routed|resolved|ignored, reason?}]}``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from halswarm.core.alerts import MAX_ALERTS
from halswarm.supervisor.apikit.deps import ALERT_POSTER, CallerDep, service
from halswarm.supervisor.apikit.envelope import ok
from halswarm.supervisor.features.alerts.service import AlertsService

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
Alerts = Annotated[AlertsService, service(AlertsService)]


class AlertmanagerAlert(BaseModel):
    status: str = Field(pattern="^(firing|resolved)$")
    labels: dict[str, str] = Field(description="`incident` (a runbook id) and `node` or `instance` are read")
    annotations: dict[str, str] = {}
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class AlertmanagerPayload(BaseModel):
    """Alertmanager's webhook payload (documented here; parsed strictly by halswarm.core.alerts)."""

    version: str = Field(pattern="^4$")
    receiver: str
    status: str = Field(pattern="^(firing|resolved)$")
    alerts: list[AlertmanagerAlert] = Field(max_length=MAX_ALERTS)
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""
    groupKey: str = ""
    truncatedAlerts: int = 0


def _schema() -> dict[str, object]:
    """The payload's JSON Schema with the alert's schema inlined (no dangling `$defs` reference)."""
    schema = AlertmanagerPayload.model_json_schema()
    schema["properties"]["alerts"]["items"] = schema.pop("$defs")["AlertmanagerAlert"]
    return schema


_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": _schema()}}}}


@router.post("", dependencies=[ALERT_POSTER], openapi_extra=_BODY)
async def post_alerts(alerts: Alerts, request: Request, caller: CallerDep) -> JSONResponse:
    done = await alerts.receive(await request.body(), actor=caller.actor, ip=caller.ip,
                                client_actor=caller.client_actor)
    return ok(done)
