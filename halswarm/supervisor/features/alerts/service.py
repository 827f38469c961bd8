"""Alertmanager alerts in, remediation or a routed notification out, every alert audited.

Per alert (deduplicated by fingerprint): a firing alert of an incident listed in `remediation.auto` starts
the remediation through the auto-remediation engine (`AlertRemediator`, same throttle, persisted); any
other firing alert is emitted as ``alert.firing`` carrying the exact ``halctl remediate`` command (routed by
`routes` like every event); a resolved alert is emitted as ``alert.resolved`` (a run in flight is left to
finish). Alerts that name no known incident or no valid host are ignored with a reason.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from halswarm.core.alerts import (
    HOST_PATTERN,
    AlertPayloadError,
    Ignored,
    Mapped,
    Payload,
    alert_time,
    map_payload,
    parse_payload,
    remediate_command,
    run_target,
)
from halswarm.core.remediation.catalog import BY_ID, IDS
from halswarm.store.repos.audit import insert_audit
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.alerts.settings import AlertSettings
from halswarm.supervisor.runtime.ingest import Ingestor

MAX_BODY_BYTES = 1_000_000


class AlertRemediator(Protocol):
    async def on_alert(self, incident: str, host: str, limit: str, reason: str) -> str:
        """"started", "throttled" or "not_auto"."""
        ...

    async def check_run(self, incident: str, host: str, limit: str, actor: str) -> dict[str, Any]:
        """Run the check mode of an allowed incident now and answer its outcome (`action` "checked" or
        "busy")."""
        ...


class Detections(Protocol):
    """Where firing and resolved alerts are noted for the time-to-repair metric (`RemediationMetrics`)."""

    def detected(self, incident: str, host: str | None, at: float | None) -> None: ...

    def resolved(self, incident: str, host: str | None) -> None: ...


class AlertsService:
    def __init__(self, settings: AlertSettings, remediator: AlertRemediator, ingestor: Ingestor,
                 writer: Writer, detections: Detections | None = None) -> None:
        self.detections = detections
        self.settings = settings
        self.remediator = remediator
        self.ingestor = ingestor
        self.writer = writer

    def parse(self, raw: bytes) -> Payload:
        """The payload, or a one-line 400."""
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError("PAYLOAD_TOO_LARGE", f"alert payload exceeds {MAX_BODY_BYTES} bytes")
        try:
            doc = json.loads(raw or b"null")
        except ValueError:
            raise ApiError("BAD_REQUEST", "body must be JSON (Alertmanager webhook payload)") from None
        try:
            return parse_payload(doc, max_alerts=self.settings.max_alerts)
        except AlertPayloadError as exc:
            raise ApiError("VALIDATION_ERROR", f"invalid alert payload: {exc}") from None

    async def receive(self, raw: bytes, *, actor: str, ip: str | None, client_actor: str | None
                      ) -> dict[str, Any]:
        """Act on every alert of the payload; answers what was done with each."""
        payload = self.parse(raw)
        results = [await self._act(m, payload) for m in map_payload(payload, IDS)]
        now = time.time()
        rows = [{"timestamp": now, "actor": actor, "action": "alert", "target": r.get("incident") or "-",
                 "args": {k: r.get(k) for k in ("status", "fingerprint", "alertname", "host", "command")}
                 | {"receiver": payload.receiver, "group_key": payload.group_key[:200]},
                 "result": r["action"], "error": r.get("reason"), "ip_address": ip, "client_actor": client_actor}
                for r in results]

        def audit(conn: Any) -> None:
            for row in rows:
                insert_audit(conn, row)

        if rows:
            await self.writer.run(audit)
        return {"received": len(payload.alerts), "truncated": payload.truncated_alerts, "results": results}

    async def _act(self, m: Mapped | Ignored, payload: Payload) -> dict[str, Any]:
        a = m.alert
        out: dict[str, Any] = {"fingerprint": a.fingerprint, "status": a.status,
                               "alertname": a.labels.get("alertname", "")}
        if isinstance(m, Ignored):
            return out | {"incident": a.labels.get("incident") or None, "action": "ignored", "reason": m.reason}
        incident = BY_ID[m.incident]
        target = run_target(incident.hosts, m.host, self.settings.supervisor_host)
        host, limit = target if isinstance(target, tuple) else (m.host, None)
        command = remediate_command(m.incident, self.settings.inventory, limit)
        out |= {"incident": m.incident, "host": host, "command": command}
        data = {"incident": m.incident, "host": host, "severity": incident.severity, "command": command,
                "alertname": out["alertname"], "fingerprint": a.fingerprint, "receiver": payload.receiver,
                "summary": a.annotations.get("summary", "")[:500], "generator_url": a.generator_url,
                "starts_at": a.starts_at}
        if a.status == "resolved":
            if self.detections is not None:
                self.detections.resolved(m.incident, host)
            await self.ingestor.emit_stored(host, "alert.resolved", data | {"ends_at": a.ends_at})
            return out | {"action": "resolved"}
        reason = f"alert {out['alertname'] or m.incident} firing (fingerprint {a.fingerprint or '-'})"
        if self.detections is not None:
            self.detections.detected(m.incident, host, alert_time(a.starts_at))
        if m.incident in self.settings.auto and isinstance(target, tuple):
            action = await self.remediator.on_alert(m.incident, target[0], target[1], reason)
            if action in ("started", "throttled"):
                return out | {"action": action}
        if m.incident in self.settings.auto and isinstance(target, str):
            data["not_started"] = out["reason"] = target
        await self.ingestor.emit_stored(host, "alert.firing", data)
        return out | {"action": "routed"}

    async def request(self, incident: str, host: str | None, *, check: bool, actor: str) -> dict[str, Any]:
        """A remediation asked for by a person (ChatOps `/remediate`), on the path of a firing alert: an
        incident listed in `remediation.auto` is started by the auto engine (same throttle, same record),
        and a check of an incident listed there or in `remediation.chat_check` is run at once and awaited
        (`check_run`: its report status is the answer); anything else is routed as ``alert.firing`` carrying
        the exact `halctl remediate` command (with ``--check``). The config is the only consent: a chat user
        (admin) never starts a repair the supervisor may not start by itself, and checks only what is listed.
        Unknown incident or host: VALIDATION_ERROR."""
        if incident not in BY_ID:
            raise ApiError("VALIDATION_ERROR", f"unknown incident {incident[:64]!r} (see halctl remediate list)")
        if host is not None and not HOST_PATTERN.match(host):
            raise ApiError("VALIDATION_ERROR", f"host {host[:64]!r} is not a node id or inventory host name")
        target = run_target(BY_ID[incident].hosts, host, self.settings.supervisor_host)
        if isinstance(target, str):
            raise ApiError("VALIDATION_ERROR", target)
        throttle_host, limit = target
        command = remediate_command(incident, self.settings.inventory, limit) + (" --check" if check else "")
        reason = f"requested by {actor}" + (" (check mode)" if check else "")
        out: dict[str, Any] = {"incident": incident, "host": throttle_host, "command": command, "check": check}
        if check and (incident in self.settings.auto or incident in self.settings.chat_check):
            ran = await self.remediator.check_run(incident, throttle_host, limit, actor)
            if ran.get("action") in ("checked", "busy"):
                return out | ran
        if incident in self.settings.auto and not check:
            action = await self.remediator.on_alert(incident, throttle_host, limit, reason)
            if action in ("started", "throttled"):
                return out | {"action": action}
        await self.ingestor.emit_stored(throttle_host, "alert.firing", {
            "incident": incident, "host": throttle_host, "severity": BY_ID[incident].severity, "command": command,
            "alertname": "chatops", "fingerprint": "", "receiver": actor, "summary": reason, "generator_url": "",
            "starts_at": ""})
        return out | {"action": "routed"}
