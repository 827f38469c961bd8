"""Forwarded commands (PostgreSQL only, migrations_pg/004): a command for a node whose agent is connected
to another supervisor of the same database.

The asking supervisor queues a row and NOTIFYs `CHANNEL`; the supervisor holding the node claims it
(`claim_forwards`: one UPDATE over rows locked with SKIP LOCKED, so exactly one claimer), sends it to
its agent and writes the result (`finish_forward`, NOTIFY again); the asker reads it
(`forward_states`) and deletes the row. NOTIFY only wakes: every side also polls, so a lost
notification costs one poll interval. Deadlines are on the database's clock. The arguments are cleared
when the row is claimed, so they sit in the table only while the command waits for its holder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

CHANNEL = "hal_command_forwards"
DB_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
CLAIM_BATCH = 64


def queue_forward(conn: Any, row: dict[str, Any], remaining: float) -> None:
    """Queue a command (`row`: id, node_id, type, target, args as JSON text, timeout_ms, requested_by,
    actor) to run within `remaining` seconds from now, and wake the supervisors (at COMMIT)."""
    conn.execute(
        "INSERT INTO command_forwards (id, node_id, type, target, args, timeout_ms, requested_by, actor, status,"
        f" deadline, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', {DB_NOW} + ?, {DB_NOW})",
        (row["id"], row["node_id"], row["type"], row["target"], row["args"], int(row["timeout_ms"]),
         row["requested_by"], row["actor"], float(remaining)))
    conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"queued {row['node_id']}"))


def has_queued(conn: Any, nodes: Iterable[str]) -> bool:
    """Whether a live queued command waits for one of `nodes` (a read, before claiming in a write)."""
    row = conn.execute(f"SELECT 1 FROM command_forwards WHERE status = 'queued' AND node_id = ANY(?)"
                       f" AND deadline > {DB_NOW} LIMIT 1", (list(nodes),)).fetchone()
    return row is not None


def claim_forwards(conn: Any, nodes: Iterable[str], owner: str) -> list[dict[str, Any]]:
    """Claim the queued, unexpired commands of `nodes` for `owner`; each row is claimed by one
    supervisor only. Returns them with `remaining` (seconds to their deadline) and their arguments,
    which the table no longer keeps."""
    rows = conn.execute(
        "WITH c AS (SELECT id, args FROM command_forwards WHERE status = 'queued' AND node_id = ANY(?)"
        f" AND deadline > {DB_NOW} ORDER BY created_at LIMIT {CLAIM_BATCH} FOR UPDATE SKIP LOCKED)"
        f" UPDATE command_forwards f SET status = 'running', claimed_by = ?, claimed_at = {DB_NOW}, args = NULL"
        " FROM c WHERE f.id = c.id RETURNING f.id, f.node_id, f.type, f.target, c.args, f.timeout_ms,"
        f" f.requested_by, f.actor, f.deadline - {DB_NOW} AS remaining",
        (list(nodes), owner)).fetchall()
    return [{"id": r[0], "node_id": r[1], "type": r[2], "target": r[3], "args": r[4], "timeout_ms": int(r[5]),
             "requested_by": r[6], "actor": r[7], "remaining": float(r[8])} for r in rows]


def finish_forward(conn: Any, forward_id: str, owner: str, result: str) -> bool:
    """Store the result (JSON text) of a command `owner` claimed, and wake the asker; False when the row
    is gone (the asker answered already and deleted it) or was not `owner`'s."""
    cur = conn.execute(f"UPDATE command_forwards SET status = 'done', result = ?, finished_at = {DB_NOW}"
                       " WHERE id = ? AND claimed_by = ? AND status = 'running'", (result, forward_id, owner))
    if cur.rowcount != 1:
        return False
    conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"done {forward_id}"))
    return True


def forward_states(conn: Any, ids: Iterable[str], now: float) -> dict[str, tuple[str, str | None, str | None,
                                                                                  str | None]]:
    """id -> (status, claimed_by, result, owner of the node's live lease or None) of the rows that exist."""
    rows = conn.execute(
        "SELECT f.id, f.status, f.claimed_by, f.result, l.owner FROM command_forwards f LEFT JOIN node_leases l"
        " ON l.node_id = f.node_id AND l.expires_at > ? WHERE f.id = ANY(?)", (now, list(ids))).fetchall()
    return {str(r[0]): (str(r[1]), r[2], r[3], r[4]) for r in rows}


def delete_forward(conn: Any, forward_id: str) -> None:
    conn.execute("DELETE FROM command_forwards WHERE id = ?", (forward_id,))


def purge_forwards(conn: Any, grace: float) -> int:
    """Rows `grace` seconds past their deadline (their asker died before deleting them)."""
    cur = conn.execute(f"DELETE FROM command_forwards WHERE deadline < {DB_NOW} - ?", (float(grace),))
    return int(cur.rowcount)


def held_nodes(conn: Any, now: float) -> dict[str, tuple[str, frozenset[str]]]:
    """node_id -> (owner, its project names as its holder stored them) of every unexpired lease: where a
    command for the node goes, and which projects a project target finds on it."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for r in conn.execute("SELECT l.node_id, l.owner, n.projects FROM node_leases l LEFT JOIN nodes n"
                          " ON n.id = l.node_id WHERE l.expires_at > ?", (now,)):
        out[str(r[0])] = (str(r[1]), _project_names(r[2]))
    return out


def _project_names(text: Any) -> frozenset[str]:
    try:
        projects = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return frozenset()
    if not isinstance(projects, list):
        return frozenset()
    return frozenset(p["name"] for p in projects if isinstance(p, dict) and isinstance(p.get("name"), str))
