"""Local HTTP receivers standing in for Discord / Slack / n8n / generic webhooks in routing tests.

A Receiver records every POST (path, headers, JSON body, arrival time) and answers by `mode`:
  "ok"      204 (Discord webhook style), or `ok_body` as JSON with 200 (Slack Web API style)
  "fail"    `fail_status` (500) every time
  "flaky"   `fail_status` for the first `fail_times` requests, then like "ok"
  "hang"    never answers (until the receiver is stopped)
  "ratelimit" 429 with Retry-After: `retry_after` for the first `fail_times` requests, then "ok"
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support import waiting


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Receiver:
    mode: str = "ok"
    fail_status: int = 500
    fail_times: int = 0
    retry_after: str = "0"
    ok_body: dict[str, Any] | None = None
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self) -> list[Any]:
        with self.lock:
            return [r.body for r in self.received]

    def _got(self, n: int) -> list[Received] | None:
        with self.lock:
            return list(self.received) if len(self.received) >= n else None

    def _short(self, n: int, exc: AssertionError) -> TimeoutError:
        with self.lock:
            return TimeoutError(f"{exc}: got {len(self.received)} of {n} deliveries ({self.attempts} attempts)")

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        """Blocking wait (for tests whose deliveries run in another process)."""
        try:
            return waiting.wait_for(lambda: self._got(n), f"{n} deliveries", timeout, interval=0.02)
        except AssertionError as exc:
            raise self._short(n, exc) from None

    async def until(self, n: int, timeout: float = 10.0) -> list[Received]:
        """The same wait without blocking the event loop (deliveries from this process)."""
        try:
            return await waiting.on_loop(lambda: self._got(n), f"{n} deliveries", timeout, interval=0.02)
        except AssertionError as exc:
            raise self._short(n, exc) from None

    def _answer(self) -> tuple[int, dict[str, str], bytes | None]:
        with self.lock:
            self.attempts += 1
            n = self.attempts
        if self.mode == "hang":
            self.release.wait(600)
            return 503, {}, None
        if self.mode == "fail" or (self.mode == "flaky" and n <= self.fail_times):
            return self.fail_status, {}, b'{"message":"receiver failure"}'
        if self.mode == "ratelimit" and n <= self.fail_times:
            return 429, {"Retry-After": self.retry_after}, b'{"message":"rate limited"}'
        if self.ok_body is not None:
            return 200, {}, json.dumps(self.ok_body).encode()
        return 204, {}, None

    def start(self) -> Receiver:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real services

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                status, headers, out = rec._answer()
                if status < 300:
                    with rec.lock:
                        rec.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                     body, time.time()))
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(out or b"")))
                    self.end_headers()
                    if out:
                        self.wfile.write(out)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name=f"receiver-{self.mode}").start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@contextmanager
def receivers(*modes: str | dict[str, Any]) -> Iterator[list[Receiver]]:
    """`with receivers("ok", "hang", {"mode": "flaky", "fail_times": 2}) as (ok, hang, flaky): ...`"""
    started = [Receiver(mode=m).start() if isinstance(m, str) else Receiver(**m).start() for m in modes]
    try:
        yield started
    finally:
        for r in started:
            r.stop()
