"""What the leader's policies and dependency autostart read per check on a shared PostgreSQL (issue 21).

A private PostgreSQL cluster holding a fleet's history: `--nodes` nodes, half held by another supervisor
(live leases), `--sessions` sessions of which 1% idle and 1% running (the rest ended), `--events` events
of which a few `project.status`. Per check, median over `--reps` runs of each statement, with the same run's
baseline (one primary-key read: the round-trip floor of any read):

- policies: the sessions held elsewhere that resume_on_idle could act on (`idle`), and every live one
  (kill_on_cost enabled), sessions_held_elsewhere;
- dependencies: the horizon probe (probe_horizon), the `project.status` events of 5 projects among the last
  2,000 ids (project_status_between), and the live-session counts per project (project_counts_held_elsewhere);
- for comparison, reading every session (what an unbounded read would cost).

  python bench/ha_engine_reads.py [--nodes 200] [--sessions 100000] [--events 200000] [--reps 50]

Prints one line per statement (ms, rows) and EXPLAIN's plan of the two bounded reads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from halswarm.store.engine import open_connection, parse_storage_url  # noqa: E402
from halswarm.store.migrations import migrate  # noqa: E402
from halswarm.store.repos.dependencies import project_status_between  # noqa: E402
from halswarm.store.repos.events import probe_horizon  # noqa: E402
from halswarm.store.repos.sessions import project_counts_held_elsewhere, sessions_held_elsewhere  # noqa: E402
from halswarm.supervisor.features.policies.engine import LIVE  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

ME, OTHER = "sup-a:8420", "sup-b:8420"
PROJECTS = [f"proj{i}" for i in range(5)]


def fill(conn: Any, nodes: int, sessions: int, events: int) -> None:
    now = time.time()
    conn.execute("INSERT INTO nodes (id) SELECT 'n' || g FROM generate_series(1, ?) g", (nodes,))
    conn.execute("INSERT INTO node_leases (node_id, owner, expires_at, acquired_at)"
                 " SELECT 'n' || g, CASE WHEN g % 2 = 0 THEN ? ELSE ? END, ?, ? FROM generate_series(1, ?) g",
                 (OTHER, ME, now + 3600, now, nodes))
    conn.execute("INSERT INTO sessions (id, node_id, project, status, started_at, last_activity)"
                 " SELECT 'ses' || g, 'n' || (1 + (g / 7) % ?), 'proj' || (g % 50),"
                 " CASE WHEN g % 100 = 0 THEN 'idle' WHEN g % 100 = 1 THEN 'running' ELSE 'completed' END, ?, ?"
                 " FROM generate_series(1, ?) g", (nodes, now - 7200, now - 3600, sessions))
    conn.execute("INSERT INTO events (node_id, seq, event_id, project, type, data, ts, received_at)"
                 " SELECT 'n' || (1 + g % ?), g, 'e' || g, 'proj' || (g % 50),"
                 " CASE WHEN g % 5000 = 0 THEN 'project.status' ELSE 'message.part.delta' END,"
                 " '{\"status\": \"completed\"}', ? + g * 0.001, ? FROM generate_series(1, ?) g",
                 (nodes, now - 3600, now, events))
    conn.execute("ANALYZE")


def timed(fn: Callable[[], Any], reps: int) -> tuple[float, int]:
    """(median ms, rows of the last run)."""
    times, n = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
        n = len(out) if hasattr(out, "__len__") else 1
    return statistics.median(times), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    cluster = PostgresCluster()
    cluster.start()
    try:
        url = cluster.fresh_database()
        conn = open_connection(parse_storage_url(url))
        migrate(conn)
        t0 = time.perf_counter()
        fill(conn, args.nodes, args.sessions, args.events)
        print(f"{args.nodes} nodes ({args.nodes // 2} held elsewhere), {args.sessions} sessions, {args.events} events"
              f" (filled in {time.perf_counter() - t0:.1f} s)")
        now = time.time()
        last = int(conn.execute("SELECT max(id) FROM events").fetchone()[0])
        reads: list[tuple[str, Callable[[], Any]]] = [
            ("baseline: one session by primary key", lambda: conn.execute(
                "SELECT * FROM sessions WHERE id = ?", ("ses500",)).fetchall()),
            ("policies: idle sessions held elsewhere", lambda: sessions_held_elsewhere(conn, {"idle"}, ME, now)),
            ("policies: live sessions held elsewhere", lambda: sessions_held_elsewhere(conn, LIVE, ME, now)),
            ("dependencies: horizon probe", lambda: probe_horizon(conn)[1]),
            ("dependencies: project.status of 5 projects in the last 2,000 ids", lambda: project_status_between(
                conn, "project.status", PROJECTS, last - 2000, last)),
            ("dependencies: live sessions per project held elsewhere", lambda: project_counts_held_elsewhere(
                conn, PROJECTS, {"running", "idle", "waiting_input", "unreachable"}, ME, now)),
            ("comparison: every session (unbounded)", lambda: conn.execute("SELECT * FROM sessions").fetchall()),
        ]
        for name, fn in reads:
            ms, rows = timed(fn, args.reps)
            print(f"{name}: {ms:.2f} ms median ({rows} rows)")
        for sql, params in (
                ("SELECT s.* FROM sessions s JOIN node_leases l ON l.node_id = s.node_id WHERE s.status IN ('idle')"
                 " AND l.owner <> %s AND l.expires_at > %s", (ME, now)),
                ("SELECT project, event_id, data, ts FROM events WHERE type = 'project.status'"
                 " AND project IN ('proj0','proj1','proj2','proj3','proj4') AND id > %s AND id <= %s ORDER BY id",
                 (last - 2000, last))):
            plan = [r[0] for r in conn.execute_native("EXPLAIN " + sql, params).fetchall()]
            print("plan:", " | ".join(p.strip() for p in plan))
        conn.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
