"""Reading nodes and sessions back after a restart (bad rows skipped and reported)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from halswarm.core.model import SESSION_STATUSES, Node, Session
from halswarm.core.timeutil import parse_ts
from halswarm.store.repos.jsonfields import _load_json


@dataclass
class LoadReport:
    nodes: list[Node] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)


def load_state(conn: sqlite3.Connection) -> LoadReport:
    """Read nodes and sessions back after a restart. Unreadable rows are skipped and reported,
    never fatal: a single bad timestamp must not keep the hub down."""
    rep = LoadReport()
    for row in conn.execute("SELECT * FROM nodes"):
        try:
            node = Node(
                id=str(row["id"]),
                hostname=str(row["hostname"] or ""),
                status="offline",
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
        except (ValueError, TypeError) as exc:
            rep.bad_rows.append(f"nodes[{row['id']!r}]: {exc}")
            continue
        rep.nodes.append(node)
    for row in conn.execute("SELECT * FROM sessions"):
        try:
            status = str(row["status"])
            if status not in SESSION_STATUSES:
                raise ValueError(f"status={status!r}")
            s = Session(
                id=str(row["id"]),
                node_id=str(row["node_id"]),
                project=str(row["project"] or ""),
                status=status,
                model=row["model"],
                tokens_input=int(row["tokens_input"] or 0),
                tokens_output=int(row["tokens_output"] or 0),
                tokens_total=int(row["tokens_total"] or 0),
                compaction_count=int(row["compaction_count"] or 0),
                current_task=row["current_task"],
                cost_usd=float(row["cost_usd"] or 0),
                error=row["error"],
                title=row["title"],
            )
            for col in ("started_at", "last_activity"):
                raw = row[col]
                ts = parse_ts(raw)
                if raw is not None and ts is None:
                    raise ValueError(f"{col}={raw!r}")
                setattr(s, col, ts)
        except (ValueError, TypeError) as exc:
            rep.bad_rows.append(f"sessions[{row['id']!r}]: {exc}")
            continue
        rep.sessions.append(s)
    return rep
