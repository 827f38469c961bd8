"""Stream benchmark: durable ingest with 0/20/200 live subscribers on `/api/v1/events/stream`.

Runs, in one invocation, against one real `hal-supervisor` (child process):
  1. saturated ingest (bench/ingest.py's load generator, child process) with 0, 20 and 200 SSE subscribers
     (one child process reading every stream on raw sockets): durable events/s, and its ratio against the
     0-subscriber run of this same invocation;
  2. a paced load (`--rate` events/s) with 20 and 200 subscribers: event -> subscriber latency p50/p99
     (the event's own timestamp, set by the agent when it sends, to the arrival of its frame at a sampled
     subscriber), and whether every subscriber got every event;
  3. for every run: subscribers the server closed (dropped).
Each run also reports the supervisor's CPU time per durable event (psutil), far steadier than events/s on
a machine others load: `cpu_ratio=` compares it without subscribers and with the most.
The last line is `ratio=<events/s with 200 subscribers / events/s with none>`.

  python bench/stream.py [--agents 20] [--seconds 8] [--rate 500] [--counts 0,20,200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INGEST = REPO / "bench" / "ingest.py"
SAMPLED = 10  # subscribers that parse every frame for latency (the others only count frames), spread over the
# connection order: the server may wake its subscribers in some order, and the first ones must not be the only sample


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- subscribers (child process)

class _Sub(asyncio.Protocol):
    """One SSE reader on a raw socket: counts frames (`\\nid: ` markers); a sampled one also parses each
    frame's timestamp for latency."""

    def __init__(self, sample: bool, lat: list[float]) -> None:
        self.sample, self.lat = sample, lat
        self.frames = 0
        self.connected = asyncio.get_running_loop().create_future()
        self.closed = False
        self._tail = b""
        self._buf = b""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.time()
        joined = self._tail + data
        self.frames += joined.count(b"\nid: ")
        self._tail = data[-5:]
        if not self.connected.done() and b": connected" in joined:
            self.connected.set_result(True)
        if self.sample:
            self._buf += data
            *msgs, self._buf = self._buf.split(b"\n\n")
            for m in msgs:
                k = m.rfind(b'"timestamp":"')  # the event's own field is its last one
                if k >= 0 and b"id: " in m:
                    ts = datetime.fromisoformat(m[k + 13:m.index(b'"', k + 13)].decode()).timestamp()
                    self.lat.append(now - ts)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_result(False)


async def _subscribers(port: int, token: str, count: int) -> dict:
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    subs: list[_Sub] = []
    req = (f"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
           "Accept: text/event-stream\r\n\r\n").encode()
    step = max(1, count // SAMPLED)
    for i in range(count):
        sample = i % step == 0 and i // step < SAMPLED
        _, sub = await loop.create_connection(partial(_Sub, sample, lat), "127.0.0.1", port)
        sub.transport.write(req)
        subs.append(sub)
    ok = await asyncio.wait_for(asyncio.gather(*(s.connected for s in subs)), 60) if subs else []
    print(json.dumps({"ready": sum(ok)}), flush=True)
    lat.clear()
    await loop.run_in_executor(None, sys.stdin.readline)  # "measure": start counting latency afresh
    lat.clear()
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    # Let the streams drain what is committed and in flight (until the counts stop growing).
    last: list[int] = []
    for _ in range(100):
        now = [s.frames for s in subs]
        if now == last:
            break
        last = now
        await asyncio.sleep(0.3)
    frames = [s.frames for s in subs]
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    res = {"closed": sum(s.closed for s in subs), "min_frames": min(frames, default=0),
           "max_frames": max(frames, default=0), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "samples": len(lat)}
    for s in subs:
        with contextlib.suppress(Exception):
            s.transport.close()
    return res


# ---------------------------------------------------------------- orchestration

def _stop(p: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} not listening")


def _loadgen(url: str, token: str, agents: int, seconds: float, rate: float | None) -> dict:
    cmd = [sys.executable, str(INGEST), "--role", "loadgen", "--url", url, "--agents", str(agents),
           "--seconds", str(seconds), "--token", token] + (["--rate", str(rate)] if rate else [])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 3 + 120, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"load generator failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _run(http_port: int, ws_url: str, token: str, op_token: str, subs: int, args: argparse.Namespace,
         rate: float | None, sup_pid: int) -> tuple[dict, dict]:
    p = subprocess.Popen([sys.executable, __file__, "--role", "subs", "--port", str(http_port), "--token", op_token,
                          "--count", str(subs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdin is not None and p.stdout is not None
        ready = json.loads(p.stdout.readline() or '{"ready": -1}')
        if ready["ready"] != subs:
            raise RuntimeError(f"only {ready['ready']} of {subs} subscribers connected")
        p.stdin.write("measure\n")
        p.stdin.flush()
        cpu0, subs_cpu0 = _cpu(sup_pid), _cpu(p.pid)
        load = _loadgen(ws_url, token, args.agents, args.seconds, rate)
        # per event sent during the whole load run (warm-up included), as the CPU time covers it all
        load["cpu_us"] = (_cpu(sup_pid) - cpu0) / max(load["sent"], 1) * 1e6
        load["subs_cpu_s"] = _cpu(p.pid) - subs_cpu0  # the readers compete for the same cores
        p.stdin.write("stop\n")
        p.stdin.flush()
        out = json.loads(p.stdout.readline())
        p.wait(30)
        return load, out
    finally:
        _stop(p)


def _raw_fanout(subs: int, seconds: float, chunk_frames: int = 300) -> tuple[float, float]:
    """The floor under any SSE fan-out on this machine: plain asyncio sockets (no HTTP, no filtering) writing
    the same frames, `chunk_frames` per write, to `subs` readers of the same child process as above.
    Returns (sender, readers) CPU microseconds per delivered frame."""
    import threading

    from halswarm.supervisor.runtime.broadcast import encode_event

    data = json.dumps({"sessionID": "ses_bench0", "messageID": "msg_1", "partID": "prt_1", "field": "text",
                       "delta": "some streamed model output, about this long " * 2}, separators=(",", ":"))
    frame = encode_event((123456, "bench-0", 1234, "b0-1234", "ses_bench0", "p", "message.part.delta", data,
                          time.time()))
    chunk = frame * chunk_frames
    ready, go = threading.Event(), threading.Event()
    port: list[int] = []
    result: dict[str, float] = {}

    async def serve() -> None:
        writers: list[asyncio.StreamWriter] = []
        got = asyncio.Event()

        async def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\n\r\n: connected\n\n")
            writers.append(w)
            if len(writers) == subs:
                got.set()

        srv = await asyncio.start_server(conn, "127.0.0.1", 0, backlog=max(100, subs))
        port.append(srv.sockets[0].getsockname()[1])
        ready.set()
        await got.wait()
        await asyncio.to_thread(go.wait, 60)  # the readers' CPU is being counted
        c0, t0, rounds = time.thread_time(), time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            for w in writers:
                w.write(chunk)
            for w in writers:
                await w.drain()
            rounds += 1
        result["cpu"], result["frames"] = time.thread_time() - c0, rounds * chunk_frames * subs
        for w in writers:
            w.close()
        srv.close()

    th = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    th.start()
    ready.wait(30)
    p = subprocess.Popen([sys.executable, __file__, "--role", "subs", "--port", str(port[0]), "--token", "-",
                          "--count", str(subs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdin is not None and p.stdout is not None
        json.loads(p.stdout.readline() or "{}")
        p.stdin.write("measure\n")
        p.stdin.flush()
        subs_cpu0 = _cpu(p.pid)
        go.set()
        th.join(seconds + 60)
        subs_cpu = _cpu(p.pid) - subs_cpu0
        p.stdin.write("stop\n")
        p.stdin.flush()
        p.stdout.readline()
        p.wait(30)
    finally:
        _stop(p)
    frames = max(result.get("frames", 0.0), 1.0)
    return result.get("cpu", 0.0) / frames * 1e6, subs_cpu / frames * 1e6


def orchestrate(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="hal-bench-stream-"))
    token, op_token = secrets.token_hex(32), secrets.token_hex(32)
    ws_port, http_port = free_port(), free_port()
    cfg = {"server": {"host": "127.0.0.1", "port": ws_port, "http_port": http_port, "auth_token": token,
                      "heartbeat_interval_sec": 30},
           "security": {"operators": [{"name": "bench", "role": "viewer", "token": op_token}]},
           "database": {"path": str(work / "bench.db")}, "log": {"level": "warning", "format": "json"}}
    (work / "sup.json").write_text(json.dumps(cfg))
    (work / "sup.json").chmod(0o600)
    counts = [int(c) for c in args.counts.split(",")]
    print(f"# stream benchmark: {args.agents} agents x {args.seconds:g} s per run, subscribers {counts}, paced "
          f"{args.rate:g} events/s, {os.cpu_count()} CPUs, workdir {work}", flush=True)
    log = open(work / "sup.log", "ab")  # noqa: SIM115
    sup = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(work / "sup.json")],
                           stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    log.close()
    ws_url = f"ws://127.0.0.1:{ws_port}/ws/agent"
    rates: dict[int, float] = {}
    cpu: dict[int, float] = {}
    worst_p99 = 0.0
    dropped = 0
    try:
        _wait_port(http_port)
        for n in counts:
            load, out = _run(http_port, ws_url, token, op_token, n, args, None, sup.pid)
            rates[n] = load["events_per_s"]
            cpu[n] = load["cpu_us"]
            dropped += out["closed"]
            base = rates.get(counts[0]) or 0.0
            print(f"saturated {n:>4} subscribers: {load['events_per_s']:>8.0f} durable events/s  "
                  f"ratio {load['events_per_s'] / base if base else float('nan'):.3f}  "
                  f"supervisor {load['cpu_us']:.1f} us CPU/event  readers' CPU {load['subs_cpu_s']:.1f} s  "
                  f"dropped {out['closed']}"
                  + (f"  frames/subscriber {out['min_frames']}..{out['max_frames']}" if n else ""), flush=True)
        for n in [c for c in counts if c]:
            load, out = _run(http_port, ws_url, token, op_token, n, args, args.rate, sup.pid)
            dropped += out["closed"]
            worst_p99 = max(worst_p99, out["p99_ms"])
            print(f"paced     {n:>4} subscribers: {load['events_per_s']:>8.0f} events/s ({args.rate:g} offered)  "
                  f"event->subscriber p50 {out['p50_ms']:.1f} ms  p99 {out['p99_ms']:.1f} ms "
                  f"({out['samples']} samples)  dropped {out['closed']}  "
                  f"frames/subscriber {out['min_frames']}..{out['max_frames']}", flush=True)
    finally:
        _stop(sup)
    top = max(counts)
    if top and args.floor:
        sender_us, readers_us = _raw_fanout(top, args.seconds)
        added = (cpu[top] - cpu[counts[0]]) / top
        print(f"floor     {top:>4} raw sockets: sender {sender_us:.3f} us CPU/frame, readers {readers_us:.3f} us "
              f"CPU/frame; the supervisor's fan-out: {added:.3f} us CPU/frame "
              f"({added / sender_us if sender_us else float('nan'):.2f}x the raw sender)", flush=True)
    ratio = rates[top] / rates[counts[0]] if rates.get(counts[0]) else 0.0
    print(f"targets: {top} subscribers ratio >= 0.85 -> {'ok' if ratio >= 0.85 else 'MISSED'}; "
          f"p99 < 250 ms paced -> {'ok' if worst_p99 < 250 else 'MISSED'}; "
          f"dropped == 0 -> {'ok' if dropped == 0 else 'MISSED'}")
    print(f"dropped={dropped}")
    print(f"cpu_ratio={cpu[counts[0]] / cpu[top] if cpu.get(top) else 0.0:.3f}")
    print(f"ratio={ratio:.3f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rate", type=float, default=500.0, help="total paced events/s (latency runs)")
    p.add_argument("--counts", default="0,20,200", help="subscriber counts; the first is the baseline")
    p.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure raw socket fan-out of the same frames (the floor under any server)")
    p.add_argument("--role", default="main", choices=["main", "subs"])
    p.add_argument("--port", type=int)
    p.add_argument("--token")
    p.add_argument("--count", type=int, default=0)
    args = p.parse_args()
    if args.role == "subs":
        print(json.dumps(asyncio.run(_subscribers(args.port, args.token, args.count))), flush=True)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
