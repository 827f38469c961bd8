"""An SSE client for tests against a real supervisor: a raw socket with a small receive buffer, decoded
with h11, so a reader that stops reading really pushes back on the server (tests/integration/test_stream.py,
test_ha_reads.py)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from typing import Any

import h11
import httpx


class SseReader:
    """An SSE client in a daemon thread on a raw socket; `paused` stops it reading (the socket's buffers
    fill, and the server's writes block), `read_delay` makes it slow."""

    def __init__(self, sup: Any, params: dict[str, str], last_event_id: str | None = None,
                 rcvbuf: int = 32 * 1024, limit: int | None = None) -> None:
        self.limit = limit  # hang up after this many events
        self.sup, self.params, self.last_event_id, self.rcvbuf = sup, params, last_event_id, rcvbuf
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.received_at: list[float] = []  # time.monotonic() of each of `events`
        self.connected = threading.Event()
        self.closed = threading.Event()  # the server ended the stream
        self.paused = threading.Event()
        self.read_delay = 0.0
        self.status = 0
        self._stop = threading.Event()
        self._buf = b""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SseReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.paused.clear()
        self._thread.join(10)

    def seqs(self) -> list[int]:
        return [ev["seq"] for _, ev in self.events if ev.get("seq") is not None]

    def _run(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(0.5)
        sock.connect(("127.0.0.1", self.sup.http_port))
        conn = h11.Connection(h11.CLIENT)
        headers = [("Host", "127.0.0.1"), ("Authorization", f"Bearer {self.sup.token}"),
                   ("Accept", "text/event-stream")]
        if self.last_event_id is not None:
            headers.append(("Last-Event-ID", self.last_event_id))
        target = "/api/v1/events/stream?" + httpx.QueryParams(self.params).__str__()
        sock.sendall(conn.send(h11.Request(method="GET", target=target, headers=headers)) or b"")
        sock.sendall(conn.send(h11.EndOfMessage()) or b"")
        try:
            while not self._stop.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    continue
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                conn.receive_data(data)
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        break
                    if isinstance(ev, h11.Response):
                        self.status = ev.status_code
                    elif isinstance(ev, h11.Data):
                        self._feed(bytes(ev.data))
                    elif isinstance(ev, h11.EndOfMessage | h11.ConnectionClosed):
                        self.closed.set()
                        return
                if not data:
                    self.closed.set()
                    return
                if self.read_delay:
                    time.sleep(self.read_delay)
        finally:
            sock.close()

    def _feed(self, data: bytes) -> None:
        self._buf += data
        while b"\n\n" in self._buf:
            msg, self._buf = self._buf.split(b"\n\n", 1)
            text = msg.decode()
            if text.startswith(": connected"):
                self.connected.set()
                continue
            m = re.fullmatch(r"id: (\d+)\ndata: (.*)", text, re.S)
            if m:
                ev = json.loads(m.group(2))
                assert ev["id"] == int(m.group(1)), text
                if self.limit is not None and len(self.events) >= self.limit:
                    self._stop.set()
                    return
                self.events.append((int(m.group(1)), ev))
                self.received_at.append(time.monotonic())
