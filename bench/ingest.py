"""Ingest benchmark: durable events/s and ack latency of the real supervisor, against baselines.

Runs, in one invocation on the same machine:
  1. the real `hal-supervisor` (child process) with N simulated agents in another process;
  2. a raw `websockets` server (child process, counts frames and acks every 50) with the same load;
  3. raw SQLite batched inserts of the same rows (WAL, synchronous=FULL, this process);
  4. optionally M mostly idle agents held open, to read the supervisor's RSS.
The last line is `ratio=<durable supervisor events/s / raw websockets frames/s>`; `cpu_ratio=` before it
compares CPU time per event (raw server / supervisor), which a loaded machine disturbs much less.

  python bench/ingest.py [--agents 100] [--seconds 10] [--idle 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WINDOW = 200  # unacked events a saturating agent keeps in flight
DATA = {"sessionID": "ses_bench", "messageID": "msg_1", "partID": "prt_1", "field": "text",
        "delta": "some streamed model output, about this long " * 2}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- load generator (child process)

def _frame_maker(i: int):  # type: ignore[no-untyped-def]
    """Pre-encoded event frames: the generator must be much cheaper than what it measures."""
    # Each simulated node streams its own session: a session belongs to one node (another node naming it
    # is refused by the hub), as on a real fleet.
    sid = f"ses_bench{i}"
    data = json.dumps({**DATA, "sessionID": sid}, separators=(",", ":"))
    head = '{"version":1,"type":"event","request_id":null,"timestamp":'
    mid = ',"payload":{"seq":'
    rest = f',"session_id":"{sid}","project":"p","type":"message.part.delta","data":{data},"timestamp":'

    def make(seq: int, ts: float) -> str:
        t = repr(ts)
        return f'{head}{t}{mid}{seq},"event_id":"b{i}-{seq}"{rest}{t}}}}}'

    return make


def _ack_seq(frame: str) -> int | None:
    if '"type":"ack"' not in frame:
        return None
    k = frame.rfind('"seq":')
    return int(frame[k + 6:frame.index("}", k)])


async def _agent(i: int, url: str, token: str | None, raw: bool, window: int, rate: float | None,
                 start_at: float, end_at: float, warm_at: float, out: dict) -> None:
    """One simulated agent. `rate` None: saturate (keep `window` unacked); else pace at `rate` events/s."""
    from websockets.asyncio.client import connect

    from halswarm.protocol import ProjectRef, Register, encode

    make = _frame_maker(i)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(url, additional_headers=headers, max_size=None, open_timeout=60,
                       ping_interval=None) as ws:
        seq = 0
        if not raw:
            await ws.send(encode(Register(node_id=f"bench-{i}", hostname="bench", version="bench",
                                          projects=[ProjectRef("p", "/p")])))
            reg = json.loads(await ws.recv())
            assert reg["type"] == "registered", reg
            seq = reg["payload"]["resume_from_seq"]
        acked = seq
        base: int | None = None
        sent_times: deque[tuple[int, float]] = deque()
        can_send = asyncio.Event()
        can_send.set()
        lat = out["lat"]

        async def reader() -> None:
            nonlocal acked, base
            async for frame in ws:
                a = _ack_seq(frame)
                if a is None:
                    continue
                now = time.monotonic()
                while sent_times and sent_times[0][0] <= a:
                    _, t = sent_times.popleft()
                    if warm_at <= t and now <= end_at:
                        lat.append(now - t)
                if warm_at <= now <= end_at:
                    if base is None:
                        base = acked
                    out["acked"] += a - max(acked, base)
                acked = max(acked, a)
                if seq - acked < window:
                    can_send.set()

        rt = asyncio.create_task(reader())
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        interval = 1.0 / rate if rate else 0.0
        next_at = time.monotonic()
        while time.monotonic() < end_at:
            if seq - acked >= window:
                can_send.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(can_send.wait(), 1)
                continue
            if rate:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
            seq += 1
            now = time.monotonic()
            sent_times.append((seq, now))
            await ws.send(make(seq, time.time()))
            out["sent"] += 1
            if not rate and seq % 32 == 0:
                await asyncio.sleep(0)
        rt.cancel()


async def _loadgen(url: str, token: str | None, agents: int, seconds: float, raw: bool, window: int,
                   rate: float | None, first: int = 0, start_at: float | None = None, warmup: float = 1.0) -> dict:
    out = {"acked": 0, "sent": 0, "lat": []}
    # let everyone connect first; `start_at` (CLOCK_MONOTONIC, one clock for every process of the machine)
    # lines up the measured windows of several load generators
    t0 = start_at if start_at is not None else time.monotonic() + 2.0 + agents * 0.01
    warm = t0 + warmup
    end = warm + seconds
    per_agent = rate / agents if rate else None
    tasks = [asyncio.create_task(_agent(i, url, token, raw, window, per_agent, t0, end, warm, out))
             for i in range(first, first + agents)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    lat = sorted(out["lat"])

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"events_per_s": out["acked"] / seconds, "sent": out["sent"], "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "errors": errors[:3], "error_count": len(errors)}


async def _idle(url: str, token: str, agents: int, hold: float, pid: int) -> dict:
    import psutil
    from websockets.asyncio.client import connect

    from halswarm.protocol import Heartbeat, ProjectRef, Register, encode

    conns = []
    rss_before = psutil.Process(pid).memory_info().rss
    started = time.monotonic()
    for i in range(agents):
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=60)
        await ws.send(encode(Register(node_id=f"idle-{i}", hostname="idle", version="bench",
                                      projects=[ProjectRef("p", "/p")])))
        conns.append(ws)
    for ws in conns:
        await ws.recv()
    connect_s = time.monotonic() - started
    end = time.monotonic() + hold
    while time.monotonic() < end:  # mostly idle: one heartbeat each per second
        for ws in conns:
            await ws.send(encode(Heartbeat({"cpu_percent": 1.0})))
        await asyncio.sleep(1.0)
    rss = psutil.Process(pid).memory_info().rss
    for ws in conns:
        with contextlib.suppress(Exception):
            await ws.close()
    return {"agents": agents, "connect_s": connect_s, "rss_mb": rss / 2**20, "rss_before_mb": rss_before / 2**20}


# ---------------------------------------------------------------- raw websockets server (child process)

async def _raw_server(port: int) -> None:
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        n = 0
        async for _ in ws:
            n += 1
            if n % 50 == 0:
                await ws.send(f'{{"version":1,"type":"ack","request_id":null,"timestamp":1,"payload":{{"seq":{n}}}}}')

    # Same transport settings as the supervisor's hub (no permessage-deflate).
    async with serve(handler, "127.0.0.1", port, max_size=None, ping_interval=None, compression=None):
        await asyncio.Future()


# ---------------------------------------------------------------- raw SQLite baseline (this process)

def sqlite_baseline(seconds: float, batch: int = 500) -> float:
    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(Path(d) / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, node_id TEXT, seq INTEGER,"
                     " event_id TEXT, session_id TEXT, project TEXT, type TEXT, data TEXT, timestamp REAL,"
                     " received_at REAL, UNIQUE(node_id, seq))")
        data = json.dumps(DATA)
        n = 0
        end = time.monotonic() + seconds
        start = time.monotonic()
        while time.monotonic() < end:
            rows = [("raw", n + k, f"e{n + k}", "ses", "p", "message.part.delta", data, time.time(), time.time())
                    for k in range(1, batch + 1)]
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO events(node_id, seq, event_id, session_id, project, type, data,"
                             " timestamp, received_at) VALUES (?,?,?,?,?,?,?,?,?)", rows)
            conn.execute("COMMIT")
            n += batch
        rate = n / (time.monotonic() - start)
        conn.close()
        return rate


# ---------------------------------------------------------------- orchestration

def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    f = open(log, "ab")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    f.close()
    return p


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def loadgen_cmd(url: str, token: str | None, agents: int, seconds: float, raw: bool, window: int = WINDOW,
                rate: float | None = None, first: int = 0, start_at: float | None = None, warmup: float = 1.0
                ) -> list[str]:
    """The load generator's command line (`first`: the index of its first agent, node `bench-<first>`;
    `start_at`: when its agents start sending, on the machine's monotonic clock; `warmup`: seconds of
    sending before its measured window)."""
    return [sys.executable, __file__, "--role", "loadgen", "--url", url, "--agents", str(agents),
            "--seconds", str(seconds), "--window", str(window), "--first", str(first), "--warmup", str(warmup)] + (
        ["--start-at", repr(start_at)] if start_at is not None else []) + (
        ["--raw"] if raw else []) + (["--token", token] if token else []) + (["--rate", str(rate)] if rate else [])


def _run_loadgen(url: str, token: str | None, agents: int, seconds: float, raw: bool, timeout: float,
                 window: int = WINDOW, rate: float | None = None) -> dict:
    cmd = loadgen_cmd(url, token, agents, seconds, raw, window, rate)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"load generator failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _wait_port(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} not listening")


def orchestrate(args: argparse.Namespace) -> int:
    import psutil

    work = Path(tempfile.mkdtemp(prefix="hal-bench-"))
    token = secrets.token_hex(32)
    ws_port, http_port, raw_port = free_port(), free_port(), free_port()
    cfg = {"server": {"host": "127.0.0.1", "port": ws_port, "http_port": http_port, "auth_token": token,
                      "heartbeat_interval_sec": 30},
           "database": {"path": str(work / "bench.db")}, "log": {"level": "warning", "format": "json"}}
    (work / "sup.json").write_text(json.dumps(cfg))
    (work / "sup.json").chmod(0o600)
    timeout = args.seconds * 3 + 120
    print(f"# ingest benchmark: {args.agents} agents x {args.seconds:g} s, window {WINDOW}, "
          f"{os.cpu_count()} CPUs, workdir {work}", flush=True)

    raw = _spawn([__file__, "--role", "rawserver", "--port", str(raw_port)], work / "raw.log")
    try:
        _wait_port(raw_port)
        raw_cpu0 = _cpu_seconds(raw.pid)
        base = _run_loadgen(f"ws://127.0.0.1:{raw_port}", None, args.agents, args.seconds, True, timeout)
        raw_cpu_us = (_cpu_seconds(raw.pid) - raw_cpu0) / max(base["sent"], 1) * 1e6
    finally:
        _stop(raw)
    print(f"raw websockets : {base['events_per_s']:>10.0f} frames/s   ack p50 {base['p50_ms']:.1f} ms"
          f"  p99 {base['p99_ms']:.1f} ms", flush=True)

    sql_rate = sqlite_baseline(min(args.seconds, 5))
    print(f"raw sqlite     : {sql_rate:>10.0f} rows/s (batched 500, WAL, synchronous=FULL)", flush=True)

    sup = _spawn(["-m", "halswarm.supervisor.main", "--config", str(work / "sup.json")], work / "sup.log")
    try:
        _wait_port(http_port)
        sup_cpu0 = _cpu_seconds(sup.pid)
        res = _run_loadgen(f"ws://127.0.0.1:{ws_port}/ws/agent", token, args.agents, args.seconds, False, timeout)
        sup_cpu = _cpu_seconds(sup.pid) - sup_cpu0
        rss_busy = psutil.Process(sup.pid).memory_info().rss / 2**20
        db = sqlite3.connect(work / "bench.db")
        stored = db.execute("SELECT COUNT(*) FROM events WHERE seq IS NOT NULL").fetchone()[0]
        dupes = db.execute("SELECT COUNT(*) - COUNT(DISTINCT node_id || ':' || seq) FROM events"
                           " WHERE seq IS NOT NULL").fetchone()[0]
        db.close()
        print(f"hal-supervisor : {res['events_per_s']:>10.0f} durable events/s   ack p50 {res['p50_ms']:.1f} ms"
              f"  p99 {res['p99_ms']:.1f} ms (saturated)   RSS {rss_busy:.0f} MB   stored {stored}, duplicates {dupes}"
              + (f"   errors {res['error_count']}: {res['errors']}" if res["error_count"] else ""), flush=True)
        sup_cpu_us = sup_cpu / max(stored, 1) * 1e6
        print(f"cpu            : supervisor {sup_cpu_us:.1f} us/event, raw websockets server {raw_cpu_us:.1f} us/frame",
              flush=True)
        # Latency under a steady load below saturation: at saturation any queue makes latency
        # in-flight/throughput (Little's law), which says nothing about the ack path itself.
        paced_rate = max(100.0, round(res["events_per_s"] * 0.5, -2))
        paced = _run_loadgen(f"ws://127.0.0.1:{ws_port}/ws/agent", token, args.agents, args.seconds, False, timeout,
                             window=WINDOW, rate=paced_rate)
        print(f"hal-supervisor : {paced['events_per_s']:>10.0f} events/s paced ({paced_rate:.0f}/s offered)   "
              f"ack p50 {paced['p50_ms']:.1f} ms  p99 {paced['p99_ms']:.1f} ms", flush=True)
        idle = None
        if args.idle:
            cmd = [sys.executable, __file__, "--role", "idle", "--url", f"ws://127.0.0.1:{ws_port}/ws/agent",
                   "--token", token, "--agents", str(args.idle), "--pid", str(sup.pid)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
            if out.returncode != 0:
                print(f"idle run failed: {out.stderr[-1500:]}")
            else:
                idle = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"idle agents    : {idle['agents']} connected in {idle['connect_s']:.1f} s, supervisor RSS "
                      f"{idle['rss_mb']:.0f} MB (target < 400 MB)", flush=True)
    finally:
        _stop(sup)
    ratio = res["events_per_s"] / base["events_per_s"] if base["events_per_s"] else 0.0
    print(f"targets: ratio >= 0.5 -> {'ok' if ratio >= 0.5 else 'MISSED'}; ack p99 < 250 ms -> "
          f"{'ok' if paced['p99_ms'] < 250 else 'MISSED'} (paced)"
          + (f"; idle RSS < 400 MB -> {'ok' if idle['rss_mb'] < 400 else 'MISSED'}" if idle else ""))
    print(f"sqlite_ratio={res['events_per_s'] / sql_rate:.3f}")
    # CPU per event of each server: far steadier than events/s on a machine others load, since the two
    # throughputs are measured one after the other, each under whatever load there is at the time.
    print(f"cpu_ratio={raw_cpu_us / sup_cpu_us if sup_cpu_us else 0.0:.3f}")
    print(f"ratio={ratio:.3f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--idle", type=int, default=2000, help="idle agents for the RSS check (0 to skip)")
    p.add_argument("--role", default="main", choices=["main", "loadgen", "rawserver", "idle"])
    p.add_argument("--url")
    p.add_argument("--token")
    p.add_argument("--raw", action="store_true")
    p.add_argument("--window", type=int, default=WINDOW)
    p.add_argument("--rate", type=float, help="total paced events/s (latency phase)")
    p.add_argument("--port", type=int)
    p.add_argument("--pid", type=int)
    p.add_argument("--first", type=int, default=0, help="loadgen: index of the first agent (node bench-<first>)")
    p.add_argument("--start-at", type=float, help="loadgen: time.monotonic() at which the agents start sending")
    p.add_argument("--warmup", type=float, default=1.0, help="loadgen: seconds of sending before the measured window")
    args = p.parse_args()
    if args.role == "loadgen":
        print(json.dumps(asyncio.run(_loadgen(args.url, args.token, args.agents, args.seconds, args.raw,
                                              args.window, args.rate, args.first, args.start_at,
                                              args.warmup))))
        return 0
    if args.role == "rawserver":
        asyncio.run(_raw_server(args.port))
        return 0
    if args.role == "idle":
        print(json.dumps(asyncio.run(_idle(args.url, args.token, args.agents, 5.0, args.pid))))
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
