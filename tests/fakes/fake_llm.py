"""A loopback fake of the OpenAI chat-completions API, for driving the real opencode offline.

opencode talks to it through its bundled ``@ai-sdk/openai-compatible`` provider (see
``opencode_config_content``).  The wire format is the real one: ``POST /v1/chat/completions``
answered either as one JSON object or as a stream of ``data: {chunk}\\n\\n`` lines closed by
``data: [DONE]``, both with a ``usage`` block so that opencode reports token counts.

The reply is ``FAKE-REPLY: <last user text>``.  Magic words in the last user message:

- ``SLOW``: stream the first chunk, then sleep (``slow_seconds``) before the rest, so an abort can land.
- ``FAIL401``: answer 401 with OpenAI's "invalid_api_key" error body.
- ``TOOLCALL``: answer with a ``bash`` tool call (``echo hi-from-tool``) when the request offers a
  ``bash`` tool and no tool result has come back yet; once it has, a normal reply that quotes it.

Requests without tools (opencode's title generator uses the small model) are never answered with a
tool call and never delayed, so they don't interfere with the agent turn under test.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ID = "fake-model"
PROVIDER_ID = "fake"
API_KEY = "sk-fake"
TOOL_COMMAND = "echo hi-from-tool"
AUTH_ERROR = {
    "error": {
        "message": "Incorrect API key provided",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def last_user_text(self) -> str:
        return last_user_text(self.body.get("messages", [])) if isinstance(self.body, dict) else ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            return _content_text(msg.get("content")).strip()
    return ""


def _tool_result_after_last_user(messages: list[dict[str, Any]]) -> str | None:
    """The content of a ``tool`` message that follows the last user message, if any."""
    for msg in reversed(messages):
        role = msg.get("role")
        if role == "tool":
            return _content_text(msg.get("content"))
        if role == "user":
            return None
    return None


def _offers_bash(body: dict[str, Any]) -> bool:
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and (tool.get("function") or {}).get("name") == "bash":
            return True
    return False


def _count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass
class FakeLLM:
    """The fake server. ``start()`` binds 127.0.0.1 on a free port; ``stop()`` shuts it down."""

    slow_seconds: float = 20.0
    chunk_delay: float = 0.0
    host: str = "127.0.0.1"
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counter = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeLLM:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake._record(self, None)
                if self.path.rstrip("/").endswith("/models"):
                    fake._send_json(self, 200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})
                else:
                    fake._send_json(self, 404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                fake._record(self, body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    fake._send_json(self, 404, {"error": {"message": f"unknown path {self.path}"}})
                    return
                fake._chat(self, body)

        self._stop.clear()
        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes SLOW handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeLLM not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../v1``) for the provider config."""
        return f"http://{self.host}:{self.port}/v1"

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    # -- internals ---------------------------------------------------------------------------
    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(handler.command, handler.path, {k.lower(): v for k, v in handler.headers.items()}, body)
            )

    def _next_id(self) -> str:
        with self._lock:
            self._counter += 1
            return f"chatcmpl-fake{self._counter}"

    @staticmethod
    def _send_json(handler: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _chat(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        messages = body.get("messages") or []
        text = last_user_text(messages)
        agent_turn = _offers_bash(body)
        if "FAIL401" in text:
            self._send_json(handler, HTTPStatus.UNAUTHORIZED, AUTH_ERROR)
            return
        tool_result = _tool_result_after_last_user(messages)
        prompt_tokens = _count_tokens(json.dumps(messages))
        if "TOOLCALL" in text and agent_turn and tool_result is None:
            self._reply_tool_call(handler, body, prompt_tokens)
            return
        if tool_result is not None:
            reply = f"FAKE-REPLY: TOOL-RESULT-SEEN {tool_result.strip()}"
        else:
            reply = f"FAKE-REPLY: {text}"
        slow = "SLOW" in text and agent_turn
        self._reply_text(handler, body, reply, prompt_tokens, slow)

    def _usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _reply_text(
        self, handler: BaseHTTPRequestHandler, body: dict[str, Any], reply: str, prompt_tokens: int, slow: bool
    ) -> None:
        completion_tokens = max(1, len(reply.split()))
        cid = self._next_id()
        if not body.get("stream"):
            self._send_json(
                handler,
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": MODEL_ID,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                    ],
                    "usage": self._usage(prompt_tokens, completion_tokens),
                },
            )
            return
        words = [w + " " for w in reply.split(" ")]
        chunks: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        chunks += [{"content": w} for w in words]
        with _SSEWriter(handler) as sse:
            for i, delta in enumerate(chunks):
                if not sse.send(self._chunk(cid, delta, None)):
                    return
                if slow and i == 1 and self._stop.wait(self.slow_seconds):
                    return
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)
            final = self._chunk(cid, {}, "stop")
            final["usage"] = self._usage(prompt_tokens, completion_tokens)
            if sse.send(final):
                sse.done()

    def _reply_tool_call(self, handler: BaseHTTPRequestHandler, body: dict[str, Any], prompt_tokens: int) -> None:
        cid = self._next_id()
        call = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {
                "name": "bash",
                "arguments": json.dumps({"command": TOOL_COMMAND, "description": "echo"}),
            },
        }
        usage = self._usage(prompt_tokens, 10)
        if not body.get("stream"):
            msg = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{k: v for k, v in call.items() if k != "index"}],
            }
            self._send_json(
                handler,
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": MODEL_ID,
                    "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls"}],
                    "usage": usage,
                },
            )
            return
        with _SSEWriter(handler) as sse:
            sse.send(self._chunk(cid, {"role": "assistant", "content": None, "tool_calls": [call]}, None))
            final = self._chunk(cid, {}, "tool_calls")
            final["usage"] = usage
            if sse.send(final):
                sse.done()

    @staticmethod
    def _chunk(cid: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }


class _SSEWriter:
    """Writes a chunked ``text/event-stream`` response; tolerates the client going away."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.h = handler

    def __enter__(self) -> _SSEWriter:
        self.h.send_response(200)
        self.h.send_header("Content-Type", "text/event-stream")
        self.h.send_header("Cache-Control", "no-cache")
        self.h.send_header("Transfer-Encoding", "chunked")
        self.h.end_headers()
        return self

    def _write(self, data: bytes) -> bool:
        try:
            self.h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.h.wfile.flush()
            return True
        except OSError:  # client aborted (e.g. opencode's abort)
            self.h.close_connection = True
            return False

    def send(self, obj: dict[str, Any]) -> bool:
        return self._write(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def done(self) -> bool:
        return self._write(b"data: [DONE]\n\n")

    def __exit__(self, *exc: object) -> None:
        try:
            self.h.wfile.write(b"0\r\n\r\n")
            self.h.wfile.flush()
        except OSError:
            self.h.close_connection = True


def opencode_config(base_url: str, *, permission_ask_bash: bool = False, api_key: str = API_KEY) -> dict[str, Any]:
    """The opencode config (as a dict) that makes ``fake/fake-model`` the default model."""
    cfg: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "model": f"{PROVIDER_ID}/{MODEL_ID}",
        "small_model": f"{PROVIDER_ID}/{MODEL_ID}",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake",
                "options": {"baseURL": base_url, "apiKey": api_key},
                "models": {MODEL_ID: {"name": "Fake Model"}},
            }
        },
    }
    if permission_ask_bash:
        cfg["permission"] = {"bash": "ask"}
    return cfg


def opencode_config_content(base_url: str, *, permission_ask_bash: bool = False, api_key: str = API_KEY) -> str:
    """``OPENCODE_CONFIG_CONTENT`` value (JSON text) for :func:`opencode_config`."""
    return json.dumps(opencode_config(base_url, permission_ask_bash=permission_ask_bash, api_key=api_key))
