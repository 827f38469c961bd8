"""A loopback stand-in for Discord's REST API, speaking its real routes for what the supervisor and halctl
call: the bulk overwrite of application commands (global and guild), the edit of a deferred interaction's
original response and its follow-up messages, and the bot's channel messages (create, edit). It checks
what Discord checks (the bot token, JSON bodies, the application id, the shape and limits of message
components) and records every call.

A component interaction's `@original` is the message its button is on: `press(message_id, token)` tells
the fake which message an interaction token belongs to, as Discord knows it."""

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
_FOLLOWUP = re.compile(rf"^{API}/webhooks/(\d+)/([^/]+)$")
_CHANNEL_MESSAGES = re.compile(rf"^{API}/channels/(\d+)/messages$")
_CHANNEL_MESSAGE = re.compile(rf"^{API}/channels/(\d+)/messages/(\d+)$")


def component_problem(components: Any) -> str | None:
    """Why Discord would refuse these message components (action rows of at most 5 buttons, each with a
    label, and either a custom_id of at most 100 characters or, for a link button, a URL), or None."""
    if not isinstance(components, list) or len(components) > 5:
        return "components must be a list of at most 5 action rows"
    for row in components:
        if not isinstance(row, dict) or row.get("type") != 1 or not isinstance(row.get("components"), list) \
                or not 1 <= len(row["components"]) <= 5:
            return "each component must be an action row of 1-5 components"
        for b in row["components"]:
            if not isinstance(b, dict) or b.get("type") != 2 or not 1 <= len(str(b.get("label") or "")) <= 80:
                return "each button needs type 2 and a label"
            if b.get("style") == 5:
                if "custom_id" in b or not str(b.get("url", "")).startswith(("http://", "https://")):
                    return "a link button has a url and no custom_id"
            elif b.get("style") not in (1, 2, 3, 4) or not 1 <= len(str(b.get("custom_id") or "")) <= 100:
                return "a button needs style 1-4 and a custom_id of 1-100 characters"
    return None


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
    followups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # interaction token -> messages
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # message id -> the bot's message now
    pressed: dict[str, str] = field(default_factory=dict)  # component interaction token -> its message id
    next_id: int = 900000000000000000
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

    def channel_messages(self, channel_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages.values() if m["channel_id"] == channel_id]

    def press(self, message_id: str, token: str) -> None:
        with self.lock:
            self.pressed[token] = message_id

    def wait_followup(self, token: str, timeout: float = 20.0) -> dict[str, Any]:
        def got() -> dict[str, Any] | None:
            with self.lock:
                return (self.followups.get(token) or [None])[-1]
        return waiting.wait_for(got, f"a follow-up of interaction {token[:8]}", timeout, interval=0.05)

    def _bot(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"Bot {self.bot_token}"

    def _message_problem(self, body: Any) -> tuple[int, Any] | None:
        if not isinstance(body, dict) or not (body.get("embeds") or body.get("content") or "components" in body):
            return 400, {"message": "Cannot send an empty message", "code": 50006}
        if "components" in body and (why := component_problem(body["components"])):
            return 400, {"message": f"Invalid Form Body: {why}", "code": 50035}
        return None

    def _channel(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any] | None:
        m = _CHANNEL_MESSAGES.match(path)
        n = _CHANNEL_MESSAGE.match(path)
        if not ((m and method == "POST") or (n and method == "PATCH")):
            return None
        if self.hang:
            self.release.wait(60)
        if not self._bot(headers):
            return 401, {"message": "401: Unauthorized", "code": 0}
        if (problem := self._message_problem(body)) is not None:
            return problem
        with self.lock:
            if m:
                self.next_id += 1
                msg = {"id": str(self.next_id), "type": 0, "channel_id": m.group(1), "components": []} | body
                self.messages[msg["id"]] = msg
                return 200, msg
            assert n is not None
            old = self.messages.get(n.group(2))
            if old is None or old["channel_id"] != n.group(1):
                return 404, {"message": "Unknown Message", "code": 10008}
            old.update(body)
            return 200, old

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
        channel = self._channel(method, path, headers, body)
        if channel is not None:
            return channel
        m = _ORIGINAL.match(path) or _FOLLOWUP.match(path)
        if m and method in ("PATCH", "POST") and self.hang:
            self.release.wait(60)
        if m and ((method == "PATCH" and path.endswith("@original")) or (method == "POST" and _FOLLOWUP.match(path))):
            # interaction webhooks take no Authorization: the token is in the path
            if m.group(1) != self.application_id:
                return 404, {"message": "Unknown Webhook", "code": 10015}
            if (problem := self._message_problem(body)) is not None:
                return problem
            with self.lock:
                if self.rate_limit_next > 0:
                    self.rate_limit_next -= 1
                    return 429, {"message": "You are being rate limited.", "retry_after": 0.2, "global": False}
                if method == "POST":
                    self.followups.setdefault(m.group(2), []).append(body)
                    return 200, {"id": "3", "type": 0, "channel_id": "2"} | body
                self.originals[m.group(2)] = body
                pressed = self.messages.get(self.pressed.get(m.group(2), ""))
                if pressed is not None:  # a component's @original is the message its button is on
                    pressed.update(body)
                    return 200, pressed
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
