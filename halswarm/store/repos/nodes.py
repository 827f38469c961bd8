"""SQL for the ``nodes`` table: upserts, liveness, auth state and the per-node seq high-water mark."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from halswarm.core.model import Node
from halswarm.store.dialect import greatest, is_pg
from halswarm.store.repos.jsonfields import _j


def upsert_node(conn: sqlite3.Connection, n: Node) -> None:
    conn.execute(
        "INSERT INTO nodes(id, hostname, status, version, projects, capabilities, resources, auth_states,"
        " credential_version, last_seq, last_heartbeat, connected_at, first_seen_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(id) DO UPDATE SET hostname=excluded.hostname, status=excluded.status,"
        " version=excluded.version, projects=excluded.projects, capabilities=excluded.capabilities,"
        " resources=excluded.resources, auth_states=excluded.auth_states,"
        " credential_version=excluded.credential_version, last_heartbeat=excluded.last_heartbeat,"
        " connected_at=excluded.connected_at",
        (
            n.id, n.hostname, n.status, n.version, _j(n.projects), _j(n.capabilities), _j(n.resources),
            _j(n.auth_states), n.credential_version, n.last_seq, n.last_heartbeat, n.connected_at,
            n.first_seen_at,
        ),
    )


def update_node_liveness(conn: sqlite3.Connection, node_id: str, status: str, last_heartbeat: float | None,
                         resources: dict[str, float] | None) -> None:
    if resources is None:
        conn.execute("UPDATE nodes SET status=?, last_heartbeat=? WHERE id=?", (status, last_heartbeat, node_id))
    else:
        conn.execute(
            "UPDATE nodes SET status=?, last_heartbeat=?, resources=? WHERE id=?",
            (status, last_heartbeat, _j(resources), node_id),
        )


def update_node_auth(conn: sqlite3.Connection, n: Node) -> None:
    conn.execute(
        "UPDATE nodes SET auth_states=?, credential_version=? WHERE id=?",
        (_j(n.auth_states), n.credential_version, n.id),
    )


def set_node_last_seq(conn: sqlite3.Connection, node_id: str, seq: int) -> None:
    conn.execute(f"UPDATE nodes SET last_seq={greatest(conn, 'last_seq', '?')} WHERE id=?", (seq, node_id))


_PG_LAST_SEQ = ("UPDATE nodes SET last_seq = GREATEST(nodes.last_seq, v.seq) FROM unnest(%b::text[], %b::bigint[])"
                " AS v(id, seq) WHERE nodes.id = v.id")


def set_nodes_last_seq(conn: sqlite3.Connection, highs: dict[str, int]) -> None:
    """Raise nodes.last_seq for many nodes in one statement (UPDATE ... FROM, SQLite >= 3.33)."""
    if not highs:
        return
    if is_pg(conn):
        # Two arrays sent in binary: one statement text whatever the batch, so psycopg prepares it.
        conn.execute_native(_PG_LAST_SEQ, [list(highs), list(highs.values())])  # type: ignore[attr-defined]
        return
    if sqlite3.sqlite_version_info < (3, 33, 0):
        conn.executemany("UPDATE nodes SET last_seq=MAX(last_seq, ?) WHERE id=?",
                         [(seq, node) for node, seq in highs.items()])
        return
    items = list(highs.items())
    for start in range(0, len(items), 1000):
        chunk = items[start:start + 1000]
        conn.execute(
            f"UPDATE nodes SET last_seq={greatest(conn, 'nodes.last_seq', 'v.column2')} FROM (VALUES "
            + ",".join(["(?,?)"] * len(chunk)) + ") AS v WHERE nodes.id = v.column1",
            [x for pair in chunk for x in pair],
        )


def mark_all_offline(conn: sqlite3.Connection, *, keep: Iterable[str] = ()) -> None:
    """The restart verdict: no node is connected to a supervisor that just started (except `keep`: on a
    shared PostgreSQL, nodes whose live lease another supervisor holds)."""
    kept = list(keep)
    if not kept:
        conn.execute("UPDATE nodes SET status='offline'")
        return
    conn.execute("UPDATE nodes SET status='offline' WHERE NOT (id = ANY(?))", (kept,))
