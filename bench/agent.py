"""Agent benchmark: hal-agent's own footprint and the opencode -> supervisor event latency.

Runs the real supervisor, the real hal-agent managing the real (pinned) opencode, and the loopback fake
LLM of the test suite, all on this machine, then measures:

  1. idle: agent RSS and CPU over ``--idle-seconds`` with opencode up and nothing happening
     (targets: < 80 MB RSS, < 1 % CPU);
  2. busy: the same while ``--sessions`` sessions run turns back to back through the supervisor's API
     for ``--busy-seconds`` (the agent forwards every event of them), with events/s forwarded;
  3. latency: for every event of the busy phase, the time from its arrival on an independent reader
     of opencode's ``/global/event`` to its arrival on the supervisor's ``/api/v1/events/stream``
     (both readers in this process, one clock). Streamed text deltas are reported apart: the agent
     coalesces them for up to 0.5 s on purpose.

The agent figures are the agent process alone (``opencode serve`` is a separate process, ~300 MB).

  python bench/agent.py [--idle-seconds 20] [--busy-seconds 20] [--sessions 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from halswarm.agent.bridge import NOISE_TYPES  # noqa: E402
from halswarm.agent.opencode_events import SSEParser, parse_data  # noqa: E402
from tests.fakes.fake_llm import FakeLLM, opencode_config_content  # noqa: E402
from tests.support.supervisor_proc import SupervisorProc  # noqa: E402

NODE = "bench-node"
DEFAULT_OPENCODE = REPO / ".tools" / "npm" / "node_modules" / ".bin" / "opencode"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


class SSEReader:
    """Reads an SSE endpoint in a thread; calls ``on_data(text, arrival_monotonic)`` per event."""

    def __init__(self, url: str, on_data: Any, headers: dict[str, str] | None = None,
                 params: dict[str, str] | None = None) -> None:
        self.url, self.on_data, self.headers, self.params = url, on_data, headers or {}, params or {}
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SSEReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        parser = SSEParser()
        with contextlib.suppress(httpx.HTTPError), \
                httpx.Client(timeout=httpx.Timeout(5, read=60), headers=self.headers) as client, \
                client.stream("GET", self.url, params=self.params) as resp:
            self.connected.set()
            for chunk in resp.iter_bytes():
                now = time.monotonic()
                for data in parser.feed(chunk):
                    self.on_data(data, now)
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()


class Sampler:
    """CPU % and RSS of one process, sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.t0 = time.monotonic()
        self.cpu0 = sum(self.proc.cpu_times()[:2])
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                self.rss.append(self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.wall = time.monotonic() - self.t0
        self.cpu = sum(self.proc.cpu_times()[:2]) - self.cpu0
        self.rss.append(self.proc.memory_info().rss)

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu / self.wall

    @property
    def rss_mb(self) -> tuple[float, float]:
        return statistics.mean(self.rss) / 2**20, max(self.rss) / 2**20


def breakdown(sup: SupervisorProc, arrived: dict[str, float]) -> None:
    """Where the time goes, from the stored rows: opencode -> agent outbox (the event's ``timestamp``,
    set at append) -> supervisor (``received_at``)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{sup.db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT event_id, ts, received_at FROM events WHERE node_id=?", (NODE,)).fetchall()
    finally:
        conn.close()
    to_outbox, to_sup = [], []
    for eid, ts, received in rows:
        if eid in arrived:
            to_outbox.append(1000 * (ts - arrived[eid]))
            to_sup.append(1000 * (received - ts))
    print(f"  of which: opencode -> agent outbox p50 {pct(to_outbox, 50):.1f} ms p99 {pct(to_outbox, 99):.1f} ms; "
          f"outbox -> supervisor received p50 {pct(to_sup, 50):.1f} ms p99 {pct(to_sup, 99):.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--busy-seconds", type=float, default=20.0)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--opencode", default=os.environ.get("HAL_TEST_OPENCODE") or str(DEFAULT_OPENCODE))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = ap.parse_args()
    if not (os.path.isfile(args.opencode) and os.access(args.opencode, os.X_OK)):
        print(f"opencode not found at {args.opencode}; run scripts/install-test-clis.sh", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="hal-bench-agent-"))
    fake = FakeLLM().start()
    sup = SupervisorProc(root / "sup", extra={"log": {"level": "warning"}})
    agent: subprocess.Popen[bytes] | None = None
    try:
        sup.start()
        agent = start_agent(root, sup, args.opencode, fake)
        wait_ready(sup, agent)
        return run(args, root, sup, agent)
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(5)
        sup.stop()
        fake.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def start_agent(root: Path, sup: SupervisorProc, opencode: str, fake: FakeLLM) -> subprocess.Popen[bytes]:
    project = root / "projects" / "bench"
    project.mkdir(parents=True)
    home = root / "home"
    home.mkdir()
    cfg = {"supervisor_url": sup.ws_url, "auth_token": sup.token, "node_id": NODE, "opencode_port": free_port(),
           "opencode": {"manage": True, "binary": opencode}, "data_dir": str(root / "agent-data"),
           "projects": [{"name": "bench", "directory": str(project)}], "log": {"level": "warning"}}
    path = root / "agent.config.json"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_STATE_HOME": str(home / ".local/state"),
           "OPENCODE_CONFIG_CONTENT": opencode_config_content(fake.base_url), "OPENCODE_DISABLE_SHARE": "1"}
    log = open(root / "agent.log", "wb")  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen([sys.executable, "-m", "halswarm.agent.main", "--config", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def wait_ready(sup: SupervisorProc, agent: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    with sup.client() as c:
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                raise SystemExit(f"agent exited with {agent.returncode}")
            r = c.get(f"/api/v1/nodes/{NODE}")
            if r.status_code == 200 and r.json()["data"]["capabilities"].get("sessions", {}).get("available"):
                return
            time.sleep(0.2)
    raise SystemExit("agent not ready in time")


def run(args: argparse.Namespace, root: Path, sup: SupervisorProc, agent: subprocess.Popen[bytes]) -> int:
    client = sup.client()
    node = client.get(f"/api/v1/nodes/{NODE}").json()["data"]
    oc_url = node["capabilities"]["opencode_server"]["url"]

    # Readers: opencode's stream (the reference) and the supervisor's live stream.
    seen_oc: dict[str, float] = {}
    wall_oc: dict[str, float] = {}
    types: dict[str, str] = {}
    idle_count: dict[str, int] = defaultdict(int)
    idle_cv = threading.Condition()

    def on_opencode(data: str, now: float) -> None:
        ev = parse_data(data)
        if ev is None or not ev.id or ev.type in NOISE_TYPES:
            return
        if ev.id not in seen_oc:
            seen_oc[ev.id] = now
            wall_oc[ev.id] = time.time()
        types[ev.id] = ev.type
        if ev.type == "session.idle" and ev.session_id:
            with idle_cv:
                idle_count[ev.session_id] += 1
                idle_cv.notify_all()

    seen_sup: dict[str, float] = {}

    def on_supervisor(data: str, now: float) -> None:
        with contextlib.suppress(ValueError):
            ev = json.loads(data)
            if ev.get("event_id"):
                seen_sup.setdefault(ev["event_id"], now)

    oc_reader = SSEReader(oc_url + "/global/event", on_opencode).start()
    sup_reader = SSEReader(sup.api + "/api/v1/events/stream", on_supervisor,
                           headers={"Authorization": f"Bearer {sup.token}"}, params={"node_id": NODE}).start()
    oc_reader.connected.wait(10)
    sup_reader.connected.wait(10)

    def turn(sid: str, text: str, timeout: float = 120) -> None:
        with idle_cv:
            before = idle_count[sid]
        r = client.post(f"/api/v1/sessions/{sid}/prompt", json={"message": text}, timeout=60)
        r.raise_for_status()
        with idle_cv:
            if not idle_cv.wait_for(lambda: idle_count[sid] > before, timeout):
                raise SystemExit(f"turn of {sid} did not end")

    sessions = []
    for _ in range(args.sessions):
        r = client.post("/api/v1/sessions", json={"project": "bench"}, timeout=60)
        r.raise_for_status()
        sessions.append(r.json()["data"]["id"])
    for sid in sessions:  # warm-up: the first turn of an instance loads opencode's plugins
        turn(sid, "warm up")
    time.sleep(2.0)

    print(f"agent pid {agent.pid}; opencode {node['capabilities']['opencode_server']['version']} (not counted); "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    with Sampler(agent.pid) as idle:
        time.sleep(args.idle_seconds)
    idle_mean, idle_max = idle.rss_mb
    print(f"idle  ({args.idle_seconds:g} s): cpu {idle.cpu_percent:.2f} %  rss mean {idle_mean:.1f} MB "
          f"max {idle_max:.1f} MB   [targets: < 1 %, < 80 MB]")

    seen_oc.clear()
    seen_sup.clear()
    stop_at = time.monotonic() + args.busy_seconds
    turns = [0] * len(sessions)

    def worker(i: int, sid: str) -> None:
        while time.monotonic() < stop_at:
            turn(sid, f"busy turn {turns[i]} of session {i}")
            turns[i] += 1

    with Sampler(agent.pid) as busy:
        threads = [threading.Thread(target=worker, args=(i, sid)) for i, sid in enumerate(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    time.sleep(1.5)  # the last coalesced deltas and acks
    oc_reader.stop()
    sup_reader.stop()
    busy_mean, busy_max = busy.rss_mb
    forwarded = [eid for eid in seen_oc if eid in seen_sup]
    print(f"busy  ({busy.wall:.1f} s, {len(sessions)} sessions, {sum(turns)} turns, "
          f"{len(seen_oc) / busy.wall:.0f} opencode events/s): cpu {busy.cpu_percent:.1f} %  "
          f"rss mean {busy_mean:.1f} MB max {busy_max:.1f} MB")
    lat = [1000 * (seen_sup[e] - seen_oc[e]) for e in forwarded if types.get(e) != "message.part.delta"]
    lat_d = [1000 * (seen_sup[e] - seen_oc[e]) for e in forwarded if types.get(e) == "message.part.delta"]
    missing = [e for e in seen_oc if types.get(e) != "message.part.delta" and e not in seen_sup]
    print(f"latency opencode event -> supervisor API (n={len(lat)}): p50 {pct(lat, 50):.1f} ms  "
          f"p99 {pct(lat, 99):.1f} ms  max {max(lat, default=float('nan')):.1f} ms")
    print(f"latency of coalesced text deltas (n={len(lat_d)}, first delta of each run): "
          f"p50 {pct(lat_d, 50):.1f} ms  p99 {pct(lat_d, 99):.1f} ms")
    breakdown(sup, {e: wall_oc[e] for e in forwarded if types.get(e) != "message.part.delta"})
    if missing:
        print(f"WARNING: {len(missing)} opencode events never seen on the supervisor stream")
    ok = idle.cpu_percent < 1.0 and idle_max < 80 and busy_max < 80 and not missing
    print("result: " + ("within targets" if ok else "OUTSIDE targets"))
    client.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
