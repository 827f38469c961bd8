"""Two supervisors on one PostgreSQL against one: aggregate durable ingest, measured in the same run.

Starts a private PostgreSQL cluster (tests/support/postgres.py: initdb/pg_ctl in a temp dir, fsync on,
synchronous_commit on) and, each round, on fresh databases of it:
  1. one real hal-supervisor (`storage.url` on the cluster) saturated by N simulated agents over the
     WebSocket (bench/ingest.py's load generator: the real protocol, a window of unacked events each);
  2. two hal-supervisors on one database, N agents each (two load generators, nodes bench-0.. and
     bench-N.., their measured windows lined up on the machine's monotonic clock);
  3. the raw baseline: psycopg COPY of the same kind of rows, committed every R rows, where R is the rows
     per WAL flush the two supervisors reached (bench/ingest_postgres.py's raw_copy).
Durable events/s are what the agents saw acked (an ack follows the COMMIT). Over each measured window it
also reads the CPU of every process (each supervisor, the PostgreSQL server with all its backends, the
load generators) and of the whole machine, so a ratio below target shows where the cores went.
From the one-supervisor run's CPU per event it prints the ceiling the cores alone allow (a supervisor is
one event loop, at most one core; everything together at most every core of the machine).
Prints each round, then medians; the last line is `ratio=<median two / one>` (issue 21 asks >= 1.6) over
the rounds in which every supervisor acked something in its window (a round with a stalled supervisor is
printed as such and counted, not hidden).

  python bench/ha_ingest.py [--agents 100] [--seconds 10] [--rounds 3] [--raw-events 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import ingest as ws_bench  # noqa: E402  (bench/ingest.py: agents, spawning, ports)
import ingest_postgres as pg_bench  # noqa: E402  (bench/ingest_postgres.py: rows, raw COPY)

from halswarm.store.engine import open_connection, parse_storage_url  # noqa: E402
from halswarm.store.migrations import migrate  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    st = _stat(pid)
    return (int(st[11]) + int(st[12])) / TICK if st else 0.0


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its live children (backends, WAL writer,
    checkpointer...) and the children it already reaped (backends of closed connections)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = _stat(int(d))
        if st is None:
            continue
        if int(d) == postmaster:
            total += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
        elif int(st[1]) == postmaster:
            total += int(st[11]) + int(st[12])
    return total / TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]
    return (sum(vals) - idle) / TICK, sum(vals) / TICK


def wal_flushes(url: str) -> int:
    """WAL fsyncs of the cluster so far (pg_stat_wal.wal_sync): one per durable commit, or fewer when
    concurrent commits share one."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
        return int(row[0]) if row else 0


def last_event_id(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_id_seq").fetchone()
        return int(row[0]) if row else 0


def supervisors_run(cluster: PostgresCluster, count: int, agents: int, seconds: float, warmup: float,
                    log_level: str = "warning") -> dict[str, Any]:
    """`count` supervisors on one fresh database, `agents` simulated agents on each: the figures."""
    import psycopg

    url = cluster.fresh_database()
    conn = open_connection(parse_storage_url(url))
    migrate(conn)  # once, before the supervisors start side by side
    conn.close()
    work = Path(tempfile.mkdtemp(prefix="hal-bench-ha-"))
    token = secrets.token_hex(32)
    sups: list[tuple[subprocess.Popen[bytes], int]] = []
    gens: list[subprocess.Popen[str]] = []
    try:
        for k in range(count):
            ws_port, http_port = ws_bench.free_port(), ws_bench.free_port()
            cfg = {"server": {"host": "127.0.0.1", "port": ws_port, "http_port": http_port, "auth_token": token,
                              "heartbeat_interval_sec": 30},
                   "database": {"path": str(work / f"unused-{k}.db")}, "storage": {"url": url},
                   "log": {"level": log_level, "format": "json"}}
            path = work / f"sup-{k}.json"
            path.write_text(json.dumps(cfg))
            path.chmod(0o600)
            sups.append((ws_bench._spawn(["-m", "halswarm.supervisor.main", "--config", str(path)],
                                         work / f"sup-{k}.log"), ws_port))
            ws_bench._wait_port(http_port, timeout=90)
        # Every agent connects and registers before the window; on two busy cores 100 agents can take seconds.
        start_at = time.monotonic() + 4.0 + 0.03 * agents * count
        warm_at, end_at = start_at + warmup, start_at + warmup + seconds
        for k, (_, ws_port) in enumerate(sups):
            cmd = ws_bench.loadgen_cmd(f"ws://127.0.0.1:{ws_port}/ws/agent", token, agents, seconds, False,
                                       first=k * agents, start_at=start_at, warmup=warmup)
            gens.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO))

        def sample() -> dict[str, Any]:
            return {"t": time.monotonic(), "sup": [proc_cpu(p.pid) for p, _ in sups],
                    "gen": [proc_cpu(g.pid) for g in gens], "pg": server_cpu(cluster.pid or 0),
                    "machine": machine_busy(), "wal": wal_flushes(cluster.url()), "id": last_event_id(url)}

        time.sleep(max(0.0, warm_at - time.monotonic()))
        a = sample()
        time.sleep(max(0.0, end_at - time.monotonic()))
        b = sample()
        results = []
        for g in gens:
            out, err = g.communicate(timeout=seconds * 3 + 180)
            if g.returncode != 0:
                raise RuntimeError(f"load generator failed: {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for g in gens:
            if g.poll() is None:
                g.kill()
                g.wait(10)
        for p, _ in sups:
            ws_bench._stop(p)
        shutil.rmtree(work, ignore_errors=True)
    with psycopg.connect(url) as pconn:
        stored, dupes = pconn.execute(
            "SELECT COUNT(*), COUNT(*) - COUNT(DISTINCT (node_id, seq)) FROM events WHERE seq IS NOT NULL").fetchone()
    cluster.drop_database(url)
    span = b["t"] - a["t"]
    eps = [float(r["events_per_s"]) for r in results]
    acked = sum(eps) * seconds
    busy = (b["machine"][0] - a["machine"][0]) / span
    rows = b["id"] - a["id"]
    return {"eps": sum(eps), "each": eps, "sent": [int(r["sent"]) for r in results],
            "error_samples": [e for r in results for e in r["errors"]], "stored": int(stored), "dupes": int(dupes),
            "errors": sum(int(r["error_count"]) for r in results),
            "sup_cores": [(y - x) / span for x, y in zip(a["sup"], b["sup"], strict=True)],
            "gen_cores": [(y - x) / span for x, y in zip(a["gen"], b["gen"], strict=True)],
            "pg_cores": (b["pg"] - a["pg"]) / span, "machine_cores": busy,
            "us_per_event_sup": sum(y - x for x, y in zip(a["sup"], b["sup"], strict=True)) / max(1.0, acked) * 1e6,
            "us_per_event_pg": (b["pg"] - a["pg"]) / max(1.0, acked) * 1e6,
            "us_per_event_gen": sum(y - x for x, y in zip(a["gen"], b["gen"], strict=True)) / max(1.0, acked) * 1e6,
            "rows_per_flush": rows / max(1, b["wal"] - a["wal"]), "load": os.getloadavg()[0]}


def describe(name: str, r: dict[str, Any]) -> str:
    sups = " ".join(f"{c:.2f}" for c in r["sup_cores"])
    gens = " ".join(f"{c:.2f}" for c in r["gen_cores"])
    each = " + ".join(f"{e:.0f}" for e in r["each"])
    return (f"{name}: {r['eps']:.0f} durable events/s ({each}); cores busy: supervisor(s) {sups}, PostgreSQL"
            f" {r['pg_cores']:.2f}, load generator(s) {gens}, whole machine {r['machine_cores']:.2f} of"
            f" {os.cpu_count()}; CPU per event: supervisors {r['us_per_event_sup']:.0f} us, PostgreSQL"
            f" {r['us_per_event_pg']:.0f} us, load generators {r['us_per_event_gen']:.0f} us;"
            f" {r['rows_per_flush']:.0f} rows per WAL flush; stored {r['stored']},"
            f" duplicates {r['dupes']}, agent errors {r['errors']} {r['error_samples'][:1]}, sent"
            f" {'+'.join(str(x) for x in r['sent'])}; load average {r['load']:.1f}")


def ceiling(one: dict[str, Any]) -> tuple[float, float]:
    """What the CPU alone allows on this machine, from the one-supervisor run's CPU per event: a supervisor
    is one event loop (at most one core); the supervisors, PostgreSQL and the load generators together
    at most every core. (events/s of one supervisor, of two)"""
    cores = os.cpu_count() or 1
    sup, total = one["us_per_event_sup"], one["us_per_event_sup"] + one["us_per_event_pg"] + one["us_per_event_gen"]
    return min(1e6 / sup, cores * 1e6 / total), min(2e6 / sup, cores * 1e6 / total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=100, help="simulated agents per supervisor")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window of each run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of sending before each window")
    ap.add_argument("--raw-events", type=int, default=100_000, help="rows of the raw COPY baseline")
    ap.add_argument("--log-level", default="warning", help="the supervisors' log level")
    args = ap.parse_args()
    cluster = PostgresCluster()
    cluster.start()
    ones: list[float] = []
    twos: list[float] = []
    raws: list[float] = []
    ratios: list[float] = []
    clean: list[float] = []  # rounds in which every supervisor acked something in the window
    stalls = 0
    try:
        print(f"# {args.agents} agents per supervisor, {args.seconds:g} s windows, {os.cpu_count()} CPUs,"
              f" PostgreSQL {cluster.bindir.parent.name} fsync on; load average {os.getloadavg()[0]:.1f}", flush=True)
        rows = pg_bench.make_rows(args.agents, args.raw_events)
        for rnd in range(1, args.rounds + 1):
            one = supervisors_run(cluster, 1, args.agents, args.seconds, args.warmup, args.log_level)
            print(f"round {rnd}: " + describe("one supervisor", one), flush=True)
            two = supervisors_run(cluster, 2, args.agents, args.seconds, args.warmup, args.log_level)
            print(f"round {rnd}: " + describe("two supervisors", two), flush=True)
            # a stalled run flushed nothing in its window: then the other run's cadence (1 row per commit
            # would time fsyncs, not inserts)
            cadence = [r["rows_per_flush"] for r in (two, one) if min(r["each"]) > 0 and r["rows_per_flush"] >= 1]
            per_commit = round(cadence[0]) if cadence else 1000
            url = cluster.fresh_database()
            t0 = time.process_time()
            pg0 = server_cpu(cluster.pid or 0)
            try:
                raw = pg_bench.raw_copy(url, rows, args.agents, per_commit)
                raw_client_us = (time.process_time() - t0) / len(rows) * 1e6
            finally:
                cluster.drop_database(url)  # after a new connection: the raw one's backend was reaped
            raw_pg_us = (server_cpu(cluster.pid or 0) - pg0) / len(rows) * 1e6
            print(f"round {rnd}: raw COPY {raw:.0f} events/s ({per_commit} rows per commit; CPU per event:"
                  f" PostgreSQL {raw_pg_us:.0f} us, client {raw_client_us:.0f} us); load average"
                  f" {os.getloadavg()[0]:.1f}", flush=True)
            c1, c2 = ceiling(one)
            print(f"round {rnd}: CPU-bound ceiling here (one supervisor's CPU per event, {os.cpu_count()} cores"
                  f" for everything): one <= {c1:.0f}/s, two <= {c2:.0f}/s, two/one <= {c2 / c1:.2f}", flush=True)
            ratio = two["eps"] / max(1.0, one["eps"])
            stalled = [f"{name} #{k}" for name, run in (("one", one), ("two", two))
                       for k, e in enumerate(run["each"]) if e == 0]
            if stalled:  # its agents sent their window and saw no ack in the measured window
                stalls += 1
                print(f"round {rnd}: STALLED: no ack in the window from supervisor {', '.join(stalled)}", flush=True)
            else:
                clean.append(ratio)
            print(f"round {rnd}: two/one {ratio:.2f}, two/raw {two['eps'] / raw:.2f}", flush=True)
            ones.append(one["eps"])
            twos.append(two["eps"])
            raws.append(raw)
            ratios.append(ratio)
        print(f"median: one supervisor {statistics.median(ones):.0f}/s,"
              f" two supervisors {statistics.median(twos):.0f}/s, raw COPY {statistics.median(raws):.0f}/s,"
              f" two/one {statistics.median(ratios):.2f}"
              f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
        if stalls:
            print(f"{stalls} of {args.rounds} rounds had a supervisor that acked nothing in its window (a stall of"
                  f" the supervisor, see the README); two/one over the other rounds:"
                  f" {', '.join(f'{r:.2f}' for r in clean) or 'none'}")
        print(f"ratio={statistics.median(clean):.2f}" if clean else "ratio=nan")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
