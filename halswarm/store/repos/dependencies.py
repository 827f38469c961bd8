"""SQL of the project-dependency tables (`dependency_marks`, `dependency_starts`) and the stored
`project.status` events the dependency feature reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

RECENT_STARTS = 20


def project_status_events(conn: sqlite3.Connection, event_type: str, projects: Iterable[str]
                          ) -> list[tuple[Any, ...]]:
    """(project, event_id, data JSON, timestamp) of the events of `event_type` about `projects`, oldest first."""
    projects = list(projects)
    qs = ",".join("?" * len(projects))
    return conn.execute(
        f"SELECT project, event_id, data, ts AS timestamp FROM events WHERE type=? AND project IN ({qs})"
        " ORDER BY id", [event_type, *projects]).fetchall()


def project_status_between(conn: sqlite3.Connection, event_type: str, projects: Iterable[str], after: int,
                           upto: int) -> list[tuple[Any, ...]]:
    """PostgreSQL (issue 21): (project, event_id, data JSON, timestamp) of the events of `event_type` about
    `projects` with after < id <= upto, in id order (idx_events_project_type_ts, then the id range)."""
    projects = list(projects)
    qs = ",".join("?" * len(projects))
    return conn.execute(
        f"SELECT project, event_id, data, ts AS timestamp FROM events WHERE type=? AND project IN ({qs})"
        " AND id > ? AND id <= ? ORDER BY id", [event_type, *projects, after, upto]).fetchall()


def load_marks(conn: sqlite3.Connection) -> dict[str, str]:
    """project -> the completion marker already acted on."""
    return {r[0]: r[1] for r in conn.execute("SELECT project, marker FROM dependency_marks")}


def save_marks(conn: sqlite3.Connection, marks: Mapping[str, str], now: float) -> None:
    conn.executemany("INSERT INTO dependency_marks(project, marker, updated_at) VALUES (?,?,?)"
                     " ON CONFLICT(project) DO UPDATE SET marker=excluded.marker, updated_at=excluded.updated_at",
                     [(p, m, now) for p, m in marks.items()])


def recent_starts(conn: sqlite3.Connection, limit: int = RECENT_STARTS) -> list[tuple[Any, ...]]:
    """The newest autostarts first: (project, upstream, marker, session_id, command_id, result, error, started_at)."""
    return conn.execute("SELECT project, upstream, marker, session_id, command_id, result, error, started_at"
                        " FROM dependency_starts ORDER BY id DESC LIMIT ?", (limit,)).fetchall()


def insert_start(conn: sqlite3.Connection, project: str, upstream: str, marker: str, session_id: str | None,
                 command_id: str | None, result: str, error: str | None, started_at: float) -> None:
    conn.execute(
        "INSERT INTO dependency_starts(project, upstream, marker, session_id, command_id, result, error,"
        " started_at) VALUES (?,?,?,?,?,?,?,?)",
        (project, upstream, marker, session_id, command_id, result, error, started_at))
