"""Cross-supervisor stream latency (issue 21, reads): an event ingested by supervisor A, seen on an SSE
stream of supervisor B, both on one PostgreSQL.

Starts a private PostgreSQL cluster (tests/support/postgres.py), two real supervisors on it, one
SimAgent on A sending an event every ``--interval`` s, and one SSE reader on each supervisor. For every
event it takes the time from its send (the agent side) to its arrival on each stream. A's own stream is
the baseline measured in the same run (on PostgreSQL it reads through the same store tail); the figure
of the change is B minus A.

  python bench/ha_stream.py [--events 1000] [--interval 0.01] [--single]

`--single`: supervisor A alone with its own stream (what one supervisor on PostgreSQL costs; this file and
tests/support/sse.py copied into an older checkout measure its code the same way).

Prints p50/p99/max for both streams, and how many events each stream got (must be all of them).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.test_ha_leader import shared_supervisor  # noqa: E402
from tests.support.agentsim import SimAgent  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.sse import SseReader  # noqa: E402
from tests.support.waiting import until  # noqa: E402


def figures(name: str, lat: list[float]) -> str:
    lat = sorted(lat)
    p99 = lat[max(0, round(len(lat) * 0.99) - 1)]
    return f"{name}: {len(lat)} events, p50 {statistics.median(lat):.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms"


async def run(events: int, interval: float, single: bool) -> None:
    cluster = PostgresCluster()
    cluster.start()
    tmp = Path(tempfile.mkdtemp(prefix="hal-bench-ha-stream-"))
    url = cluster.password_database()
    a = shared_supervisor(tmp, "a", cluster, url)
    b = shared_supervisor(tmp, "b", cluster, url)
    agent = SimAgent("", "", "bench")
    readers: list[SseReader] = []
    try:
        a.start(timeout=90)
        on_a = SseReader(a, {"node_id": "bench"}).start()
        readers.append(on_a)
        if not single:
            b.start(timeout=90)
            readers.append(SseReader(b, {"node_id": "bench"}).start())
        await until(lambda: all(r.connected.is_set() for r in readers), "the streams open", 60)
        agent = SimAgent(a.ws_url, a.agent_token, "bench", [("p", "/p")])
        await agent.connect()
        loop = asyncio.get_running_loop()
        sent: dict[str, float] = {}
        for seq in range(1, events + 1):
            eid = f"bench-{seq:06d}"
            sent[eid] = loop.time()
            await agent.send_event(seq, "message.part.delta", session_id="ses_bench", project="p", event_id=eid)
            await asyncio.sleep(interval)
        await agent.wait_acked(events, timeout=120)

        def got_all(r: SseReader) -> bool:
            return sum(1 for _, ev in r.events if ev["event_id"] in sent) >= events

        await until(lambda: all(got_all(r) for r in readers), "every event on the streams", 120)
        names = ["A's own stream (baseline)", "B's stream (the other supervisor)"]
        for name, r in zip(names, readers, strict=False):
            lat = [(t - sent[ev["event_id"]]) * 1000 for (_, ev), t in zip(r.events, r.received_at, strict=True)
                   if ev["event_id"] in sent]
            seqs = [ev["seq"] for _, ev in r.events if ev["event_id"] in sent]
            assert seqs == list(range(1, events + 1)), f"{name}: events missing, repeated or out of order"
            print(figures(name, lat))
    finally:
        for r in readers:
            r.stop()
        await agent.close()
        a.stop()
        b.stop()
        cluster.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--single", action="store_true", help="supervisor A and its stream only")
    args = p.parse_args()
    asyncio.run(run(args.events, args.interval, args.single))


if __name__ == "__main__":
    main()
