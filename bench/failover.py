"""Failover benchmark (issue 21): time from kill -9 of a supervisor to the agent acked on the other one.

Runs two real supervisors (separate SQLite stores, one agent token) and one real hal-agent whose
``supervisor_url`` lists both, on loopback. A fake opencode (attach mode, tests/support/agent_proc.py)
makes the agent produce an event every ``--interval`` s, so a kill always lands mid-stream. Each round
SIGKILLs the supervisor the agent is on and measures the time until the other supervisor has committed
a new event of the agent (it acks right after the commit): a poll of its database every 5 ms, read-only.
The killed supervisor is then restarted (same ports and database) and becomes the next round's target.

  python bench/failover.py [--kills 20] [--interval 0.01]

Prints every round and p50/p99/max. With 20 kills p99 is the second-largest value (nearest rank).
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.agent_proc import AgentProc, FakeOpencode, node_status  # noqa: E402
from tests.support.supervisor_proc import SupervisorProc  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

NODE = "bench-failover"


def committed(sup: SupervisorProc) -> int:
    """Agent events of NODE committed in ``sup``'s database (0 before it exists)."""
    if not sup.db_path.exists():
        return 0
    conn = sqlite3.connect(f"file:{sup.db_path}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events WHERE node_id=? AND seq IS NOT NULL",
                                (NODE,)).fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def wait_new_commit(sup: SupervisorProc, before: int, since: float, timeout: float = 60.0) -> float:
    """Seconds from ``since`` until ``sup`` holds more than ``before`` events of NODE."""
    deadline = since + timeout
    while time.monotonic() < deadline:
        if committed(sup) > before:
            return time.monotonic() - since
        time.sleep(0.005)
    raise TimeoutError(f"no event committed on {sup.workdir.name} within {timeout:g} s:\n{sup.log_tail()}")


def percentile(values: list[float], pct: float) -> float:
    ranked = sorted(values)
    return ranked[max(0, math.ceil(pct / 100 * len(ranked)) - 1)]


def emit_forever(fake: FakeOpencode, sid: str, directory: str, interval: float, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        fake.emit("message.part.updated", {"sessionID": sid, "part": {"n": n}}, directory)
        n += 1
        stop.wait(interval)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.01, help="seconds between events the agent produces")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="hal-bench-failover-") as tmp_name:
        tmp = Path(tmp_name)
        proj = tmp / "project"
        proj.mkdir()
        a = SupervisorProc(tmp / "sup-a", extra={"log": {"level": "info"}})
        b = SupervisorProc(tmp / "sup-b", extra={"log": {"level": "info"}})
        b.agent_token = a.agent_token
        fake = FakeOpencode().start()
        sid = fake.add_session(str(proj))["id"]
        agent = AgentProc(tmp / "agent", [a.ws_url, b.ws_url], a.agent_token, node_id=NODE,  # type: ignore[arg-type]
                          projects=[("p", str(proj))], opencode_port=fake.port)
        stop = threading.Event()
        emitter = threading.Thread(target=emit_forever, args=(fake, sid, str(proj), args.interval, stop), daemon=True)
        times: list[float] = []
        try:
            a.start()
            b.start()
            agent.start()
            agent.wait_online(a, 60)
            wait_for(lambda: fake.connected() == 1, "the agent subscribed to the fake opencode", 30)
            emitter.start()
            wait_for(lambda: committed(a) > 20, "the stream flowing into A", 30)
            current, other = a, b
            for k in range(1, args.kills + 1):
                before = committed(other)
                t0 = time.monotonic()
                current.kill9()
                took = wait_new_commit(other, before, t0)
                times.append(took)
                print(f"kill {k:2d}: {current.workdir.name} -> {other.workdir.name}: acked after {took * 1000:7.1f} ms",
                      flush=True)
                current.start(60)  # back (same ports, same database) for the next round
                wait_for(lambda o=other: node_status(o, NODE) == "online", "the agent settled", 30)  # type: ignore[misc]
                current, other = other, current
        finally:
            stop.set()
            agent.stop()
            for sup in (a, b):
                sup.stop()
            fake.stop()

    print(f"\nfailover, kill -9 -> agent acked on the other supervisor, {len(times)} kills "
          f"(events every {args.interval * 1000:g} ms):")
    print(f"  p50 {percentile(times, 50) * 1000:.0f} ms   p99 {percentile(times, 99) * 1000:.0f} ms   "
          f"max {max(times) * 1000:.0f} ms   mean {statistics.mean(times) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
