"""SQL for the ``remediations`` table (each stored report gets its audit row) and the throttle marks of
the automatic runs (``auto_remediation_state``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from halswarm.store.dialect import is_pg, json_array_has
from halswarm.store.repos.audit import insert_audit


def insert_remediation(conn: sqlite3.Connection, report: dict[str, Any], *, actor: str, now: float,
                       audit_args: dict[str, Any] | None = None, ip_address: str | None = None,
                       client_actor: str | None = None) -> bool:
    """Store one remediation report (validated and redacted by the caller) with its audit row; False when
    a report with this id is already recorded (nothing written)."""
    hosts = [str(h) for h in report["hosts"]]
    rid = str(report["id"])[:100]
    cur = conn.execute(
        "INSERT INTO remediations(id, incident, severity, status, decision, hosts, check_mode,"
        " duration_s, actor, received_at, report) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        (rid, report["incident"], report["severity"], report["status"], report["decision"], json.dumps(hosts),
         int(bool(report["check"])), float(report["duration_s"]), actor, now, json.dumps(report)))
    if cur.rowcount:
        insert_audit(conn, {"timestamp": now, "actor": actor, "action": "remediation", "target": report["incident"],
                            "args": {"id": rid, "hosts": hosts, **(audit_args or {})}, "result": report["status"],
                            "error": report.get("error"), "duration_ms": round(float(report["duration_s"]) * 1000),
                            "ip_address": ip_address, "client_actor": client_actor})
    return bool(cur.rowcount)


def _row(r: sqlite3.Row) -> dict[str, Any]:
    try:
        report: dict[str, Any] = json.loads(r["report"])
    except ValueError:
        report = {}
    return report | {"id": r["id"], "received_at": r["received_at"], "actor": r["actor"]}


def query_remediations(conn: sqlite3.Connection, f: Mapping[str, Any], limit: int,
                       offset: int) -> tuple[list[dict[str, Any]], int]:
    """Stored reports matching `f` (incident, status, host, since), newest first, and their total."""
    where, args = [], []
    for col in ("incident", "status"):
        if f.get(col):
            where.append(f"{col} = ?")
            args.append(f[col])
    if f.get("host"):
        where.append(json_array_has(conn, "remediations.hosts"))
        args.append(f["host"])
    if f.get("since") is not None:
        where.append("received_at >= ?")
        args.append(f["since"])
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = conn.execute(f"SELECT COUNT(*) FROM remediations{clause}", args).fetchone()[0]
    arrival = "received_seq" if is_pg(conn) else "rowid"  # the order reports came in
    rows = conn.execute(f"SELECT * FROM remediations{clause} ORDER BY received_at DESC, {arrival} DESC"
                        " LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
    return [_row(r) for r in rows], int(total)


def load_auto_started(conn: sqlite3.Connection) -> dict[tuple[str, str], float]:
    """When each (incident, host) last started an automatic run."""
    return {(r[0], r[1]): float(r[2]) for r in conn.execute(
        "SELECT incident, host, started_at FROM auto_remediation_state")}


def save_auto_started(conn: sqlite3.Connection, incident: str, host: str, at: float, reason: str) -> None:
    conn.execute(
        "INSERT INTO auto_remediation_state(incident, host, started_at, finished_at, status, report_id, reason)"
        " VALUES (?,?,?,NULL,NULL,NULL,?) ON CONFLICT(incident, host) DO UPDATE SET started_at=excluded.started_at,"
        " finished_at=NULL, status=NULL, report_id=NULL, reason=excluded.reason", (incident, host, at, reason))


def store_auto_report(conn: sqlite3.Connection, report: Mapping[str, Any], *, actor: str, now: float, reason: str,
                      host: str) -> None:
    """Insert a report like POST /api/v1/remediations does (row + audit), and finish the throttle row."""
    rid = str(report["id"])[:100]
    insert_remediation(conn, dict(report), actor=actor, now=now, audit_args={"trigger": reason})
    conn.execute("UPDATE auto_remediation_state SET finished_at=?, status=?, report_id=? WHERE incident=? AND host=?",
                 (now, report["status"], rid, report["incident"], host))
