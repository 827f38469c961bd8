"""SQL for the ``commands`` and ``command_idempotency`` tables."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from halswarm.store.repos.jsonfields import _j, _load_json


def insert_command(conn: sqlite3.Connection, c: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO commands(command_id, type, target, args, node_id, status, output, error, actor,"
        " idempotency_key, created_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(command_id) DO UPDATE SET status=excluded.status, output=excluded.output,"
        " error=excluded.error, finished_at=excluded.finished_at, node_id=excluded.node_id",
        (
            c["command_id"], c["type"], _j(c["target"]), _j(c["args"]), c.get("node_id"), c["status"],
            _j(c.get("output")), c.get("error"), c["actor"], c.get("idempotency_key"), c["created_at"],
            c.get("finished_at"),
        ),
    )


def get_idempotent(conn: sqlite3.Connection, key_hash: str, now: float) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT result FROM command_idempotency WHERE key_hash=? AND expires_at>?", (key_hash, now)
    ).fetchone()
    return _load_json(row[0], None) if row else None


def put_idempotent(conn: sqlite3.Connection, key_hash: str, command_id: str, result: dict[str, Any],
                   expires_at: float) -> None:
    conn.execute(
        "INSERT INTO command_idempotency(key_hash, command_id, result, expires_at) VALUES (?,?,?,?)"
        " ON CONFLICT(key_hash) DO UPDATE SET command_id=excluded.command_id, result=excluded.result,"
        " expires_at=excluded.expires_at",
        (key_hash, command_id, _j(result), expires_at),
    )


def get_command(conn: sqlite3.Connection, command_id: str) -> dict[str, Any] | None:
    """One row of the commands table, shaped for the API (JSON columns decoded, times ISO-8601)."""
    from halswarm.core.timeutil import iso

    row = conn.execute("SELECT * FROM commands WHERE command_id=?", (command_id,)).fetchone()
    if row is None:
        return None

    def j(v: Any) -> Any:
        try:
            return json.loads(v) if v is not None else None
        except ValueError:
            return v

    return {"command_id": row["command_id"], "type": row["type"], "target": j(row["target"]),
            "args": j(row["args"]), "node_id": row["node_id"], "status": row["status"], "output": j(row["output"]),
            "error": row["error"], "actor": row["actor"], "created_at": iso(row["created_at"]),
            "finished_at": iso(row["finished_at"])}
