"""The /global/event parser and the reconnecting consumer, fed with real opencode 1.18.33 captures."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from halswarm.agent.opencode_events import (
    GlobalEventStream,
    OpencodeEvent,
    SSEParser,
    parse_data,
    parse_global_record,
    parse_global_stream,
)

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "opencode"  # captured opencode 1.x streams


def raw(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def raw_records(name: str) -> list[dict]:
    return [json.loads(line[5:]) for line in raw(name).decode().splitlines() if line.startswith("data:")]


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- parser on captures ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sse_global.raw", "sse2_global.raw", "sse4_global.raw"])
def test_global_capture_drops_sync_and_heartbeats(name: str) -> None:
    records = raw_records(name)
    types = Counter(r["payload"]["type"] for r in records)
    events = list(parse_global_stream(raw(name)))
    assert types["sync"] > 0 and types["server.heartbeat"] > 0  # the capture really has both
    assert len(events) == len(records) - types["sync"] - types["server.heartbeat"]
    assert not any(e.type in ("sync", "server.heartbeat") for e in events)
    assert events[0].type == "server.connected"
    assert events[0].directory is None and events[0].project is None


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_chunking_does_not_matter(size: int) -> None:
    data = raw("sse2_global.raw")
    assert list(parse_global_stream(chunked(data, size))) == list(parse_global_stream(data))


def test_crlf_and_cr_line_endings() -> None:
    data = raw("sse4_global.raw")
    expected = list(parse_global_stream(data))
    assert list(parse_global_stream(chunked(data.replace(b"\n", b"\r\n"), 5))) == expected
    assert list(parse_global_stream(chunked(data.replace(b"\n", b"\r"), 3))) == expected


def test_heartbeats_on_request() -> None:
    events = list(parse_global_stream(raw("sse_global.raw"), include_heartbeats=True))
    assert sum(e.type == "server.heartbeat" for e in events) == 50


def test_envelope_fields_and_session_ids() -> None:
    events = list(parse_global_stream(raw("sse2_global.raw")))
    created = next(e for e in events if e.type == "session.created")
    assert created.directory == "/srv/work/home.Y6EL/proj"
    assert created.project == "global"
    assert created.id and created.id.startswith("evt_")
    sid = created.session_id
    assert sid == "ses_de3e2b453ffe5noCMIaThNyXxn"
    by_type = {e.type: e for e in events}
    for etype in (
        "session.updated",
        "session.status",
        "session.idle",
        "session.error",
        "message.updated",
        "message.part.updated",
        "message.part.delta",
        "session.diff",
    ):
        assert by_type[etype].session_id == sid, etype
    assert by_type["project.updated"].session_id is None
    delta = by_type["message.part.delta"]
    assert delta.properties["field"] == "text" and delta.properties["delta"]


def test_permission_events() -> None:
    events = list(parse_global_stream(raw("sse4_global.raw")))
    asked = next(e for e in events if e.type == "permission.asked")
    replied = next(e for e in events if e.type == "permission.replied")
    assert asked.properties["id"].startswith("per_")
    assert asked.properties["permission"] == "bash"
    assert asked.properties["patterns"] == ["echo hi-from-tool"]
    assert replied.properties == {
        "sessionID": asked.session_id,
        "requestID": asked.properties["id"],
        "reply": "once",
    }


def test_instance_stream_without_envelope() -> None:
    """``/event`` records are bare payloads; they parse too, without directory/project."""
    events = list(parse_global_stream(raw("sse_event.raw")))
    assert events[0].type == "server.connected"
    assert events[-1].type == "server.instance.disposed"
    assert all(e.directory is None for e in events)
    assert any(e.type == "session.error" for e in events)


def test_comment_lines_are_ignored() -> None:
    """The v2 ``/api/event`` capture has ``: heartbeat`` comment lines."""
    parser = SSEParser()
    datas = parser.feed(raw("sse_api.raw"))
    assert len(datas) == 3
    assert all(not d.startswith(":") for d in datas)


def test_to_dict_round_trip() -> None:
    rec = raw_records("sse2_global.raw")[2]
    ev = parse_global_record(rec)
    assert ev is not None
    assert parse_global_record(ev.to_dict()) == ev


# -- parser edge cases ----------------------------------------------------------------------------
def test_sse_parser_rules() -> None:
    p = SSEParser()
    assert p.feed("data: a\ndata: b\n") == []
    assert p.feed("\n") == ["a\nb"]
    assert p.feed("event: x\nid: 3\nretry: 10\ndata:no-space\n\n") == ["no-space"]
    assert p.feed(": comment\n\n") == []  # comment-only block dispatches nothing
    assert p.feed("data: tail-without-blank-line") == []
    assert p.close() == []


def test_utf8_split_inside_a_character() -> None:
    data = 'data: {"payload":{"type":"x.y","properties":{"t":"héllo ✓"}}}\n\n'.encode()
    events = list(parse_global_stream(chunked(data, 1)))
    assert events == [OpencodeEvent("x.y", {"t": "héllo ✓"})]


def test_bad_records_are_skipped() -> None:
    assert parse_data("not json") is None
    assert parse_data("[1,2]") is None
    assert parse_data('{"payload": 3}') is None
    assert parse_data('{"payload": {"properties": {}}}') is None
    ev = parse_data('{"directory": 5, "payload": {"type": "a", "properties": []}}')
    assert ev == OpencodeEvent("a", {}, None, None, None)


# -- consumer ----------------------------------------------------------------------------------
def sse_body(*payload_types: str) -> bytes:
    out = b""
    for t in payload_types:
        rec = {"directory": "/d", "project": "global", "payload": {"id": "evt_1", "type": t, "properties": {}}}
        out += b"data: " + json.dumps(rec).encode() + b"\n\n"
    return out


def transport(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


async def take(stream: GlobalEventStream, n: int) -> list[OpencodeEvent]:
    out: list[OpencodeEvent] = []
    async with asyncio.timeout(5), contextlib.aclosing(stream.events()) as it:
        async for ev in it:
            out.append(ev)
            if len(out) == n:
                break
    return out


async def test_reconnects_after_stream_end_and_follows_url() -> None:
    hosts: list[str] = []
    bodies = [sse_body("server.connected", "a.one"), sse_body("server.connected", "b.two")]

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(f"{request.url.host}:{request.url.port}")
        assert request.url.path == "/global/event"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=bodies.pop(0))

    current: dict[str, str | None] = {"url": "http://127.0.0.1:1111"}

    def base_url() -> str | None:
        return current["url"]

    stream = GlobalEventStream(base_url, backoff_initial=0.01, transport=transport(handler))
    got: list[str] = []
    async with asyncio.timeout(5), contextlib.aclosing(stream.events()) as it:
        async for ev in it:
            got.append(ev.type)
            if ev.type == "a.one":
                current["url"] = None  # server restarting: no URL for a moment
                asyncio.get_running_loop().call_later(0.05, lambda: current.update(url="http://127.0.0.1:2222"))
            if ev.type == "b.two":
                break
    assert got == ["server.connected", "a.one", "server.connected", "b.two"]
    assert hosts == ["127.0.0.1:1111", "127.0.0.1:2222"]
    assert stream.connections == 2


async def test_error_status_and_html_fallback_trigger_retry() -> None:
    answers = [
        httpx.Response(401, json={"error": "nope"}),
        httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html></html>"),
        httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse_body("server.connected")),
    ]
    stream = GlobalEventStream(
        "http://127.0.0.1:9", backoff_initial=0.01, transport=transport(lambda r: answers.pop(0))
    )
    events = await take(stream, 1)
    assert [e.type for e in events] == ["server.connected"]
    assert stream.connections == 1


async def test_connection_refused_is_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse_body("x.y"))

    stream = GlobalEventStream("http://127.0.0.1:9", backoff_initial=0.01, transport=transport(handler))
    assert [e.type for e in await take(stream, 1)] == ["x.y"]
    assert calls == 3
    assert stream.last_error and "ConnectError" in stream.last_error


async def test_basic_auth_header_is_sent() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse_body("x.y"))

    stream = GlobalEventStream("http://127.0.0.1:9", password="secret", transport=transport(handler))
    await take(stream, 1)
    assert seen == [httpx.BasicAuth("opencode", "secret")._auth_header]


def test_read_timeout_must_exceed_heartbeat() -> None:
    with pytest.raises(ValueError):
        GlobalEventStream("http://127.0.0.1:9", read_timeout=5)
