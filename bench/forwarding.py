"""Command forwarding benchmark (issue 21): round trip of an operator command sent to the supervisor
holding the node (local, the baseline) and to one that does not (forwarded through PostgreSQL).

Starts a private PostgreSQL cluster (tests/support/postgres.py), three real supervisors sharing it and
one real hal-agent (attach mode over a fake opencode) registered with A. Each round sends
`session_status` for one session through A, then through C (C forwards it to A: a `command_forwards`
row, NOTIFY, A's claim, the agent's answer, A's result row, NOTIFY), with one kept-alive HTTP client per
supervisor.

  python bench/forwarding.py [--rounds 200]

Prints p50/p99/max of both and the forwarding overhead (forwarded p50 - local p50).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.support.agent_proc import AgentProc, FakeOpencode  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.supervisor_proc import SupervisorProc  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

NODE = "bench-forward"


def supervisor(tmp: Path, name: str, cluster: PostgresCluster, url: str) -> SupervisorProc:
    secret = tmp / f"{name}.password"
    secret.write_text(cluster.password + "\n")
    secret.chmod(0o600)
    return SupervisorProc(tmp / name, extra={"storage": {"url": url, "password_file": str(secret)}})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    cluster = PostgresCluster()
    cluster.start()
    fake = FakeOpencode().start()
    sups: list[SupervisorProc] = []
    agent: AgentProc | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="hal-bench-forward-") as tmp_name:
            tmp = Path(tmp_name)
            url = cluster.password_database()
            a, b, c = (supervisor(tmp, n, cluster, url) for n in ("a", "b", "c"))
            sups = [a, b, c]
            b.agent_token = c.agent_token = a.agent_token
            for s in sups:
                s.start(timeout=90)
            proj = tmp / "p"
            proj.mkdir()
            sid = fake.add_session(str(proj))["id"]
            agent = AgentProc(tmp / "agent", a.ws_url, a.agent_token, node_id=NODE, projects=[("p", str(proj))],
                              opencode_port=fake.port).start()
            agent.wait_online(a, 60, sessions_available=True)
            clients = {name: s.client() for name, s in (("local", a), ("forwarded", c))}

            def send(client: httpx.Client) -> float:
                t = time.perf_counter()
                r = client.post("/api/v1/commands", json={"type": "session_status", "target": {"session_id": sid}})
                took = (time.perf_counter() - t) * 1000
                body: dict[str, Any] = r.json()
                assert r.status_code == 200 and body["data"]["status"] == "success", body
                return took

            wait_for(lambda: send(clients["forwarded"]), "C resolves the session", 60)
            for client in clients.values():  # warm-up
                for _ in range(5):
                    send(client)
            ms: dict[str, list[float]] = {"local": [], "forwarded": []}
            for _ in range(args.rounds):
                for name, client in clients.items():
                    ms[name].append(send(client))
            for client in clients.values():
                client.close()
            for name, values in ms.items():
                print(f"{name:>9}: p50 {statistics.median(values):6.1f} ms  p99 {pct(values, 0.99):6.1f} ms"
                      f"  max {max(values):6.1f} ms  (n={len(values)})")
            print(f"forwarding overhead (p50 forwarded - p50 local): "
                  f"{statistics.median(ms['forwarded']) - statistics.median(ms['local']):.1f} ms")
            agent.stop()
            for s in sups:
                s.stop()
    finally:
        if agent is not None:
            agent.stop()
        for s in sups:
            s.stop()
        fake.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
