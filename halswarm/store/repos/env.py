"""The env tables (issue 9): manifests (``env_manifests``), latest check per node and project
(``env_status``), the history of checks, provisions and approvals (``env_runs``) and the risky items
waiting for approval (``env_pending``). Every function takes the connection it runs on (the writer's or a
reader's) and returns plain dicts."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from halswarm.core.timeutil import iso
from halswarm.store.repos.jsonfields import _j, _load_json

RUNS_RETENTION_S = 90 * 86400  # env_runs older than this are dropped when a run is added


def _load(text: Any) -> Any:
    return _load_json(text, None)


# --------------------------------------------------------------------------- env_manifests

def latest_manifest(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The current manifest (highest version), or None before the first PUT."""
    row = conn.execute("SELECT * FROM env_manifests ORDER BY version DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return {"version": row["version"], "document": _load(row["document"]), "format": row["format"],
            "digest": row["digest"], "actor": row["actor"], "created_at": row["created_at"]}


def add_manifest(conn: sqlite3.Connection, doc: Mapping[str, Any], fmt: str, digest: str,
                 actor: str) -> dict[str, Any] | None:
    """Store ``doc`` as the next version; the stored record."""
    conn.execute("INSERT INTO env_manifests(document, format, digest, actor, created_at) VALUES (?,?,?,?,?)",
                 (_j(doc), fmt, digest, actor, time.time()))
    return latest_manifest(conn)


# --------------------------------------------------------------------------- env_status

def status_rows(conn: sqlite3.Connection, node_id: str | None = None,
                project: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM env_status WHERE 1=1"
    params: list[Any] = []
    if node_id:
        sql, params = sql + " AND node_id=?", [*params, node_id]
    if project:
        sql, params = sql + " AND project=?", [*params, project]
    rows = conn.execute(sql + " ORDER BY node_id, project", params).fetchall()
    return [{"node_id": r["node_id"], "project": r["project"], "status": r["status"],
             "manifest_version": r["manifest_version"], "result": _load(r["result"]) or {},
             "checked_at": r["checked_at"]} for r in rows]


def forget_status(conn: sqlite3.Connection, node_id: str, keep: Iterable[str]) -> None:
    """Drop the node's stored checks of every project not in ``keep``."""
    keep = sorted(keep)
    if keep:
        marks = ",".join("?" * len(keep))
        conn.execute(f"DELETE FROM env_status WHERE node_id=? AND project NOT IN ({marks})", (node_id, *keep))
    else:
        conn.execute("DELETE FROM env_status WHERE node_id=?", (node_id,))


def store_checks(conn: sqlite3.Connection, node_id: str, results: Iterable[Mapping[str, Any]], actor: str,
                 command_id: str | None, now: float) -> None:
    """The latest check per project of the node, and each one in the run history."""
    for r in results:
        conn.execute("INSERT INTO env_status(node_id, project, status, manifest_version, result, checked_at) "
                     "VALUES (?,?,?,?,?,?) ON CONFLICT(node_id, project) DO UPDATE SET status=excluded.status, "
                     "manifest_version=excluded.manifest_version, result=excluded.result, "
                     "checked_at=excluded.checked_at",
                     (node_id, r["project"], str(r.get("status") or "unknown"), r.get("manifest_version"), _j(r),
                      now))
        add_run(conn, node_id, r["project"], "check", str(r.get("status")), r, actor, command_id)


# --------------------------------------------------------------------------- env_runs

def add_run(conn: sqlite3.Connection, node_id: str, project: str | None, kind: str, status: str, result: Any,
            actor: str, command_id: str | None) -> None:
    """One check, provision or approval in the history (and drop what is past the retention)."""
    now = time.time()
    conn.execute("INSERT INTO env_runs(node_id, project, kind, status, result, actor, command_id, created_at) "
                 "VALUES (?,?,?,?,?,?,?,?)", (node_id, project, kind, status, _j(result), actor, command_id, now))
    conn.execute("DELETE FROM env_runs WHERE created_at < ?", (now - RUNS_RETENTION_S,))


def runs(conn: sqlite3.Connection, node_id: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM env_runs WHERE node_id=? ORDER BY id DESC LIMIT ?", (node_id, limit))
    return [{"id": r["id"], "project": r["project"], "kind": r["kind"], "status": r["status"], "actor": r["actor"],
             "command_id": r["command_id"], "created_at": iso(r["created_at"]), "result": _load(r["result"])}
            for r in rows.fetchall()]


# --------------------------------------------------------------------------- env_pending

def pending_rows(conn: sqlite3.Connection, node_id: str | None = None,
                 statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    sql = "SELECT * FROM env_pending WHERE 1=1"
    params: list[Any] = []
    if node_id:
        sql, params = sql + " AND node_id=?", [*params, node_id]
    if statuses:
        sql += f" AND status IN ({','.join('?' * len(statuses))})"
        params += list(statuses)
    return [_pending_row(r) for r in conn.execute(sql + " ORDER BY node_id, item_id", params).fetchall()]


def _pending_row(r: Any) -> dict[str, Any]:
    detail = _load(r["detail"]) or {}
    return {"node_id": r["node_id"], "id": r["item_id"], "token": r["token"], "project": r["project"],
            "category": r["category"], "item": r["item"], "command": r["command"], "status": r["status"],
            "reason": detail.get("reason"), "become": bool(detail.get("become")), "check": detail.get("check") or [],
            "chdir": detail.get("chdir") or "", "result": _load(r["result"]),
            "approvable": not detail.get("untrusted") and bool(r["command"]),
            "reported_command": detail.get("reported_command"),
            "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])}


PENDING_DETAIL = ("reason", "become", "check", "chdir", "untrusted", "reported_command")


def offer_pending(conn: sqlite3.Connection, node_id: str, project: str, items: Iterable[Mapping[str, Any]],
                  now: float) -> list[Mapping[str, Any]]:
    """Record the risky items a provision left for approval; those already pending or running are kept as
    they are, and the project's open items not offered again are resolved. The newly pending ones."""
    new: list[Mapping[str, Any]] = []
    offered = set()
    for p in items:
        offered.add(p.get("id"))
        old = conn.execute("SELECT status FROM env_pending WHERE node_id=? AND item_id=?",
                           (node_id, p["id"])).fetchone()
        if old is not None and old["status"] in ("pending", "running"):
            continue
        detail = {k: p.get(k) for k in PENDING_DETAIL if k in p}
        conn.execute("INSERT INTO env_pending(node_id, item_id, token, project, category, item, command, "
                     "detail, status, result, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                     "ON CONFLICT(node_id, item_id) DO UPDATE SET token=excluded.token, "
                     "command=excluded.command, detail=excluded.detail, status='pending', result=NULL, "
                     "updated_at=excluded.updated_at",
                     (node_id, p["id"], str(p.get("token") or ""), project, str(p.get("category")),
                      str(p.get("item")), str(p.get("command") or ""), _j(detail), "pending", None, now, now))
        new.append(p)
    for row in conn.execute("SELECT item_id FROM env_pending WHERE node_id=? AND project=? AND "
                            "status IN ('pending','failed')", (node_id, project)).fetchall():
        if row["item_id"] not in offered:
            conn.execute("UPDATE env_pending SET status='resolved', updated_at=? WHERE node_id=? AND item_id=?",
                         (now, node_id, row["item_id"]))
    return new


def set_pending(conn: sqlite3.Connection, node_id: str, item_id: str, status: str, result: Any) -> None:
    conn.execute("UPDATE env_pending SET status=?, result=?, updated_at=? WHERE node_id=? AND item_id=?",
                 (status, _j(result) if result is not None else None, time.time(), node_id, item_id))
