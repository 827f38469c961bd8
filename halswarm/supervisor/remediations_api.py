"""Remediation records of the HTTP API (SPEC 6/8).

- ``GET /api/v1/remediations?incident=&status=&host=&since=&limit=&offset=``: stored reports, newest
  first, each the report itself plus ``received_at`` and ``actor``; ``meta`` has total/limit/offset.
- ``POST /api/v1/remediations`` (a report of ``halswarm.core.remediation.report``): validated, stored
  (201), audited, and routed as the event ``remediation.completed`` or, when the run failed or was
  escalated, ``remediation.escalated``. Re-posting the same report id answers 409.

Wire it in ``build_app``: ``include_remediation_routes(app, sup)``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from halswarm.core.remediation.report import STATUSES, redact, validate_report
from halswarm.core.roles import Role
from halswarm.store.repos.remediations import insert_remediation
from halswarm.supervisor.apikit.deps import (
    Limit,
    Offset,
    actor_of,
    client_actor_of,
    page,
    parse_since,
    role_dependencies,
)
from halswarm.supervisor.apikit.envelope import ApiError, ok

if TYPE_CHECKING:
    from halswarm.supervisor.app import Supervisor

ESCALATING = ("failed", "escalated")
MAX_REPORT_BYTES = 1_000_000


def _row(r: sqlite3.Row) -> dict[str, Any]:
    try:
        report = json.loads(r["report"])
    except ValueError:
        report = {}
    return report | {"id": r["id"], "received_at": r["received_at"], "actor": r["actor"]}


def _query(conn: sqlite3.Connection, f: dict[str, Any], limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    where, args = [], []
    for col in ("incident", "status"):
        if f.get(col):
            where.append(f"{col} = ?")
            args.append(f[col])
    if f.get("host"):
        where.append("EXISTS (SELECT 1 FROM json_each(remediations.hosts) WHERE json_each.value = ?)")
        args.append(f["host"])
    if f.get("since") is not None:
        where.append("received_at >= ?")
        args.append(f["since"])
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = conn.execute(f"SELECT COUNT(*) FROM remediations{clause}", args).fetchone()[0]
    rows = conn.execute(f"SELECT * FROM remediations{clause} ORDER BY received_at DESC, rowid DESC LIMIT ? OFFSET ?",
                        [*args, limit, offset]).fetchall()
    return [_row(r) for r in rows], int(total)


def include_remediation_routes(app: FastAPI, sup: Supervisor) -> None:
    if getattr(app.state, "remediation_routes_included", False):
        return
    app.state.remediation_routes_included = True

    need = role_dependencies()

    @app.get("/api/v1/remediations", dependencies=need[Role.viewer], tags=["remediations"])
    async def list_remediations(incident: str | None = None, status: str | None = None, host: str | None = None,
                                since: str | None = None, limit: Limit = 100, offset: Offset = 0) -> JSONResponse:
        limit, offset = page(limit, offset)
        if status and status not in STATUSES:
            raise ApiError("VALIDATION_ERROR", f"status must be one of {', '.join(STATUSES)}")
        f = {"incident": incident, "status": status, "host": host, "since": parse_since(since)}
        items, total = await sup.reader.run(lambda c: _query(c, f, limit, offset))
        return ok(items, meta={"total": total, "limit": limit, "offset": offset})

    @app.post("/api/v1/remediations", dependencies=need[Role.operator], tags=["remediations"], status_code=201)
    async def post_remediation(request: Request) -> JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_REPORT_BYTES:
            raise ApiError("PAYLOAD_TOO_LARGE", f"report exceeds {MAX_REPORT_BYTES} bytes")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ApiError("BAD_REQUEST", "body must be JSON") from None
        problems = validate_report(body)
        if problems:
            raise ApiError("VALIDATION_ERROR", "invalid remediation report: " + "; ".join(problems[:10]))
        report = redact(body)
        actor, ip = actor_of(request)
        client_actor = client_actor_of(request)
        now = time.time()
        hosts = [str(h) for h in report["hosts"]]
        rid = str(report["id"])[:100]

        def write(conn: sqlite3.Connection) -> bool:
            return insert_remediation(conn, report, actor=actor, now=now, ip_address=ip,
                                              client_actor=client_actor)

        if not await sup.writer.run(write):
            raise ApiError("CONFLICT", f"remediation {rid} already recorded")
        ev_type = "remediation.escalated" if report["status"] in ESCALATING else "remediation.completed"
        await sup.ingestor.emit_stored(hosts[0] if len(hosts) == 1 else None, ev_type, {
            "id": rid, "incident": report["incident"], "severity": report["severity"], "status": report["status"],
            "decision": report["decision"], "hosts": hosts, "check": report["check"],
            "duration_s": report["duration_s"], "error": report.get("error"),
            **({"escalation": {k: report["escalation"].get(k) for k in ("bundle", "sha256", "size", "collected_at",
                                                                        "error")}}
               if isinstance(report.get("escalation"), dict) else {}),
        })
        return ok(report | {"id": rid, "received_at": now, "actor": actor}, status=201)
