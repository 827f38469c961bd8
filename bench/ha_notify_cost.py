"""What the HA streams' NOTIFY costs durable ingest on PostgreSQL (issue 21, reads), measured in one run.

The supervisor's writer path of bench/ingest_postgres.py (halswarm.store.writer.Writer, jobs shaped like
the ingestor's, a job counted once its COMMIT returned), on a private PostgreSQL cluster, in alternating
rounds: without the event tail (the baseline) and with it (halswarm.supervisor.runtime.event_tail.EventTail
told of every commit, as the ingestor does: one `pg_notify` per wake-up from a reader connection, after the
commit), while a second connection LISTENs (another supervisor). No stream is open, as on a busy
supervisor nobody watches; a stream adds a probe and a read per wake-up.

  python bench/ha_notify_cost.py [--agents 100] [--events 60000] [--rounds 3]

Prints events/s of each round and `ratio=<with NOTIFY / without>` of the best and of the median rounds on
the last line (the rounds alternate, so load from elsewhere on the machine hits both alike).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ingest_postgres import make_rows, prepare  # noqa: E402

from halswarm.store.pg import PgReader  # noqa: E402
from halswarm.store.repos.events import EVENTS_CHANNEL, insert_events  # noqa: E402
from halswarm.store.repos.nodes import set_nodes_last_seq  # noqa: E402
from halswarm.store.writer import Writer  # noqa: E402
from halswarm.supervisor.runtime.broadcast import EventBroadcast  # noqa: E402
from halswarm.supervisor.runtime.event_tail import EventTail  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402


async def durable(url: str, rows: list[tuple[Any, ...]], agents: int, notify: bool, job_events: int = 200,
                  in_flight: int = 8) -> tuple[float, int]:
    """(events/s acked after commit, NOTIFYs sent)."""
    conn = prepare(url, agents)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    reader = PgReader(url)
    tail = EventTail(reader, EventBroadcast())
    if notify:
        await tail.start()
    jobs = [rows[i:i + job_events] for i in range(0, len(rows), job_events)]
    sem = asyncio.Semaphore(in_flight)

    async def one(chunk: list[tuple[Any, ...]]) -> None:
        highs: dict[str, int] = {}
        for r in chunk:
            highs[r[0]] = max(highs.get(r[0], 0), r[1])

        def job(c: Any) -> int:
            n = insert_events(c, chunk)
            set_nodes_last_seq(c, highs)
            return n

        async with sem:
            await writer.run(job)
        if notify:
            tail.committed()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(j) for j in jobs))
    elapsed = time.perf_counter() - t0
    await tail.stop()
    await writer.stop()
    reader.close()
    conn.close()
    return len(rows) / elapsed, tail.notifies_sent


def listen(url: str, stop: threading.Event, got: list[int]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                got[0] += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = make_rows(args.agents, args.events)
    cluster = PostgresCluster()
    cluster.start()
    runs: dict[bool, list[float]] = {False: [], True: []}
    try:
        for rnd in range(1, args.rounds + 1):
            for notify in ((False, True) if rnd % 2 else (True, False)):  # each goes first every other round
                url = cluster.fresh_database()
                stop, got = threading.Event(), [0]
                listener = threading.Thread(target=listen, args=(url, stop, got), daemon=True)
                listener.start()
                eps, sent = asyncio.run(durable(url, rows, args.agents, notify))
                stop.set()
                listener.join(5)
                runs[notify].append(eps)
                print(f"round {rnd} {'with NOTIFY' if notify else 'without   '}: {eps:8.0f} events/s"
                      f" ({sent} NOTIFYs sent, {got[0]} received by the other connection)")
                cluster.drop_database(url)
    finally:
        cluster.stop()
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"best: without={max(runs[False]):.0f}/s with={max(runs[True]):.0f}/s;"
          f" median: without={med[False]:.0f}/s with={med[True]:.0f}/s")
    print(f"ratio={max(runs[True]) / max(runs[False]):.2f} (best) {med[True] / med[False]:.2f} (median)")


if __name__ == "__main__":
    main()
