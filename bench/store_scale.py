"""Store scale benchmark (issue 22): start-up, file size and retention as the events table grows.

For each size (default 100k and 1M events; add 5M/10M with --sizes) it builds a database with the
project's own migrations and realistic rows (50 nodes, 500 sessions, 20 projects, 30 event types,
60 days, ~400-byte payloads), then prints:
  - start-up to ready: the real `hal-supervisor` process on that file, until /readyz answers 200,
    first without a clean-shutdown marker (full quick_check at start), then right after that run's
    clean stop (marker: the check is skipped at start and runs in the background);
  - retention removing half the rows (events_days=30 of 60): duration, writer steps, file size
    before/after (with the WAL), while a paced ingest of --rate events/s runs; the worst ack latency;
  - with --routes: every list route's p50/p99 over loopback HTTP as clients page it (100 rows, filters,
    `offset` and an `after` cursor), on the full table before retention.
and growth factors between the smallest and the largest size. `--keep DIR --reuse` measures a database
built earlier in DIR (a 10M build takes minutes) without building it again.

Why the paced ingest goes through the writer here and not the hub: the hub acks an event exactly when
the writer's future for its batch resolves (after the COMMIT that holds it), so submit -> resolve of
an `insert_events` job in batches of 50 is the ack latency minus the loopback hop, and retention
can be started on demand (in the supervisor it runs on its hourly timer). `--old` also runs the purge
as one writer job (the code before issue 22) for comparison.

  python bench/store_scale.py [--sizes 100k,1M] [--rate 500] [--old] [--startup-only] [--keep DIR [--reuse]]
                              [--startup-reps N] [--routes [--reps N]] [--routes-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The supervisor measured: this checkout, or HAL_BENCH_CODE=<another checkout> (e.g. `git archive` of
# the base commit) for a before/after on the same databases in the same run.
CODE = Path(os.environ.get("HAL_BENCH_CODE") or REPO).resolve()

from halswarm.core.model import Node, Session  # noqa: E402
from halswarm.store.checkpoint import WalCheckpointer  # noqa: E402
from halswarm.store.clean_marker import marker_path  # noqa: E402
from halswarm.store.db import connect  # noqa: E402
from halswarm.store.migrations import migrate  # noqa: E402
from halswarm.store.repos.events import insert_events  # noqa: E402
from halswarm.store.repos.nodes import set_nodes_last_seq, upsert_node  # noqa: E402
from halswarm.store.repos.retention import purge_older_than  # noqa: E402
from halswarm.store.repos.sessions import upsert_sessions  # noqa: E402
from halswarm.store.writer import Writer  # noqa: E402
from halswarm.supervisor.features.retention.service import DAY, RetentionJob  # noqa: E402
from halswarm.supervisor.features.retention.settings import RetentionSettings  # noqa: E402

NODES, SESSIONS, PROJECTS, TYPES, DAYS = 50, 500, 20, 30, 60
NOW = 1_800_000_000.0
BUILD_BATCH = 20_000
INGEST_BATCH = 50  # events per writer job of the paced ingest (the hub groups frames the same way)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def file_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


# ---------------------------------------------------------------- building

def build(db: Path, events: int, seed: int = 7) -> float:
    """A database of `events` rows spread evenly over DAYS days before NOW, oldest first."""
    t0 = time.monotonic()
    rnd = random.Random(seed)
    conn = connect(db)
    migrate(conn)
    conn.execute("PRAGMA synchronous=OFF")  # building only: the measured runs use the supervisor's settings
    nodes = [f"node-{i:02d}" for i in range(NODES)]
    projects = [f"project-{i:02d}" for i in range(PROJECTS)]
    types = [f"type.{i:02d}" for i in range(TYPES)]
    sessions = [(f"ses_{i:04d}", nodes[i % NODES], projects[i % PROJECTS]) for i in range(SESSIONS)]
    conn.execute("BEGIN")
    for n in nodes:
        upsert_node(conn, Node(id=n, status="offline"))
    upsert_sessions(conn, [Session(id=s, node_id=n, project=p, status="completed", started_at=NOW - DAYS * DAY,
                                   last_activity=NOW - DAY) for s, n, p in sessions])
    conn.execute("COMMIT")
    filler = "".join(rnd.choice("abcdefghij klmnopqrstuvwxyz") for _ in range(2000))
    seqs = dict.fromkeys(nodes, 0)
    span = DAYS * DAY
    for start in range(0, events, BUILD_BATCH):
        rows = []
        for k in range(start, min(events, start + BUILD_BATCH)):
            sid, node, project = sessions[rnd.randrange(SESSIONS)]
            seqs[node] += 1
            ts = NOW - span + span * k / events
            off = rnd.randrange(1500)
            data = json.dumps({"sessionID": sid, "messageID": f"msg_{k}", "field": "text",
                               "delta": filler[off:off + 360]})
            rows.append((node, seqs[node], f"ev-{k}", sid, project, types[rnd.randrange(TYPES)], data, ts, ts))
        conn.execute("BEGIN")
        insert_events(conn, rows)
        conn.execute("COMMIT")
    conn.execute("BEGIN")
    set_nodes_last_seq(conn, seqs)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.monotonic() - t0


# ---------------------------------------------------------------- start-up to ready

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def supervisor_env(work: Path) -> dict[str, str]:
    """The supervisor's environment, with its bytecode compiled once into a cache under the bench's
    directory: an installed package has its .pyc files, and PYTHONDONTWRITEBYTECODE (set in some shells
    and CI) would otherwise make every start compile ~250 modules (0.5-1 s on this machine)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HAL_AUTH_TOKEN", "INVOCATION_ID", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPATH"] = str(CODE)
    env["PYTHONPYCACHEPREFIX"] = str(work.parent / "pycache")
    done = work.parent / "pycache" / f".compiled{str(CODE).replace('/', '_')}"
    if not done.exists():
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(CODE / "halswarm")], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        done.touch()
    return env


@contextlib.contextmanager
def supervisor(db: Path, work: Path, timeout: float = 120.0) -> Iterator[tuple[float, float, str, str, int]]:
    """The real supervisor on `db`: yields (seconds from spawn to /readyz 200, its CPU seconds by then,
    API base URL, token, pid) and stops it with SIGTERM (a clean stop: it writes the clean-shutdown marker).
    The CPU seconds hardly depend on the machine's load; the wall seconds do (2 shared cores)."""
    import httpx

    http_port = free_port()
    token = secrets.token_hex(24)  # a viewer's: the list routes' role
    cfg = {"server": {"host": "127.0.0.1", "port": free_port(), "http_port": http_port,
                      "auth_token": secrets.token_hex(32)},
           "security": {"operators": [{"name": "bench", "role": "viewer", "token": token}]},
           "database": {"path": str(db)}, "log": {"level": "info"}}
    cfg_path = work / "supervisor.config.json"
    cfg_path.write_text(json.dumps(cfg))
    cfg_path.chmod(0o600)
    env = supervisor_env(work)
    log_path = work / "supervisor.log"
    log_from = log_path.stat().st_size if log_path.exists() else 0
    base = f"http://127.0.0.1:{http_port}"
    with open(log_path, "ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(cfg_path)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=CODE, env=env)
    try:
        ready = None
        while ready is None and time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {proc.returncode}; see {work / 'supervisor.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    ready = time.monotonic() - t0
                    cpu = process_cpu_s(proc.pid)
                    break
            time.sleep(0.02)
        if ready is None:
            raise TimeoutError(f"not ready within {timeout} s")
        # A start that skipped the full quick_check runs it in the background 5 s later, and only a run
        # whose check finished leaves a clean-shutdown marker (docs/supervisor.md): wait for it, so the
        # next start is again one after a clean stop and nothing measured after this competes with it.
        seen = log_path.read_bytes()[log_from:]
        if b"full quick_check skipped" in seen:
            t1 = time.monotonic()
            while b"integrity check passed" not in log_path.read_bytes()[log_from:]:
                if proc.poll() is not None or time.monotonic() - t1 > 1800:
                    raise RuntimeError(f"no background integrity check; see {log_path}")
                time.sleep(0.5)
            print(f"  (background quick_check passed {time.monotonic() - t0:.1f} s after spawn)", flush=True)
        yield ready, cpu, base, token, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def startup_to_ready(db: Path, work: Path, timeout: float = 120.0) -> tuple[float, float]:
    """Seconds from spawning the real supervisor on `db` until /readyz answers 200, and its CPU seconds."""
    with supervisor(db, work, timeout) as (ready, cpu, _, _, _):
        return ready, cpu


# ---------------------------------------------------------------- list routes over HTTP

def route_calls(events: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The list routes as clients call them (100 rows a page), on the rows `build` wrote."""
    since = str(NOW - DAY)  # the newest day: 1/60 of the rows
    node_rows = events // NODES
    return [
        ("events newest 100 (order=desc)", "/api/v1/events", {"order": "desc", "limit": 100}),
        ("events oldest 100", "/api/v1/events", {"limit": 100}),
        ("events node_id offset=50000", "/api/v1/events", {"node_id": "node-07", "offset": 50_000, "limit": 100}),
        ("events node_id after=cursor (half deep)", "/api/v1/events",
         {"node_id": "node-07", "offset": node_rows // 2, "limit": 1, "_cursor": True}),
        ("events project+type since 1d", "/api/v1/events",
         {"project": "project-03", "type": "type.05", "since": since, "limit": 100}),
        ("events session_id newest 100", "/api/v1/events", {"session_id": "ses_0007", "order": "desc", "limit": 100}),
        ("events since 1d", "/api/v1/events", {"since": since, "limit": 100}),
        ("sessions", "/api/v1/sessions", {"limit": 100}),
        ("sessions status+project", "/api/v1/sessions", {"status": "completed", "project": "project-03"}),
        ("nodes", "/api/v1/nodes", {}),
        ("audit", "/api/v1/audit", {"limit": 100}),
        ("approvals", "/api/v1/approvals", {}),
        ("remediations", "/api/v1/remediations", {}),
        ("cost today", "/api/v1/cost", {"period": "today"}),
    ]


def list_routes(db: Path, work: Path, events: int, reps: int, ready_timeout: float = 120.0
                ) -> dict[str, tuple[float, float, float]]:
    """p50/p99 ms of each list route over loopback HTTP (one client, keep-alive, sequential calls), and the
    supervisor's CPU ms per call (all its threads, from /proc: on a machine others load, wall time
    measures the queue for a core as much as the route, CPU time much less so)."""
    import httpx

    out: dict[str, tuple[float, float, float]] = {}
    with supervisor(db, work, ready_timeout) as (_, _, base, token, pid), \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        for name, path, params in route_calls(events):
            params = dict(params)
            if params.pop("_cursor", False):  # a cursor handed out at that depth, then pages by `after`
                meta = client.get(path, params=params).raise_for_status().json()["meta"]
                params = {"node_id": params["node_id"], "after": meta["next"], "limit": 100}
            client.get(path, params=params).raise_for_status()  # warm: page cache, first-call imports
            ms = []
            cpu0 = process_cpu_s(pid)
            for _ in range(reps):
                t = time.perf_counter()
                client.get(path, params=params).raise_for_status()
                ms.append((time.perf_counter() - t) * 1000)
            cpu_ms = (process_cpu_s(pid) - cpu0) * 1000 / reps
            ms.sort()
            out[name] = (ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))], cpu_ms)
            print(f"[{label(events)}] {name:<42} p50 {out[name][0]:8.1f} ms  p99 {out[name][1]:8.1f} ms"
                  f"  cpu {cpu_ms:6.2f} ms/call", flush=True)
    return out


# ---------------------------------------------------------------- retention under a paced ingest

async def retention_under_ingest(db: Path, rate: float, old: bool) -> dict[str, Any]:
    conn = connect(db)
    writer = Writer(conn, checkpointer=WalCheckpointer(db))  # as the supervisor's (checkpoints off the commit path)
    writer.start(asyncio.get_running_loop())
    latencies: list[float] = []
    done = asyncio.Event()
    seq = 0

    async def ingest() -> None:
        nonlocal seq
        interval = INGEST_BATCH / rate
        pending: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while not done.is_set():
            rows = []
            for _ in range(INGEST_BATCH):
                seq += 1
                rows.append(("bench-live", seq, f"live-{seq}", "ses_live", "project-00", "type.00",
                             '{"delta": "' + "z" * 380 + '"}', NOW, NOW))

            async def one(batch: list[tuple[Any, ...]]) -> None:
                t = time.monotonic()
                await writer.run(lambda c: insert_events(c, batch))
                latencies.append(time.monotonic() - t)

            task = asyncio.create_task(one(rows))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.gather(*pending)

    size_before = file_bytes(db)
    await writer.run(lambda c: upsert_node(c, Node(id="bench-live", status="online")))
    feeder = asyncio.create_task(ingest())
    await asyncio.sleep(1.0)  # the ingest's steady state before retention starts
    steps: list[int] = []
    job = RetentionJob(writer, RetentionSettings(events_days=DAYS // 2, audit_days=90),
                       on_step=lambda target, n: steps.append(n))
    t0 = time.monotonic()
    if old:
        cut = NOW - DAYS // 2 * DAY
        removed = (await writer.run(lambda c: purge_older_than(c, cut, NOW - 90 * DAY, NOW)))["events"]
        pages = 0
    else:
        result = await job.run_once(now=NOW)
        removed, pages = result["events"], result["pages_freed"]
    duration = time.monotonic() - t0
    await asyncio.sleep(1.0)
    done.set()
    await feeder
    await writer.run_raw(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
    await writer.stop()
    conn.close()
    lat = sorted(latencies)
    return {"removed": removed, "duration_s": duration, "steps": len(steps) or 1, "pages_freed": pages,
            "size_before": size_before, "size_after": file_bytes(db), "acked_batches": len(lat),
            "ack_p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
            "ack_p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            "ack_max_ms": 1000 * lat[-1] if lat else None}


# ---------------------------------------------------------------- orchestration

def run_size(events: int, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    work = root / label(events)
    work.mkdir(parents=True, exist_ok=True)
    db = work / "supervisor.db"
    if args.reuse and db.exists():
        print(f"[{label(events)}] reusing {db}, {file_bytes(db) / 2**20:.0f} MiB", flush=True)
    else:
        built = build(db, events)
        print(f"[{label(events)}] built in {built:.1f} s, {file_bytes(db) / 2**20:.0f} MiB", flush=True)
    out: dict[str, Any] = {"events": events}
    if args.routes_only:  # repeated passes over databases kept earlier: no start-up figures, no retention
        out["routes"] = list_routes(db, work, events, args.reps, args.ready_timeout)
        return out
    if args.old:
        copy = work / "old.db"
        shutil.copyfile(db, copy)
        out["old"] = asyncio.run(retention_under_ingest(copy, args.rate, old=True))
        copy.unlink()
        with contextlib.suppress(FileNotFoundError):
            Path(f"{copy}-wal").unlink()
    with contextlib.suppress(FileNotFoundError):
        marker_path(db).unlink()  # the build is not a supervisor's clean stop: a full check at start
    out["startup_s"], out["startup_cpu_s"] = startup_to_ready(db, work, args.ready_timeout)
    if not marker_path(db).exists():
        raise RuntimeError(f"no clean-shutdown marker after a clean stop; see {work / 'supervisor.log'}")
    runs = [startup_to_ready(db, work, args.ready_timeout) for _ in range(args.startup_reps)]
    marker_runs, cpu_runs = sorted(r[0] for r in runs), sorted(r[1] for r in runs)
    out["startup_marker_s"] = marker_runs[len(marker_runs) // 2]
    out["startup_marker_cpu_s"] = cpu_runs[len(cpu_runs) // 2]
    out["startup_marker_runs_s"] = marker_runs
    print(f"[{label(events)}] start-up to ready: {out['startup_s']:.2f} s (cpu {out['startup_cpu_s']:.2f} s) "
          f"full check, {out['startup_marker_s']:.2f} s (cpu {out['startup_marker_cpu_s']:.2f} s) after a clean "
          f"stop, median of {len(marker_runs)}: {', '.join(f'{x:.2f}' for x in marker_runs)}", flush=True)
    if args.routes:
        out["routes"] = list_routes(db, work, events, args.reps, args.ready_timeout)
    if args.startup_only:
        return out
    out["retention"] = asyncio.run(retention_under_ingest(db, args.rate, old=False))
    out["startup_after_s"] = startup_to_ready(db, work, args.ready_timeout)[0]
    return out


def report(rows: list[dict[str, Any]]) -> None:
    def mib(n: int) -> str:
        return f"{n / 2**20:.0f}"

    print("\nsize   start-up wall (full check / after a clean stop)   cpu (full / after a clean stop)")
    for r in rows:
        if "startup_s" not in r:
            continue
        print(f"{label(r['events']):<6} {r['startup_s']:.2f}s / {r['startup_marker_s']:.2f}s"
              f"{'':30}{r['startup_cpu_s']:.2f}s / {r['startup_marker_cpu_s']:.2f}s")
    if all("routes" in r for r in rows):
        print("\nlist route (p50 / p99 ms, cpu ms/call)    "
              + "  ".join(f"{label(r['events']):>22}" for r in rows) + "  growth p99 / cpu")
        for name in rows[0]["routes"]:
            cells = "  ".join(f"{r['routes'][name][0]:6.1f} / {r['routes'][name][1]:6.1f} {r['routes'][name][2]:6.2f}"
                              for r in rows)
            first, last = rows[0]["routes"][name], rows[-1]["routes"][name]
            growth = f"x{last[1] / first[1]:.2f} / x{last[2] / first[2]:.2f}" if first[2] > 0 else "-"
            print(f"{name:<42} {cells}  {growth}")
    if any("retention" not in r for r in rows):
        return
    print("\nsize   start-up  retention  steps  removed   file MiB before->after  ack p50/p99/max ms (batches)")
    for r in rows:
        for key, tag in (("old", "old"), ("retention", "new")):
            if key not in r:
                continue
            x = r[key]
            start = f"{r['startup_s']:.2f}s" if key == "retention" else "-"
            print(f"{label(r['events']):<6} {start:>8}  {x['duration_s']:>8.1f}s  {x['steps']:>5}  {x['removed']:>8}"
                  f"  {mib(x['size_before']):>10} -> {mib(x['size_after']):<10}"
                  f"  {x['ack_p50_ms']:.1f}/{x['ack_p99_ms']:.1f}/{x['ack_max_ms']:.1f} ({x['acked_batches']}) [{tag}]")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        g = f"growth {label(a['events'])} -> {label(b['events'])}:"
        print(f"{g} start-up x{b['startup_s'] / a['startup_s']:.2f}, retention duration "
              f"x{b['retention']['duration_s'] / a['retention']['duration_s']:.1f}, worst ack "
              f"x{b['retention']['ack_max_ms'] / a['retention']['ack_max_ms']:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100k,1M", help="comma-separated event counts, e.g. 100k,1M,5M,10M")
    ap.add_argument("--rate", type=float, default=500.0, help="paced ingest during retention, events/s")
    ap.add_argument("--old", action="store_true", help="also run the one-transaction purge for comparison")
    ap.add_argument("--startup-only", action="store_true", help="measure start-up only (no retention run)")
    ap.add_argument("--keep", help="build in this directory and keep it (default: a temporary one, removed)")
    ap.add_argument("--reuse", action="store_true", help="with --keep: use a database already built there")
    ap.add_argument("--startup-reps", type=int, default=1, help="start-ups after a clean stop (median printed)")
    ap.add_argument("--routes", action="store_true", help="also time every list route over HTTP (p50/p99)")
    ap.add_argument("--reps", type=int, default=30, help="calls per list route")
    ap.add_argument("--ready-timeout", type=float, default=120.0,
                    help="seconds a start may take to ready (a full quick_check at 10M on a loaded machine: minutes)")
    ap.add_argument("--routes-only", action="store_true", help="list routes only (no start-up, no retention)")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hal-store-scale-"))
    try:
        rows = [run_size(n, root, args) for n in sizes]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(rows)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
