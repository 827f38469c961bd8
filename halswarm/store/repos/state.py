"""Reading nodes and sessions back after a restart (bad rows skipped and reported)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from halswarm.core.model import Node, Session
from halswarm.core.timeutil import parse_ts
from halswarm.store.repos.jsonfields import _load_json
from halswarm.store.repos.sessions import session_from_row


@dataclass
class LoadReport:
    nodes: list[Node] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)


def node_from_row(row: sqlite3.Row) -> Node:
    """A stored row as a Node, with its stored status; ValueError/TypeError for a row that cannot be one."""
    node = Node(
        id=str(row["id"]),
        hostname=str(row["hostname"] or ""),
        status="online" if row["status"] == "online" else "offline",
        version=str(row["version"] or ""),
        projects=[p for p in _load_json(row["projects"], []) if isinstance(p, dict) and "name" in p],
        capabilities=_load_json(row["capabilities"], {}) or {},
        resources=_load_json(row["resources"], {}) or {},
        auth_states=_load_json(row["auth_states"], {}) or {},
        credential_version=row["credential_version"] if isinstance(row["credential_version"], int) else None,
        last_seq=int(row["last_seq"] or 0),
    )
    for col in ("last_heartbeat", "connected_at", "first_seen_at"):
        raw = row[col]
        ts = parse_ts(raw)
        if raw is not None and ts is None:
            raise ValueError(f"{col}={raw!r}")
        setattr(node, col, ts)
    return node


def stored_nodes(conn: sqlite3.Connection) -> list[Node]:
    """Every readable node row as stored (what the supervisors that hold them persisted)."""
    out = []
    for row in conn.execute("SELECT * FROM nodes"):
        try:
            out.append(node_from_row(row))
        except (ValueError, TypeError):
            continue
    return out


def load_state(conn: sqlite3.Connection) -> LoadReport:
    """Read nodes and sessions back after a restart. Unreadable rows are skipped and reported,
    never fatal: a single bad timestamp must not keep the hub down."""
    rep = LoadReport()
    for row in conn.execute("SELECT * FROM nodes"):
        try:
            node = node_from_row(row)
        except (ValueError, TypeError) as exc:
            rep.bad_rows.append(f"nodes[{row['id']!r}]: {exc}")
            continue
        node.status = "offline"
        rep.nodes.append(node)
    for row in conn.execute("SELECT * FROM sessions"):
        try:
            s = session_from_row(row)
        except (ValueError, TypeError) as exc:
            rep.bad_rows.append(f"sessions[{row['id']!r}]: {exc}")
            continue
        rep.sessions.append(s)
    return rep
