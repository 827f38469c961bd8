"""SQL for the ``audit_log`` table; secret values are redacted before storage."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from halswarm.core.paging import Page, PageRequest, window
from halswarm.core.secret_values import SECRETS
from halswarm.store.repos.jsonfields import _j, _load_json
from halswarm.store.repos.keyset import count_capped, keyset_select


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


def _audit_filters(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    where, args = [], []
    for col in ("actor", "action"):
        if filters.get(col):
            where.append(f"{col}=?")
            args.append(filters[col])
    if filters.get("since") is not None:
        where.append("timestamp>=?")
        args.append(filters["since"])
    return (" WHERE " + " AND ".join(where)) if where else "", args


def _audit_to_api(r: sqlite3.Row) -> dict[str, Any]:
    from halswarm.core.timeutil import iso

    return {
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
        "_ts": r["timestamp"],
    }


def page_audit(conn: sqlite3.Connection, filters: dict[str, Any], req: PageRequest
               ) -> tuple[Page[dict[str, Any]], int, bool]:
    """One page of the audit log, newest first by (timestamp, id), with (total, total_is_estimate)."""
    where, args = _audit_filters(filters)
    total, estimate = count_capped(conn, "audit_log", where, args)
    sql, params = keyset_select("audit_log", ("timestamp", "id"), where, args, req, descending=True)
    page = window([_audit_to_api(r) for r in conn.execute(sql, params)], req, lambda a: (a["_ts"], a["id"]))
    for a in page.items:
        del a["_ts"]
    return page, total, estimate


def query_audit(conn: sqlite3.Connection, filters: dict[str, Any], limit: int, offset: int
                ) -> tuple[list[dict[str, Any]], int]:
    page, total, _ = page_audit(conn, filters, PageRequest(limit, offset))
    return page.items, total
