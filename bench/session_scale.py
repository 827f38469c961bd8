"""Sessions-ever-seen benchmark (issue 22 point 4): `/sessions` and `/cost` latency, the longest
event-loop stall and RSS of the real supervisor as the sessions table grows.

For each size (default 1,000 as the baseline and 100,000) it builds a database with the project's own
migrations (50 nodes, 20 projects; every session completed but 20 left running, which a restart marks
unreachable), starts the real `hal-supervisor` on it, warms `/cost` once (the first usage sample), then
for at least --seconds (longer than the 15 s cost sampler) alternates `GET /api/v1/sessions` (newest
page, a status filter, a deep offset) and `GET /api/v1/cost?period=today`, while a probe thread asks
`/healthz` every 20 ms. It prints p50/p99 of each route, the worst `/healthz` latency (a stall seen from
outside), the supervisor's own `hal_o_swarm_event_loop_lag_max_seconds` (when it has one), RSS and the
sessions held in memory, and the growth from the first size to the last.

  python bench/session_scale.py [--sizes 1k,100k] [--seconds 20]
  HAL_BENCH_CODE=/path/to/other/checkout python bench/session_scale.py   # the same against other code
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("HAL_BENCH_CODE") or REPO).resolve()
sys.path.insert(0, str(CODE))

from halswarm.core.model import Node, Session  # noqa: E402
from halswarm.store.db import connect  # noqa: E402
from halswarm.store.migrations import migrate  # noqa: E402
from halswarm.store.repos.nodes import upsert_node  # noqa: E402
from halswarm.store.repos.sessions import upsert_sessions  # noqa: E402

NODES, PROJECTS, LIVE = 50, 20, 20
MODELS = ("anthropic/claude-sonnet-4-5", "openai/o3", "fake/local")


def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = 1_000_000 if t.endswith("m") else 1_000 if t.endswith("k") else 1
    return int(float(t.rstrip("mk")) * mult)


def build(db: Path, n: int) -> float:
    t0 = time.monotonic()
    now = time.time()
    conn = connect(db)
    migrate(conn)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    for i in range(NODES):
        upsert_node(conn, Node(id=f"node-{i:02d}", status="offline"))
    batch: list[Session] = []
    for i in range(n):
        started = now - 30 * 86400 + 30 * 86400 * i / n
        batch.append(Session(id=f"ses_{i:07d}", node_id=f"node-{i % NODES:02d}", project=f"project-{i % PROJECTS:02d}",
                             status="running" if i >= n - LIVE else "completed", model=MODELS[i % len(MODELS)],
                             tokens_input=1000 + i % 977, tokens_output=300 + i % 311,
                             tokens_total=1300 + i % 977 + i % 311,
                             cost_usd=0.0 if i % 2 else 0.01 * (i % 50), title=f"task {i}", started_at=started,
                             last_activity=started + 600))
        if len(batch) >= 20_000:
            upsert_sessions(conn, batch)
            batch = []
    upsert_sessions(conn, batch)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.monotonic() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000


def run_size(n: int, root: Path, seconds: float) -> dict[str, Any]:
    import httpx

    work = root / f"s{n}"
    work.mkdir()
    db = work / "supervisor.db"
    built = build(db, n)
    http_port, token = free_port(), secrets.token_hex(24)
    cfg = {"server": {"host": "127.0.0.1", "port": free_port(), "http_port": http_port,
                      "auth_token": secrets.token_hex(32)},
           "security": {"operators": [{"name": "bench", "role": "viewer", "token": token}]},
           "database": {"path": str(db)}, "log": {"level": "warning"}}
    cfg_path = work / "supervisor.config.json"
    cfg_path.write_text(json.dumps(cfg))
    cfg_path.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("HAL_AUTH_TOKEN", "INVOCATION_ID")}
    env["PYTHONPATH"] = str(CODE)
    base = f"http://127.0.0.1:{http_port}"
    with open(work / "supervisor.log", "ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(cfg_path)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=CODE, env=env)
    stop = threading.Event()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {proc.returncode}; see {work / 'supervisor.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() - t0 > 300:
                raise TimeoutError("not ready within 300 s")
            time.sleep(0.05)
        ready = time.monotonic() - t0
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        client.get("/api/v1/cost", params={"period": "today"}).raise_for_status()  # the first usage sample
        probe: list[float] = []

        def probe_loop() -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                while not stop.is_set():
                    t = time.perf_counter()
                    c.get("/healthz")
                    probe.append(time.perf_counter() - t)
                    stop.wait(0.02)

        th = threading.Thread(target=probe_loop, daemon=True)
        th.start()
        lat: dict[str, list[float]] = {"sessions": [], "sessions?status": [], "sessions?offset": [], "cost": []}
        calls = [("sessions", "/api/v1/sessions", {}),
                 ("sessions?status", "/api/v1/sessions", {"status": "completed", "project": "project-03"}),
                 ("sessions?offset", "/api/v1/sessions", {"offset": max(0, n // 2)}),
                 ("cost", "/api/v1/cost", {"period": "today"})]
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds or len(lat["cost"]) < 20:
            name, path, params = calls[i % len(calls)]
            t = time.perf_counter()
            r = client.get(path, params=params)
            lat[name].append(time.perf_counter() - t)
            r.raise_for_status()
            i += 1
        stop.set()
        th.join(10)
        metrics = httpx.get(base + "/metrics", timeout=30).text

        def metric(name: str) -> float | None:
            m = re.search(rf"^hal_o_swarm_{name} (\S+)$", metrics, re.M) or re.search(rf"^{name} (\S+)$", metrics, re.M)
            return float(m.group(1)) if m else None

        lag = metric("event_loop_lag_max_seconds")
        rss = metric("process_resident_memory_bytes")
        return {"sessions": n, "build_s": built, "ready_s": ready,
                **{f"{k} p50": pct(v, 0.5) for k, v in lat.items()},
                **{f"{k} p99": pct(v, 0.99) for k, v in lat.items()},
                "requests": sum(len(v) for v in lat.values()),
                "healthz max ms": max(probe) * 1000 if probe else None,
                "healthz p50 ms": statistics.median(probe) * 1000 if probe else None,
                "loop lag max ms": None if lag is None else lag * 1000,
                "rss MiB": None if rss is None else rss / 2**20, "in memory": metric("sessions_in_memory")}
    finally:
        stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def report(rows: list[dict[str, Any]]) -> None:
    keys = [k for k in rows[0] if k != "sessions"]
    print(f"code: {CODE}")
    print(f"{'figure':28}" + "".join(f"{r['sessions']:>14,}" for r in rows) + f"{'growth':>10}")
    for k in keys:
        vals = [r[k] for r in rows]
        cells = "".join(f"{'-' if v is None else format(v, ',.1f'):>14}" for v in vals)
        first, last = vals[0], vals[-1]
        numbers = isinstance(first, float | int) and isinstance(last, float | int) and first
        growth = f"{last / first:.1f}x" if numbers else ""
        print(f"{k:28}{cells}{growth:>10}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1k,100k")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring time per size (> the 15 s cost sampler)")
    ap.add_argument("--keep", type=Path, help="build under this directory and keep it")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    root = args.keep or Path(tempfile.mkdtemp(prefix="hal-session-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        rows = [run_size(n, root, args.seconds) for n in sizes]
    finally:
        if args.keep is None:
            import shutil
            shutil.rmtree(root, ignore_errors=True)
    report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
