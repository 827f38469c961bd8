"""Durable ingest on PostgreSQL against a raw batched-insert baseline, measured in the same run.

Starts a private PostgreSQL cluster (tests/support/postgres.py: initdb/pg_ctl in a temp dir, fsync on,
synchronous_commit on) and, on fresh databases of it:
  1. durable: the supervisor's own path, halswarm.store.writer.Writer on the PostgreSQL connection,
     fed jobs shaped like the ingestor's (insert_events + set_nodes_last_seq for N agents), a job
     counted only when its future resolved, i.e. after the COMMIT that holds it (the ack rule);
  2. raw COPY: the same rows with psycopg's COPY ... FROM STDIN, committed every R rows, where R is
     the average rows per commit the durable path reached (same fsync cadence);
  3. raw INSERT: the same rows as multi-row INSERT statements (400 rows each), committed every R rows.
Prints events/s and CPU per event (this process and the PostgreSQL server) of each, `cpu_ratio=` (raw
COPY's CPU per event over the durable path's: steadier than events/s on a loaded machine) and
`ratio=<durable / best raw>` on the last line (issue 21 asks >= 0.5).

Optionally (--supervisor-seconds S) the real hal-supervisor with `storage.url` on the same cluster, saturated
by bench/ingest.py's simulated agents over the WebSocket: durable events/s as the agents see their acks.

  python bench/ingest_postgres.py [--agents 100] [--events 200000] [--job-events 200] [--in-flight 8]
                                  [--supervisor-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from halswarm.core.timestamps import sql_datetimes  # noqa: E402
from halswarm.store.engine import open_connection, parse_storage_url  # noqa: E402
from halswarm.store.migrations import migrate  # noqa: E402
from halswarm.store.repos.events import insert_events  # noqa: E402
from halswarm.store.repos.nodes import set_nodes_last_seq, upsert_node  # noqa: E402
from halswarm.store.writer import Writer  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

DELTA = "some streamed model output, about this long " * 2
COLS = ("node_id", "seq", "event_id", "session_id", "project", "type", "data", "ts", "received_at", "timestamp")


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its live children (backends, WAL writer...)
    and the children it already reaped (backends of closed connections)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d) == postmaster:
            total += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
        elif int(st[1]) == postmaster:
            total += int(st[11]) + int(st[12])
    return total / tick


def make_rows(agents: int, total: int) -> list[tuple[Any, ...]]:
    """`total` events round-robin over `agents` nodes, each node's seq counting from 1."""
    now = time.time()
    rows = []
    seqs = [0] * agents
    for k in range(total):
        a = k % agents
        seqs[a] += 1
        sid = f"ses_bench{a}"
        data = json.dumps({"sessionID": sid, "messageID": "msg_1", "partID": "prt_1", "field": "text",
                           "delta": DELTA}, separators=(",", ":"))
        ts = now + k * 1e-4
        rows.append((f"node-{a:03d}", seqs[a], f"ev-{k}", sid, "p", "message.part.delta", data, ts, ts))
    return rows


def prepare(url: str, agents: int) -> Any:
    from halswarm.core.model import Node

    conn = open_connection(parse_storage_url(url))
    migrate(conn)
    conn.execute("BEGIN")
    for a in range(agents):
        upsert_node(conn, Node(id=f"node-{a:03d}", status="online"))
    conn.execute("COMMIT")
    return conn


async def durable(url: str, rows: list[tuple[Any, ...]], agents: int, job_events: int, in_flight: int
                  ) -> tuple[float, float]:
    """(events/s acked after commit, average rows per commit) through the supervisor's Writer."""
    conn = prepare(url, agents)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    jobs = [rows[i:i + job_events] for i in range(0, len(rows), job_events)]
    sem = asyncio.Semaphore(in_flight)
    acked = 0

    async def one(chunk: list[tuple[Any, ...]]) -> None:
        nonlocal acked
        highs: dict[str, int] = {}
        for r in chunk:
            highs[r[0]] = max(highs.get(r[0], 0), r[1])

        def job(c: Any) -> int:
            n = insert_events(c, chunk)
            set_nodes_last_seq(c, highs)
            return n

        async with sem:
            n = await writer.run(job)
        acked += n

    t0 = time.perf_counter()
    await asyncio.gather(*(one(j) for j in jobs))
    elapsed = time.perf_counter() - t0
    await writer.stop()
    stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    assert acked == len(rows) == stored, (acked, len(rows), stored)
    return len(rows) / elapsed, len(rows) / max(1, writer.batches)


def raw_copy(url: str, rows: list[tuple[Any, ...]], agents: int, per_commit: int) -> float:
    conn = prepare(url, agents)
    raw = conn.raw
    stamps = sql_datetimes([r[7] for r in rows])
    full = [(*r, s) for r, s in zip(rows, stamps, strict=True)]
    t0 = time.perf_counter()
    for i in range(0, len(full), per_commit):
        with raw.transaction(), raw.cursor() as cur, cur.copy(f"COPY events ({', '.join(COLS)}) FROM STDIN") as cp:
            for r in full[i:i + per_commit]:
                cp.write_row(r)
    elapsed = time.perf_counter() - t0
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(rows)
    conn.close()
    return len(rows) / elapsed


def raw_insert(url: str, rows: list[tuple[Any, ...]], agents: int, per_commit: int) -> float:
    conn = prepare(url, agents)
    raw = conn.raw
    stamps = sql_datetimes([r[7] for r in rows])
    full = [(*r, s) for r, s in zip(rows, stamps, strict=True)]
    one = "(" + ",".join(["%s"] * len(COLS)) + ")"
    t0 = time.perf_counter()
    for i in range(0, len(full), per_commit):
        with raw.transaction(), raw.cursor() as cur:
            batch = full[i:i + per_commit]
            for j in range(0, len(batch), 400):
                part = batch[j:j + 400]
                cur.execute(f"INSERT INTO events ({', '.join(COLS)}) VALUES " + ",".join([one] * len(part)),
                            [v for r in part for v in r])
    elapsed = time.perf_counter() - t0
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(rows)
    conn.close()
    return len(rows) / elapsed


def supervisor_run(cluster: PostgresCluster, agents: int, seconds: float) -> tuple[float, int, int]:
    """The real hal-supervisor on a fresh PostgreSQL database, saturated by bench/ingest.py's load generator
    (N agents over the real WebSocket, a window of unacked events each): (durable events/s acked, events
    stored, duplicates)."""
    import secrets
    import tempfile

    import psycopg

    sys.path.insert(0, str(REPO / "bench"))
    import ingest as ws_bench  # bench/ingest.py: its agents, its spawning and port helpers

    url = cluster.fresh_database()
    work = Path(tempfile.mkdtemp(prefix="hal-bench-pg-"))
    token = secrets.token_hex(32)
    ws_port, http_port = ws_bench.free_port(), ws_bench.free_port()
    cfg = {"server": {"host": "127.0.0.1", "port": ws_port, "http_port": http_port, "auth_token": token,
                      "heartbeat_interval_sec": 30},
           "database": {"path": str(work / "unused.db")}, "storage": {"url": url},
           "log": {"level": "warning", "format": "json"}}
    (work / "sup.json").write_text(json.dumps(cfg))
    (work / "sup.json").chmod(0o600)
    sup = ws_bench._spawn(["-m", "halswarm.supervisor.main", "--config", str(work / "sup.json")], work / "sup.log")
    try:
        ws_bench._wait_port(http_port, timeout=60)
        res = ws_bench._run_loadgen(f"ws://127.0.0.1:{ws_port}/ws/agent", token, agents, seconds, False,
                                    seconds * 3 + 120)
    finally:
        ws_bench._stop(sup)
    with psycopg.connect(url) as conn:
        stored, dupes = conn.execute(
            "SELECT COUNT(*), COUNT(*) - COUNT(DISTINCT (node_id, seq)) FROM events WHERE seq IS NOT NULL").fetchone()
    cluster.drop_database(url)
    return float(res["events_per_s"]), int(stored), int(dupes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--job-events", type=int, default=200, help="events per writer job (an ingest batch)")
    ap.add_argument("--in-flight", type=int, default=8, help="writer jobs queued at once")
    ap.add_argument("--rounds", type=int, default=2, help="each measurement this many times, best kept")
    ap.add_argument("--supervisor-seconds", type=float, default=0,
                    help="also run the real hal-supervisor on PostgreSQL under bench/ingest.py's agents this long")
    args = ap.parse_args()
    rows = make_rows(args.agents, args.events)
    cluster = PostgresCluster()
    cluster.start()
    try:
        best: dict[str, float] = {}
        per_commit = 0.0
        paired: list[float] = []
        cpu: dict[str, list[float]] = {}
        for rnd in range(args.rounds):
            this: dict[str, float] = {}
            for name in ("durable", "copy", "insert"):
                url = cluster.fresh_database()
                c0, s0 = time.process_time(), server_cpu(cluster.pid or 0)
                try:
                    if name == "durable":
                        eps, per_commit = asyncio.run(durable(url, rows, args.agents, args.job_events, args.in_flight))
                    elif name == "copy":
                        eps = raw_copy(url, rows, args.agents, max(1, round(per_commit)))
                    else:
                        eps = raw_insert(url, rows, args.agents, max(1, round(per_commit)))
                finally:
                    cluster.drop_database(url)  # a new connection: the measured one's backend was reaped
                client_us = (time.process_time() - c0) / len(rows) * 1e6
                server_us = (server_cpu(cluster.pid or 0) - s0) / len(rows) * 1e6
                cpu.setdefault(name, []).append(client_us + server_us)
                best[name] = max(best.get(name, 0.0), eps)
                this[name] = eps
                print(f"round {rnd + 1}: {name:8s} {eps:10.0f} events/s, CPU per event: client {client_us:.0f} us,"
                      f" PostgreSQL {server_us:.0f} us"
                      + (f" ({per_commit:.0f} rows per commit)" if name == "durable" else "")
                      + f"; load average {os.getloadavg()[0]:.1f}", flush=True)
            paired.append(this["durable"] / max(this["copy"], this["insert"]))
            print(f"round {rnd + 1}: ratio {paired[-1]:.2f}", flush=True)
        print(f"events={args.events} agents={args.agents} job_events={args.job_events} in_flight={args.in_flight}")
        print(f"best: durable={best['durable']:.0f}/s raw_copy={best['copy']:.0f}/s raw_insert={best['insert']:.0f}/s"
              f" (best-of ratio {best['durable'] / max(best['copy'], best['insert']):.2f})")
        if args.supervisor_seconds:
            eps, stored, dupes = supervisor_run(cluster, args.agents, args.supervisor_seconds)
            print(f"hal-supervisor on PostgreSQL: {eps:.0f} durable events/s acked ({args.agents} agents over the"
                  f" WebSocket, {args.supervisor_seconds:g} s), stored {stored}, duplicates {dupes};"
                  f" / best raw {eps / max(best['copy'], best['insert']):.2f}")
        # CPU per event (this process + the server, preparing the rows and the database included) is much
        # steadier than events/s on a machine others load: raw COPY's over the durable path's.
        med = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"CPU per event (median): durable {med['durable']:.0f} us, raw COPY {med['copy']:.0f} us, raw INSERT"
              f" {med['insert']:.0f} us; cpu_ratio={med['copy'] / med['durable']:.2f} (raw COPY / durable)")
        # The figure: the median over rounds of durable / best raw measured back to back (a busy machine
        # slows both sides of a pair alike, far less so two bests taken minutes apart).
        print(f"ratio={statistics.median(paired):.2f}")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
