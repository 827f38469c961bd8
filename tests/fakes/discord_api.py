"""A loopback stand-in for Discord's REST API, speaking its real routes for what the supervisor and halctl
call: the bulk overwrite of application commands (global and guild) and the edit of a deferred
interaction's original response. It checks what Discord checks (the bot token, JSON bodies, the
application id) and records every call."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support import waiting

API = "/api/v10"
_COMMANDS = re.compile(rf"^{API}/applications/(\d+)(?:/guilds/(\d+))?/commands$")
_ORIGINAL = re.compile(rf"^{API}/webhooks/(\d+)/([^/]+)/messages/@original$")


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeDiscord:
    application_id: str
    bot_token: str
    calls: list[Call] = field(default_factory=list)
    commands: dict[str | None, list[dict[str, Any]]] = field(default_factory=dict)  # guild (None: global) -> set
    originals: dict[str, dict[str, Any]] = field(default_factory=dict)  # interaction token -> message
    hang: bool = False  # edits wait for `release` (a slow Discord) before they are answered
    release: threading.Event = field(default_factory=threading.Event)
    rate_limit_next: int = 0  # the next N edits answer 429 with Discord's JSON body (retry_after in seconds)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def api_base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{API}"

    def edits(self) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == "PATCH"]

    def wait_original(self, token: str, timeout: float = 20.0) -> dict[str, Any]:
        def got() -> dict[str, Any] | None:
            with self.lock:
                return self.originals.get(token)
        return waiting.wait_for(got, f"the follow-up of interaction {token[:8]}", timeout, interval=0.05)

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return 400, {"message": "400: Bad Request", "code": 50109}
        with self.lock:
            self.calls.append(Call(method, path, headers, body))
        m = _COMMANDS.match(path)
        if m and method == "PUT":
            if headers.get("authorization") != f"Bot {self.bot_token}":
                return 401, {"message": "401: Unauthorized", "code": 0}
            if m.group(1) != self.application_id:
                return 403, {"message": "Missing Access", "code": 50001}
            if not isinstance(body, list) or not all(isinstance(c, dict) and c.get("name") for c in body):
                return 400, {"message": "Invalid Form Body", "code": 50035}
            stored = [c | {"id": str(1000 + i), "application_id": self.application_id} for i, c in enumerate(body)]
            with self.lock:
                self.commands[m.group(2)] = stored
            return 200, stored
        m = _ORIGINAL.match(path)
        if m and method == "PATCH" and self.hang:
            self.release.wait(60)
        if m and method == "PATCH":  # interaction webhooks take no Authorization: the token is in the path
            if m.group(1) != self.application_id:
                return 404, {"message": "Unknown Webhook", "code": 10015}
            if not isinstance(body, dict) or not (body.get("embeds") or body.get("content")):
                return 400, {"message": "Cannot send an empty message", "code": 50006}
            with self.lock:
                if self.rate_limit_next > 0:
                    self.rate_limit_next -= 1
                    return 429, {"message": "You are being rate limited.", "retry_after": 0.2, "global": False}
                self.originals[m.group(2)] = body
            return 200, {"id": "1", "type": 0, "channel_id": "2"} | body
        return 404, {"message": "404: Not Found", "code": 0}


@contextmanager
def running_fake_discord(application_id: str = "111122223333", bot_token: str = "Bot.TokenValue.ForTests-123"
                         ) -> Iterator[FakeDiscord]:
    fake = FakeDiscord(application_id, bot_token)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, answer = fake.handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                         raw)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_PUT = do_PATCH = do_POST = do_GET = _serve

        def log_message(self, *args: object) -> None:
            pass

    fake.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        fake.server.shutdown()
        fake.server.server_close()
        thread.join(5)
