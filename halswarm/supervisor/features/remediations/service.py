"""Remediation reports: store one (validated, redacted, audited, routed) and page through the history."""

from __future__ import annotations

import json
import time
from typing import Any

from halswarm.core.remediation.report import STATUSES, redact, validate_report
from halswarm.core.remediation.routing import event_node, route
from halswarm.store.reader import Reader
from halswarm.store.repos.remediations import insert_remediation, query_remediations
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.remediations.metrics import RemediationMetrics
from halswarm.supervisor.runtime.ingest import Ingestor

MAX_REPORT_BYTES = 1_000_000


def check_status(status: str | None) -> None:
    """A `status` filter is one of the report statuses (or absent)."""
    if status and status not in STATUSES:
        raise ApiError("VALIDATION_ERROR", f"status must be one of {', '.join(STATUSES)}")


class RemediationsService:
    def __init__(self, writer: Writer, reader: Reader, ingestor: Ingestor,
                 metrics: RemediationMetrics | None = None) -> None:
        self.metrics = metrics
        self.writer = writer
        self.reader = reader
        self.ingestor = ingestor

    async def history(self, *, incident: str | None, status: str | None, host: str | None, since: float | None,
                      limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Stored reports, newest first, each with `received_at` and `actor`, and their total."""
        check_status(status)
        f = {"incident": incident, "status": status, "host": host, "since": since}
        return await self.reader.run(lambda c: query_remediations(c, f, limit, offset))

    async def record(self, raw: bytes, *, actor: str, ip: str | None, client_actor: str | None) -> dict[str, Any]:
        """Validate, redact and store a posted report (409 when its id is known), then route its event."""
        report = redact(self._parse(raw))
        now = time.time()

        def write(conn: Any) -> bool:
            return insert_remediation(conn, report, actor=actor, now=now, ip_address=ip, client_actor=client_actor)

        rid = str(report["id"])[:100]
        if not await self.writer.run(write):
            raise ApiError("CONFLICT", f"remediation {rid} already recorded")
        if self.metrics is not None:
            self.metrics.recorded(report)
        ev_type, _level, data = route(report)
        await self.ingestor.emit_stored(event_node(data["hosts"]), ev_type, data)
        return report | {"id": rid, "received_at": now, "actor": actor}

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        if len(raw) > MAX_REPORT_BYTES:
            raise ApiError("PAYLOAD_TOO_LARGE", f"report exceeds {MAX_REPORT_BYTES} bytes")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ApiError("BAD_REQUEST", "body must be JSON") from None
        problems = validate_report(body)
        if problems:
            raise ApiError("VALIDATION_ERROR", "invalid remediation report: " + "; ".join(problems[:10]))
        return body
