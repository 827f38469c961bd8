"""SQL for the supervisor's tables. Plain functions over a connection: writers run them inside
the Writer's transaction, readers through the Reader."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from halswarm.core.model import SESSION_STATUSES, Node, Session
from halswarm.core.secret_values import SECRETS
from halswarm.core.timeutil import parse_ts


def _j(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _load_json(text: Any, default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):  # an odd stored row renders as the default
        return default


# ---------- nodes ----------

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


# ---------- sessions ----------

def upsert_sessions(conn: sqlite3.Connection, sessions: Iterable[Session]) -> None:
    conn.executemany(
        "INSERT INTO sessions(id, node_id, project, status, model, tokens_input, tokens_output, tokens_total,"
        " compaction_count, current_task, cost_usd, error, title, started_at, last_activity)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(id) DO UPDATE SET node_id=excluded.node_id, project=excluded.project,"
        " status=excluded.status, model=excluded.model, tokens_input=excluded.tokens_input,"
        " tokens_output=excluded.tokens_output, tokens_total=excluded.tokens_total,"
        " compaction_count=excluded.compaction_count, current_task=excluded.current_task,"
        " cost_usd=excluded.cost_usd, error=excluded.error, title=excluded.title,"
        " started_at=excluded.started_at, last_activity=excluded.last_activity",
        [
            (s.id, s.node_id, s.project, s.status, s.model, s.tokens_input, s.tokens_output, s.tokens_total,
             s.compaction_count, s.current_task, s.cost_usd, s.error, s.title, s.started_at, s.last_activity)
            for s in sessions
        ],
    )


# ---------- events ----------

EventRow = tuple[str | None, int | None, str, str | None, str | None, str, str, float, float]


_EVENT_INSERT = ("INSERT OR IGNORE INTO events(node_id, seq, event_id, session_id, project, type, data, ts,"
                 " received_at) VALUES ")
_EVENT_VALUES = "(?,?,?,?,?,?,?,?,?)"
_ROWS_PER_STATEMENT = 400  # 9 variables a row: 3,600, far below SQLite's 32,766 limit


def insert_events(conn: sqlite3.Connection, rows: Sequence[EventRow]) -> int:
    """Insert (node_id, seq, event_id, session_id, project, type, data_json, timestamp, received_at).

    Multi-row INSERTs rather than executemany: one sqlite3_step per 400 rows instead of one per
    row. Each step releases and re-takes the GIL, and with the event loop busy in the other
    thread every re-take can wait a whole switch interval, so per-row steps made batch commits
    (and therefore acks) slow exactly when the hub was busiest.
    (node_id, seq) is unique: a resent event is ignored here as a last line of defence.
    """
    before = conn.total_changes
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start:start + _ROWS_PER_STATEMENT]
        sql = _EVENT_INSERT + ",".join([_EVENT_VALUES] * len(chunk))
        conn.execute(sql, [value for row in chunk for value in row])
    return conn.total_changes - before


def set_node_last_seq(conn: sqlite3.Connection, node_id: str, seq: int) -> None:
    conn.execute("UPDATE nodes SET last_seq=MAX(last_seq, ?) WHERE id=?", (seq, node_id))


def set_nodes_last_seq(conn: sqlite3.Connection, highs: dict[str, int]) -> None:
    """Raise nodes.last_seq for many nodes in one statement (UPDATE ... FROM, SQLite >= 3.33)."""
    if not highs:
        return
    if sqlite3.sqlite_version_info < (3, 33, 0):
        conn.executemany("UPDATE nodes SET last_seq=MAX(last_seq, ?) WHERE id=?",
                         [(seq, node) for node, seq in highs.items()])
        return
    items = list(highs.items())
    for start in range(0, len(items), 1000):
        chunk = items[start:start + 1000]
        conn.execute(
            "UPDATE nodes SET last_seq=MAX(nodes.last_seq, v.column2) FROM (VALUES "
            + ",".join(["(?,?)"] * len(chunk)) + ") AS v WHERE nodes.id = v.column1",
            [x for pair in chunk for x in pair],
        )


def max_seq(conn: sqlite3.Connection, node_id: str) -> int:
    row = conn.execute(
        "SELECT MAX(COALESCE((SELECT last_seq FROM nodes WHERE id=?),0),"
        " COALESCE((SELECT MAX(seq) FROM events WHERE node_id=?),0))",
        (node_id, node_id),
    ).fetchone()
    return int(row[0] or 0)


def last_event_id(conn: sqlite3.Connection) -> int:
    """The last id AUTOINCREMENT handed out (not MAX(id): retention may have deleted the newest)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
    return int(row[0]) if row else 0


def row_to_api(event_db_id: int, r: EventRow) -> dict[str, Any]:
    """API shape of an event row still in memory (same fields as event_to_api)."""
    from halswarm.core.timeutil import iso

    return {"id": event_db_id, "node_id": r[0], "seq": r[1], "event_id": r[2], "session_id": r[3],
            "project": r[4], "type": r[5], "data": _load_json(r[6], None), "timestamp": iso(r[7])}


def event_to_api(row: sqlite3.Row) -> dict[str, Any]:
    from halswarm.core.timeutil import iso

    return {
        "id": row["id"],
        "node_id": row["node_id"],
        "seq": row["seq"],
        "event_id": row["event_id"],
        "session_id": row["session_id"],
        "project": row["project"],
        "type": row["type"],
        "data": _load_json(row["data"], None),
        "timestamp": iso(row["ts"]),
    }


def _event_filters(f: dict[str, Any]) -> tuple[str, list[Any]]:
    where, args = [], []
    for col in ("session_id", "project", "node_id"):
        if f.get(col):
            where.append(f"{col}=?")
            args.append(f[col])
    if f.get("type"):
        t = str(f["type"])
        if t.endswith("*"):
            where.append("type LIKE ? ESCAPE '\\'")
            args.append(t[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        else:
            where.append("type=?")
            args.append(t)
    if f.get("since") is not None:
        where.append("ts>=?")
        args.append(f["since"])
    if f.get("after_id") is not None:
        where.append("id>?")
        args.append(f["after_id"])
    return (" WHERE " + " AND ".join(where)) if where else "", args


def query_events(conn: sqlite3.Connection, filters: dict[str, Any], limit: int, offset: int,
                 order: str = "asc") -> tuple[list[dict[str, Any]], int]:
    where, args = _event_filters(filters)
    total = conn.execute(f"SELECT COUNT(*) FROM events{where}", args).fetchone()[0]
    direction = "DESC" if order == "desc" else "ASC"
    rows = conn.execute(
        f"SELECT * FROM events{where} ORDER BY ts {direction}, id {direction} LIMIT ? OFFSET ?",
        [*args, limit, offset],
    ).fetchall()
    return [event_to_api(r) for r in rows], int(total)


# ---------- commands, idempotency, audit ----------

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
        "INSERT OR REPLACE INTO command_idempotency(key_hash, command_id, result, expires_at) VALUES (?,?,?,?)",
        (key_hash, command_id, _j(result), expires_at),
    )


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


def purge_older_than(conn: sqlite3.Connection, events_before: float, audit_before: float, now: float
                     ) -> dict[str, int]:
    """Retention: drop old events and audit rows, and expired idempotency entries.

    nodes.last_seq keeps the per-node high-water mark, so deleting events never lowers the
    `resume_from_seq` an agent is told.
    """
    out = {}
    out["events"] = conn.execute("DELETE FROM events WHERE ts < ?", (events_before,)).rowcount
    out["audit"] = conn.execute("DELETE FROM audit_log WHERE timestamp < ?", (audit_before,)).rowcount
    out["idempotency"] = conn.execute("DELETE FROM command_idempotency WHERE expires_at <= ?", (now,)).rowcount
    out["commands"] = conn.execute("DELETE FROM commands WHERE created_at < ?", (audit_before,)).rowcount
    return out


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
