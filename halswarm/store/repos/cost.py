"""SQL of the cost tables (migration 002): provider buckets, polled days, session usage and marks.
Functions take a connection; the cost aggregator runs them on the store's writer thread (writes) or
reader threads (reads)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from halswarm.core.cost import Bucket, Mark, SessionUsage
from halswarm.store.dialect import greatest


def replace_days(conn: sqlite3.Connection, provider: str, days: Iterable[str], buckets: Iterable[Bucket],
                 polled_at: float) -> None:
    """Replace a provider's buckets for the polled days and record the days as covered (one transaction:
    the writer commits the whole job or nothing)."""
    days = list(days)
    conn.executemany("DELETE FROM costs WHERE provider=? AND date=?", [(provider, d) for d in days])
    conn.executemany(
        "INSERT INTO costs(provider, date, model, project, input_tokens, output_tokens, tokens, cost_usd, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(provider, date, model, project) DO UPDATE SET"
        " input_tokens=excluded.input_tokens, output_tokens=excluded.output_tokens, tokens=excluded.tokens,"
        " cost_usd=excluded.cost_usd, updated_at=excluded.updated_at",
        [(b.provider, b.date, b.model, b.project, b.input_tokens, b.output_tokens, b.tokens, b.cost_usd, polled_at)
         for b in buckets if b.date in days],
    )
    conn.executemany(
        "INSERT INTO cost_polls(provider, date, polled_at) VALUES (?,?,?)"
        " ON CONFLICT(provider, date) DO UPDATE SET polled_at=excluded.polled_at",
        [(provider, d, polled_at) for d in days],
    )


def polled_days(conn: sqlite3.Connection, since: str) -> dict[str, dict[str, float]]:
    """provider -> {date: polled_at} for days >= since."""
    out: dict[str, dict[str, float]] = {}
    for provider, date, at in conn.execute("SELECT provider, date, polled_at FROM cost_polls WHERE date >= ?",
                                           (since,)):
        out.setdefault(provider, {})[date] = at
    return out


def load_buckets(conn: sqlite3.Connection, since: str) -> list[Bucket]:
    return [Bucket(*row) for row in conn.execute(
        "SELECT provider, date, model, project, input_tokens, output_tokens, cost_usd FROM costs WHERE date >= ?",
        (since,))]


def load_session_usage(conn: sqlite3.Connection, since: str) -> list[SessionUsage]:
    return [SessionUsage(*row) for row in conn.execute(
        "SELECT date, session_id, project, provider, model, tokens, cost_usd FROM session_usage WHERE date >= ?",
        (since,))]


def load_marks(conn: sqlite3.Connection) -> dict[str, Mark]:
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in conn.execute(
        "SELECT session_id, input_tokens, output_tokens, tokens, cost_usd FROM session_usage_marks")}


def add_session_usage(conn: sqlite3.Connection, rows: list[tuple[SessionUsage, int, int, bool]],
                      marks: dict[str, Mark]) -> None:
    """Add usage increments (row, input delta, output delta, estimated) and move the sessions' marks."""
    now = time.time()
    conn.executemany(
        "INSERT INTO session_usage(date, session_id, project, provider, model, input_tokens, output_tokens, tokens,"
        " cost_usd, estimated, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(date, session_id) DO UPDATE SET project=excluded.project, provider=excluded.provider,"
        " model=excluded.model, input_tokens=session_usage.input_tokens+excluded.input_tokens,"
        " output_tokens=session_usage.output_tokens+excluded.output_tokens,"
        " tokens=session_usage.tokens+excluded.tokens, cost_usd=session_usage.cost_usd+excluded.cost_usd,"
        f" estimated={greatest(conn, 'session_usage.estimated', 'excluded.estimated')},"
        " updated_at=excluded.updated_at",
        [(u.date, u.session_id, u.project, u.provider, u.model, di, do, u.tokens, u.cost_usd, int(est), now)
         for u, di, do, est in rows],
    )
    conn.executemany(
        "INSERT INTO session_usage_marks(session_id, input_tokens, output_tokens, tokens, cost_usd, updated_at)"
        " VALUES (?,?,?,?,?,?) ON CONFLICT(session_id) DO UPDATE SET input_tokens=excluded.input_tokens,"
        " output_tokens=excluded.output_tokens, tokens=excluded.tokens, cost_usd=excluded.cost_usd,"
        " updated_at=excluded.updated_at",
        [(sid, *m, now) for sid, m in marks.items()],
    )
