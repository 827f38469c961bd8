"""A loopback stand-in for Slack, speaking its real shapes for what the supervisor calls: the Web API
methods chat.postMessage, chat.update (JSON bodies) and usergroups.users.list (form body), each with the
bot token as `Authorization: Bearer` and answered 200 `{"ok": ...}`, and the response_url of slash commands
and interactions (`/commands/...`, `/actions/...`, answered 200 `ok`). It checks what Slack checks (the
token, a channel it knows, a message to update, a message with text or blocks) and records every call.

`response_url(kind)` makes a fresh response_url as Slack would put in a request; `hang` holds every answer
until `release` is set (a slow Slack)."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from tests.support import waiting

TEAM = "T0HALSWRM"


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeSlack:
    bot_token: str
    channels: set[str] = field(default_factory=lambda: {"C0APPROVE"})
    groups: dict[str, list[str]] = field(default_factory=dict)  # user group id -> member user ids
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (channel, ts) -> message
    responses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # response_url path -> bodies
    hang: bool = False
    rate_limit_next: int = 0  # the next N Web API calls answer 429 with Retry-After: 1 (Slack's rate limit)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    _ts: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    @property
    def api_base(self) -> str:
        return self.base + "api"

    def response_url(self, kind: str = "commands") -> str:
        """What Slack sends as response_url: https://hooks.slack.com/{commands|actions}/T.../<id>/<secret>."""
        return f"{self.base}{kind}/{TEAM}/{secrets.randbelow(10**12)}/{secrets.token_hex(12)}"

    def calls_to(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]

    def wait_response(self, url: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        path = "/" + url.split("/", 3)[3]

        def got() -> list[dict[str, Any]] | None:
            with self.lock:
                found = list(self.responses.get(path, []))
            return found if len(found) >= count else None
        return waiting.wait_for(got, f"{count} message(s) at a response_url", timeout, interval=0.05)

    def wait_posted(self, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        def got() -> list[dict[str, Any]] | None:
            with self.lock:
                found = [c.body for c in self.calls if c.path == "/api/chat.postMessage"]
            return found if len(found) >= count else None
        return waiting.wait_for(got, f"{count} chat.postMessage call(s)", timeout, interval=0.05)

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, str, Any]:
        ctype = headers.get("content-type", "")
        try:
            body: Any = json.loads(raw) if "json" in ctype else dict(parse_qsl(raw.decode()))
        except ValueError:
            return 400, "application/json", {"ok": False, "error": "invalid_json"}
        with self.lock:
            self.calls.append(Call(path, headers, body))
        if self.hang:
            self.release.wait(60)
        if path.startswith(("/commands/", "/actions/")):
            if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
                return 500, "text/html", "no_text"
            with self.lock:
                self.responses.setdefault(path, []).append(body)
            return 200, "text/html", "ok"
        if not path.startswith("/api/"):
            return 404, "text/html", "not found"
        with self.lock:
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return 429, "application/json", {"ok": False, "error": "ratelimited"}
        if headers.get("authorization") != f"Bearer {self.bot_token}":
            return 200, "application/json", {"ok": False, "error": "invalid_auth"}
        method = path[len("/api/"):]
        if method == "chat.postMessage":
            if body.get("channel") not in self.channels:
                return 200, "application/json", {"ok": False, "error": "channel_not_found"}
            if not (body.get("text") or body.get("blocks")):
                return 200, "application/json", {"ok": False, "error": "no_text"}
            ts = f"1700000000.{next(self._ts):06d}"
            message = {"type": "message", "text": body.get("text", ""), "blocks": body.get("blocks", []),
                       "ts": ts, "bot_id": "B0HAL"}
            with self.lock:
                self.messages[(body["channel"], ts)] = message
            return 200, "application/json", {"ok": True, "channel": body["channel"], "ts": ts, "message": message}
        if method == "chat.update":
            key = (body.get("channel"), body.get("ts"))
            with self.lock:
                if key not in self.messages:
                    return 200, "application/json", {"ok": False, "error": "message_not_found"}
                self.messages[key] = self.messages[key] | {"text": body.get("text", ""),
                                                           "blocks": body.get("blocks", [])}
            return 200, "application/json", {"ok": True, "channel": key[0], "ts": key[1], "text": body.get("text"),
                                             "message": self.messages[key]}
        if method == "usergroups.users.list":
            group = body.get("usergroup")
            if group not in self.groups:
                return 200, "application/json", {"ok": False, "error": "no_such_subteam"}
            return 200, "application/json", {"ok": True, "users": self.groups[group]}
        return 200, "application/json", {"ok": False, "error": "unknown_method"}


@contextmanager
def running_fake_slack(bot_token: str = "xoxb-1111-2222-FakeSlackBotToken") -> Iterator[FakeSlack]:
    fake = FakeSlack(bot_token)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, ctype, answer = fake.handle(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(status)
            if status == 429:
                self.send_header("retry-after", "1")
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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
