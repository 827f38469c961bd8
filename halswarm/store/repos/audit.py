"""SQL for the ``audit_log`` table; secret values are redacted before storage."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from halswarm.core.secret_values import SECRETS
from halswarm.store.repos.jsonfields import _j, _load_json


def insert_audit(conn: sqlite3.Connection, a: dict[str, Any]) -> None:
    """One audit row; configured secret values in it are redacted by value (SECRETS) before storage."""
    a = SECRETS.scrub_data(a)
    conn.execute(
        "INSERT INTO audit_log(timestamp, actor, action, target, args, result, error, duration_ms, ip_address,"
        " command_id, client_actor) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            a.get("timestamp", time.time()), a["actor"], a["action"], a["target"], _j(a.get("args")),
            a["result"], a.get("error"), a.get("duration_ms"), a.get("ip_address"), a.get("command_id"),
            a.get("client_actor"),
        ),
    )


def query_audit(conn: sqlite3.Connection, filters: dict[str, Any], limit: int, offset: int
                ) -> tuple[list[dict[str, Any]], int]:
    from halswarm.core.timeutil import iso

    where, args = [], []
    for col in ("actor", "action"):
        if filters.get(col):
            where.append(f"{col}=?")
            args.append(filters[col])
    if filters.get("since") is not None:
        where.append("timestamp>=?")
        args.append(filters["since"])
    w = (" WHERE " + " AND ".join(where)) if where else ""
    total = conn.execute(f"SELECT COUNT(*) FROM audit_log{w}", args).fetchone()[0]
    rows = conn.execute(
        f"SELECT * FROM audit_log{w} ORDER BY timestamp DESC, id DESC LIMIT ? OFFSET ?", [*args, limit, offset]
    ).fetchall()
    out = [
        {
            "id": r["id"],
            "timestamp": iso(r["timestamp"]),
            "actor": r["actor"],
            "client_actor": r["client_actor"],
            "action": r["action"],
            "target": r["target"],
            "args": _load_json(r["args"], None),
            "result": r["result"],
            "error": r["error"],
            "duration_ms": r["duration_ms"],
            "ip_address": r["ip_address"],
            "command_id": r["command_id"],
        }
        for r in rows
    ]
    return out, int(total)
