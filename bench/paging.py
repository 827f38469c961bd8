"""Paging cost before/after keyset paging (issue 22), on the real schema filled with realistic rows.

Builds an events table of N rows (50 nodes, 20 projects, 30 types, 500 sessions, 60 days, ~400-byte
payloads) with the migrations before 014, times the old list SQL (exact COUNT(*) + OFFSET, no node or
project+type index), applies migration 014 and times the new repo functions (capped count, seek).
Queries run on the store directly (the HTTP layer adds a constant). Prints p50/p99 in ms.

    PYTHONPATH=$PWD .venv/bin/python bench/paging.py --sizes 100000 1000000 --reps 30
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halswarm.core.paging import PageRequest
from halswarm.store.db import connect
from halswarm.store.migrations import bundled_migrations, migrate
from halswarm.store.repos.events import _event_filters, event_to_api, insert_events, page_events

NOW = 1_765_000_000.0
DAYS = 60


def build(path: Path, n: int) -> None:
    conn = connect(path)
    migrate(conn, [m for m in bundled_migrations() if int(m.version) < 14])
    rnd = random.Random(7)
    pad = "x" * 330
    step = DAYS * 86400 / n
    batch = []
    seqs: dict[str, int] = {}
    for i in range(n):
        node = f"node-{rnd.randrange(50):02d}"
        seqs[node] = seqs.get(node, 0) + 1
        s = rnd.randrange(500)
        data = f'{{"session":"ses-{s:03d}","part":{i},"text":"{pad}"}}'
        ts = NOW - DAYS * 86400 + i * step
        kind = f"type.{rnd.randrange(30):02d}"
        batch.append((node, seqs[node], f"ev-{i}", f"ses-{s:03d}", f"proj-{s % 20:02d}", kind, data, ts, ts))
        if len(batch) == 20_000:
            insert_events(conn, batch)
            conn.commit()
            batch = []
    if batch:
        insert_events(conn, batch)
    conn.commit()
    conn.close()


def old_query(conn: Any, filters: dict[str, Any], limit: int, offset: int, order: str) -> Any:
    """The list query before issue 22 (exact COUNT(*), then ORDER BY ... LIMIT ... OFFSET)."""
    where, args = _event_filters(filters)
    total = conn.execute(f"SELECT COUNT(*) FROM events{where}", args).fetchone()[0]
    d = "DESC" if order == "desc" else "ASC"
    rows = conn.execute(f"SELECT * FROM events{where} ORDER BY ts {d}, id {d} LIMIT ? OFFSET ?",
                        [*args, limit, offset]).fetchall()
    return [event_to_api(r) for r in rows], total


def timed(fn: Callable[[], Any], reps: int) -> tuple[float, float]:
    fn()  # warm the page cache
    ms = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def run(n: int, reps: int, tmp: Path) -> dict[str, tuple[float, float]]:
    path = tmp / f"events-{n}.db"
    t = time.perf_counter()
    build(path, n)
    print(f"# {n:,} events built in {time.perf_counter() - t:.1f}s, {path.stat().st_size / 2**20:.0f} MiB", flush=True)
    conn = connect(path, readonly=True)
    node = {"node_id": "node-07"}
    pt = {"project": "proj-03", "type": "type.05", "since": NOW - 86400}
    offset = 50_000  # the figure (a node has n/50 rows: past its end below 2.5M events)
    depth = n // 100  # half of a node's rows, for the cursor walk
    out: dict[str, tuple[float, float]] = {}
    out["before: node offset"] = timed(lambda: old_query(conn, node, 100, offset, "asc"), reps)
    out["before: project+type since 1d"] = timed(lambda: old_query(conn, pt, 100, 0, "asc"), reps)
    out["before: newest 100"] = timed(lambda: old_query(conn, {}, 100, 0, "desc"), reps)
    conn.close()
    w = connect(path)
    t = time.perf_counter()
    migrate(w)
    w.close()
    print(f"# migration 014 (indexes) on {n:,}: {time.perf_counter() - t:.1f}s", flush=True)
    conn = connect(path, readonly=True)
    out["after: node offset"] = timed(lambda: page_events(conn, node, PageRequest(100, offset), "asc"), reps)
    out["after: project+type since 1d"] = timed(lambda: page_events(conn, pt, PageRequest(100), "asc"), reps)
    out["after: newest 100"] = timed(lambda: page_events(conn, {}, PageRequest(100), "desc"), reps)
    page, _, _ = page_events(conn, node, PageRequest(1, depth), "asc")
    ev = page.items[0]
    key = (conn.execute("SELECT ts FROM events WHERE id=?", (ev["id"],)).fetchone()[0], ev["id"])
    out["after: node page by cursor (n/100 deep)"] = timed(
        lambda: page_events(conn, node, PageRequest(100, after=key), "asc"), reps)
    conn.close()
    path.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the databases (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        results = {n: run(n, args.reps, Path(d)) for n in args.sizes}
    sizes = args.sizes
    print("| figure (p50 / p99 ms) | " + " | ".join(f"{n:,}" for n in sizes) + " | growth (p50) |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for name in results[sizes[0]]:
        cells = [f"{results[n][name][0]:.2f} / {results[n][name][1]:.2f}" for n in sizes]
        growth = results[sizes[-1]][name][0] / max(results[sizes[0]][name][0], 1e-6)
        print(f"| {name} | " + " | ".join(cells) + f" | {growth:.1f}x |")


if __name__ == "__main__":
    main()
