"""SQL for the ``remediations`` table (each stored report gets its audit row)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from halswarm.store.repos.audit import insert_audit


def insert_remediation(conn: sqlite3.Connection, report: dict[str, Any], *, actor: str, now: float,
                       audit_args: dict[str, Any] | None = None, ip_address: str | None = None,
                       client_actor: str | None = None) -> bool:
    """Store one remediation report (validated and redacted by the caller) with its audit row; False when
    a report with this id is already recorded (nothing written)."""
    hosts = [str(h) for h in report["hosts"]]
    rid = str(report["id"])[:100]
    cur = conn.execute(
        "INSERT OR IGNORE INTO remediations(id, incident, severity, status, decision, hosts, check_mode,"
        " duration_s, actor, received_at, report) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (rid, report["incident"], report["severity"], report["status"], report["decision"], json.dumps(hosts),
         int(bool(report["check"])), float(report["duration_s"]), actor, now, json.dumps(report)))
    if cur.rowcount:
        insert_audit(conn, {"timestamp": now, "actor": actor, "action": "remediation", "target": report["incident"],
                            "args": {"id": rid, "hosts": hosts, **(audit_args or {})}, "result": report["status"],
                            "error": report.get("error"), "duration_ms": round(float(report["duration_s"]) * 1000),
                            "ip_address": ip_address, "client_actor": client_actor})
    return bool(cur.rowcount)
