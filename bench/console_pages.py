"""Console pages at fleet scale (issue 19 point 3): server time to the full HTML of the fleet and
sessions views, with N nodes and M sessions in the store, over HTTP from a real supervisor.

Fills a migrated database (nodes with projects and resources, sessions over 60 days across 40 projects
and 7 statuses, ~1/3 of them live so the tracker holds them), starts the supervisor on it, logs in
through /ui/login and times each page REPS times (first paint in a browser adds the parse and render of
~50 rows: see bench/console.py of the browser tests). Prints p50/p99 in ms and the page size.

    PYTHONPATH=$PWD .venv/bin/python bench/console_pages.py --nodes 2000 --sessions 20000 --reps 30
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from halswarm.core.model import Node, Session
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.repos.nodes import upsert_node
from halswarm.store.repos.sessions import upsert_sessions
from tests.support.supervisor_proc import SupervisorProc

NOW = time.time()
STATUSES = ("running", "idle", "waiting_input", "error", "completed", "completed", "killed")


def fill(path: Path, nodes: int, sessions: int) -> None:
    conn = connect(path)
    migrate(conn)
    rnd = random.Random(19)
    for i in range(nodes):
        upsert_node(conn, Node(f"node-{i:04d}", hostname=f"host-{i:04d}.example", status="offline", version="0.1.0",
                               projects=[{"name": f"proj-{(i + k) % 40:02d}", "directory": f"/srv/p{k}"}
                                         for k in range(3)],
                               resources={"cpu_percent": 12.5, "ram_used_mb": 900.0, "ram_total_mb": 4096.0,
                                          "disk_used_gb": 20.0, "disk_total_gb": 100.0},
                               last_heartbeat=NOW - rnd.random() * 60))
    batch = []
    for j in range(sessions):
        started = NOW - rnd.random() * 60 * 86400
        batch.append(Session(f"ses_{j:06d}", f"node-{rnd.randrange(nodes):04d}", f"proj-{rnd.randrange(40):02d}",
                             rnd.choice(STATUSES), model="m-1", tokens_total=rnd.randrange(100_000),
                             cost_usd=rnd.random(), title=f"task {j}", started_at=started,
                             last_activity=started + 600))
        if len(batch) == 5000:
            upsert_sessions(conn, batch)
            batch = []
    upsert_sessions(conn, batch)
    conn.commit()
    conn.close()


def timed(c: httpx.Client, path: str, reps: int) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        r = c.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        size = len(r.content)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sup = SupervisorProc(Path(tmp))
        sup.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        fill(sup.db_path, args.nodes, args.sessions)
        print(f"filled {args.nodes} nodes, {args.sessions} sessions in {time.perf_counter() - t0:.1f} s")
        sup.start(timeout=120)
        try:
            with httpx.Client(base_url=sup.api, timeout=60) as c:
                assert c.post("/ui/login", data={"token": sup.token}).status_code == 303
                first = c.get("/ui/sessions").text
                after = first.split('data-testid="next-page" href="?')[1].split('"')[0].replace("&amp;", "&")
                pages = ["/ui/", "/ui/?status=offline&project=proj-07", "/ui/sessions",
                         "/ui/sessions?status=waiting_input", "/ui/sessions?project=proj-03&status=idle",
                         "/ui/sessions?node_id=node-0042", "/ui/sessions?q=task%201234", f"/ui/sessions?{after}",
                         "/ui/approvals", "/ui/audit"]
                print(f"{'page':48} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>8}")
                for p in pages:
                    p50, p99, size = timed(c, p, args.reps)
                    print(f"{p[:48]:48} {p50:8.1f} {p99:8.1f} {size:8d}")
        finally:
            sup.stop()


if __name__ == "__main__":
    main()
