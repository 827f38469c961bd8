"""The fake OpenAI-compatible server speaks the real wire format (checked here without opencode)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.fake_llm import FakeLLM, opencode_config, opencode_config_content
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.process, pytest.mark.timeout(30)]  # the fake LLM's HTTP server on loopback

BASH_TOOL = {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    f = FakeLLM(slow_seconds=0.5).start()
    try:
        yield f
    finally:
        f.stop()


def chat(fake: FakeLLM, messages: list[dict], *, stream: bool, tools: bool = False) -> httpx.Response:
    body: dict = {"model": "fake-model", "messages": messages, "stream": stream}
    if tools:
        body["tools"] = [BASH_TOOL]
    return httpx.post(
        fake.base_url + "/chat/completions", json=body, headers={"Authorization": "Bearer sk-fake"}, timeout=10
    )


def sse_chunks(resp: httpx.Response) -> list[dict | str]:
    out: list[dict | str] = []
    for line in resp.text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def test_streamed_reply_with_usage(fake: FakeLLM) -> None:
    resp = chat(fake, [{"role": "system", "content": "sys"}, user("hello there")], stream=True, tools=True)
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
    chunks = sse_chunks(resp)
    assert chunks[-1] == "[DONE]"
    objs = [c for c in chunks if isinstance(c, dict)]
    assert all(c["object"] == "chat.completion.chunk" for c in objs)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in objs)
    assert text.strip() == "FAKE-REPLY: hello there"
    assert objs[-1]["choices"][0]["finish_reason"] == "stop"
    usage = objs[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    rec = fake.chat_requests()[0]
    assert rec.last_user_text == "hello there" and rec.headers["authorization"] == "Bearer sk-fake"


def test_non_streamed_reply(fake: FakeLLM) -> None:
    body = chat(fake, [{"role": "user", "content": "plain"}], stream=False).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "FAKE-REPLY: plain"}
    assert body["usage"]["completion_tokens"] == 2


def test_fail401(fake: FakeLLM) -> None:
    resp = chat(fake, [user("FAIL401 please")], stream=True)
    assert resp.status_code == 401
    assert resp.json()["error"] == {
        "message": "Incorrect API key provided",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }


def test_toolcall_then_reply_after_tool_result(fake: FakeLLM) -> None:
    first = sse_chunks(chat(fake, [user("TOOLCALL now")], stream=True, tools=True))
    call = first[0]["choices"][0]["delta"]["tool_calls"][0]
    assert call["function"]["name"] == "bash"
    assert json.loads(call["function"]["arguments"])["command"] == "echo hi-from-tool"
    assert first[1]["choices"][0]["finish_reason"] == "tool_calls"
    # Without a bash tool on offer (title generation), no tool call.
    plain = chat(fake, [user("TOOLCALL now")], stream=False).json()
    assert plain["choices"][0]["message"]["content"] == "FAKE-REPLY: TOOLCALL now"
    history = [
        user("TOOLCALL now"),
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "hi-from-tool\n"},
    ]
    second = chat(fake, history, stream=False).json()
    assert second["choices"][0]["message"]["content"] == "FAKE-REPLY: TOOL-RESULT-SEEN hi-from-tool"


def test_slow_sleeps_mid_stream(fake: FakeLLM) -> None:
    t0 = time.monotonic()
    chunks = sse_chunks(chat(fake, [user("SLOW please")], stream=True, tools=True))
    assert time.monotonic() - t0 >= 0.45
    assert chunks[-1] == "[DONE]"


def test_stop_wakes_a_slow_handler() -> None:
    import threading

    fake = FakeLLM(slow_seconds=60).start()
    errors: list[Exception] = []

    def call() -> None:
        try:
            chat(fake, [user("SLOW")], stream=True, tools=True)
        except Exception as exc:  # the server goes away mid-stream
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    wait_for(fake.chat_requests, "the slow chat request at the fake", 5, interval=0.02)
    t0 = time.monotonic()
    fake.stop()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 5


def test_config_helper() -> None:
    cfg = opencode_config("http://127.0.0.1:1/v1", permission_ask_bash=True)
    assert cfg["model"] == "fake/fake-model"
    provider = cfg["provider"]["fake"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": "http://127.0.0.1:1/v1", "apiKey": "sk-fake"}
    assert cfg["permission"] == {"bash": "ask"}
    assert "permission" not in json.loads(opencode_config_content("http://x/v1"))
