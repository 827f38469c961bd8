"""SQL for the ``sessions`` table."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from halswarm.core.model import SESSION_STATUSES, Session
from halswarm.core.paging import PageRequest
from halswarm.core.timeutil import parse_ts
from halswarm.store.repos.keyset import keyset_select


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


# The API's order of sessions: newest first by (started_at, id), a missing start counting as 0 (the
# expression of the 015 indexes, so a page walks an index instead of sorting).
STARTED = "COALESCE(started_at, 0)"
_FILTERS = ("project", "status", "node_id")


def session_from_row(row: sqlite3.Row) -> Session:
    """A stored row as a Session; ValueError/TypeError for a row that cannot be one."""
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
    return s


def _readable(rows: Iterable[sqlite3.Row]) -> list[Session]:
    """Rows as sessions, skipping the unreadable ones (as the start-up load does)."""
    out = []
    for row in rows:
        try:
            out.append(session_from_row(row))
        except (ValueError, TypeError):
            continue
    return out


def get_session(conn: sqlite3.Connection, session_id: str) -> Session | None:
    found = _readable(conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)))
    return found[0] if found else None


def get_sessions(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Session]:
    out: dict[str, Session] = {}
    for i in range(0, len(ids), 500):
        chunk = list(ids[i:i + 500])
        marks = ",".join("?" * len(chunk))
        out.update((s.id, s) for s in _readable(conn.execute(f"SELECT * FROM sessions WHERE id IN ({marks})", chunk)))
    return out


def _where(filters: Mapping[str, str | None]) -> tuple[str, list[Any]]:
    conds = [f"{k} = ?" for k in _FILTERS if filters.get(k)]
    args = [filters[k] for k in _FILTERS if filters.get(k)]
    return (" WHERE " + " AND ".join(conds)) if conds else "", args


def _text_match(q: str | None, where: str, args: list[Any]) -> tuple[str, list[Any]]:
    """`q`: a case-insensitive substring of the id, project, title or current task (LIKE, wildcards escaped)."""
    if not q:
        return where, args
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    cond = " OR ".join(f"{col} LIKE ? ESCAPE '\\'" for col in _TEXT_COLUMNS)
    return (f"{where} AND ({cond})" if where else f" WHERE ({cond})"), [*args, *([pattern] * len(_TEXT_COLUMNS))]


_TEXT_COLUMNS = ("id", "project", "title", "current_task")


def list_sessions(conn: sqlite3.Connection, req: PageRequest, *, project: str | None = None,
                  status: str | None = None, node_id: str | None = None,
                  q: str | None = None) -> tuple[list[Session], int]:
    """(one page's rows plus one, read in the walking direction; the exact number of matches)."""
    where, args = _text_match(q, *_where({"project": project, "status": status, "node_id": node_id}))
    sql, params = keyset_select("sessions", (STARTED, "id"), where, args, req, descending=True)
    rows = _readable(conn.execute(sql, params))
    total = conn.execute(f"SELECT count(*) FROM sessions{where}", args).fetchone()[0]
    return rows, int(total)


def session_ids_of_node(conn: sqlite3.Connection, node_id: str) -> list[str]:
    """A node's session ids in the API's order (newest first)."""
    rows = conn.execute(f"SELECT id FROM sessions WHERE node_id = ? ORDER BY {STARTED} DESC, id DESC", (node_id,))
    return [str(r[0]) for r in rows]


def latest_completed(conn: sqlite3.Connection, projects: Iterable[str]) -> list[Session]:
    """Each project's most recent completed session (by last activity, else start)."""
    out: list[Session] = []
    for p in projects:
        out.extend(_readable(conn.execute(
            "SELECT * FROM sessions WHERE project = ? AND status = 'completed'"
            " ORDER BY COALESCE(last_activity, started_at, 0) DESC LIMIT 1", (p,))))
    return out


def status_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {str(st): int(n) for st, n in conn.execute("SELECT status, count(*) FROM sessions GROUP BY status")}


_HELD_ELSEWHERE = ("FROM sessions s JOIN node_leases l ON l.node_id = s.node_id"
                   " WHERE s.status IN ({marks}) AND l.owner <> ? AND l.expires_at > ?")


def sessions_held_elsewhere(conn: sqlite3.Connection, statuses: Iterable[str], owner: str, now: float
                            ) -> list[Session]:
    """PostgreSQL (issue 21): the sessions with one of `statuses` on nodes another supervisor than `owner`
    holds a live lease of, as their holders stored them. `statuses` is a handful of values (idx_sessions_status);
    the lease side is one row per connected node."""
    st = sorted(set(statuses))
    if not st:
        return []
    sql = "SELECT s.* " + _HELD_ELSEWHERE.format(marks=",".join("?" * len(st)))
    return _readable(conn.execute(sql, (*st, owner, now)))


def project_counts_held_elsewhere(conn: sqlite3.Connection, projects: Iterable[str], statuses: Iterable[str],
                                  owner: str, now: float) -> dict[str, int]:
    """PostgreSQL (issue 21): per project of `projects`, the sessions with one of `statuses` on nodes
    another supervisor than `owner` holds a live lease of."""
    st, ps = sorted(set(statuses)), sorted(set(projects))
    if not st or not ps:
        return {}
    sql = ("SELECT s.project, count(*) " + _HELD_ELSEWHERE.format(marks=",".join("?" * len(st)))
           + f" AND s.project IN ({','.join('?' * len(ps))}) GROUP BY s.project")
    return {str(r[0]): int(r[1]) for r in conn.execute(sql, (*st, owner, now, *ps))}
