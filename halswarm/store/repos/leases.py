"""Node leases (PostgreSQL only, migrations_pg/002): which supervisor holds a node's agent connection.

A lease is taken on register (the newer connection wins: the agent talks to one supervisor at a time,
so the supervisor it registered with last is the one it is on), renewed with each heartbeat by its
owner only, and released by its owner when the connection ends. A supervisor whose renewal finds the
lease gone to another owner drops its link without writing the node's state (the new owner has it).
"""

from __future__ import annotations

from typing import Any


def take_lease(conn: Any, node_id: str, owner: str, now: float, ttl: float) -> str | None:
    """Take (or renew) `node_id` for `owner` until now+ttl; returns the previous owner when another
    supervisor's lease was still live (taken over), else None."""
    row = conn.execute("SELECT owner, expires_at FROM node_leases WHERE node_id = ? FOR UPDATE",
                       (node_id,)).fetchone()
    conn.execute(
        "INSERT INTO node_leases (node_id, owner, expires_at, acquired_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (node_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at,"
        " acquired_at = excluded.acquired_at",
        (node_id, owner, now + ttl, now))
    if row is not None and row[0] != owner and float(row[1]) > now:
        return str(row[0])
    return None


def renew_lease(conn: Any, node_id: str, owner: str, now: float, ttl: float, vitals: str | None = None) -> bool:
    """Extend the lease if `owner` still holds it, with the heartbeat's agent process figures (`vitals`,
    JSON); False when it was taken over (or swept)."""
    cur = conn.execute("UPDATE node_leases SET expires_at = ?, vitals = ? WHERE node_id = ? AND owner = ?",
                       (now + ttl, vitals, node_id, owner))
    return bool(cur.rowcount == 1)


def release_lease(conn: Any, node_id: str, owner: str) -> bool:
    """Give the lease up; False when `owner` no longer held it (another supervisor has the node)."""
    cur = conn.execute("DELETE FROM node_leases WHERE node_id = ? AND owner = ?", (node_id, owner))
    return bool(cur.rowcount == 1)


def live_leases(conn: Any, now: float) -> dict[str, str]:
    """node_id -> owner of every unexpired lease."""
    return {str(r[0]): str(r[1]) for r in
            conn.execute("SELECT node_id, owner FROM node_leases WHERE expires_at > ?", (now,))}


def drop_owner_leases(conn: Any, owner: str) -> list[str]:
    """At start: leases still recorded for this supervisor's id are its previous run's (it holds no
    connection yet); removed, their nodes returned."""
    rows = conn.execute("DELETE FROM node_leases WHERE owner = ? RETURNING node_id", (owner,)).fetchall()
    return [str(r[0]) for r in rows]


def sweep_expired(conn: Any, now: float, keep: list[str] | None = None) -> list[str]:
    """Remove expired leases (their supervisor died without releasing them) and mark those nodes
    offline; returns the node ids. `keep`: nodes connected to the sweeping supervisor (a heartbeat late
    by a hair renews those; they are not swept)."""
    rows = conn.execute("DELETE FROM node_leases WHERE expires_at <= ? AND NOT (node_id = ANY(?))"
                        " RETURNING node_id", (now, list(keep or []))).fetchall()
    nodes = [str(r[0]) for r in rows]
    for node_id in nodes:
        conn.execute("UPDATE nodes SET status = 'offline' WHERE id = ?", (node_id,))
    return nodes


def held_elsewhere_liveness(conn: Any, now: float, owner: str) -> dict[str, tuple[float | None, str | None,
                                                                               str | None, str | None]]:
    """node_id -> (last heartbeat, resources JSON, vitals JSON, hostname) of the nodes whose live lease
    another supervisor than `owner` holds, as that supervisor stored them (for the leader's engines)."""
    rows = conn.execute(
        "SELECT l.node_id, n.last_heartbeat, n.resources, l.vitals, n.hostname FROM node_leases l"
        " LEFT JOIN nodes n ON n.id = l.node_id WHERE l.expires_at > ? AND l.owner <> ?", (now, owner)).fetchall()
    return {str(r[0]): (float(r[1]) if r[1] is not None else None, r[2], r[3], r[4]) for r in rows}
