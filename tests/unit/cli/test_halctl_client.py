"""ApiClient, URL mapping and SSE parsing, without the CLI around them."""

from __future__ import annotations

import httpx
import pytest

from halswarm.cli.client import ApiClient, Envelope, iter_sse, path_id
from halswarm.cli.context import normalize_supervisor_url
from halswarm.cli.errors import ApiAuthError, ApiNotFound, ApiUnreachable, SupervisorRefused, UsageProblem


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ws://h:8420", "http://h:8421"),
        ("ws://h:8420/ws/agent", "http://h:8421"),
        ("wss://sup.example.com:8420/ws/agent", "https://sup.example.com:8421"),
        ("ws://localhost", "http://localhost:8421"),
        ("ws://h:9000/ws/agent", "http://h:9000"),
        ("http://localhost:8421", "http://localhost:8421"),
        ("http://localhost:8421/", "http://localhost:8421"),
        ("https://proxy.example/hal/api/v1/", "https://proxy.example/hal"),
        ("sup.internal:8421", "http://sup.internal:8421"),
        ("ws://[::1]:8420", "http://[::1]:8421"),
    ],
)
def test_normalize_supervisor_url(raw: str, expected: str) -> None:
    assert normalize_supervisor_url(raw) == expected


@pytest.mark.parametrize("raw", ["ftp://h", "", "http://", "http://h:notaport"])
def test_normalize_supervisor_url_rejects(raw: str) -> None:
    with pytest.raises(UsageProblem):
        normalize_supervisor_url(raw)


def test_iter_sse_handles_comments_multiline_and_unterminated_last_event() -> None:
    lines = [
        ": keepalive",
        "",
        "event: update",
        "id: 7",
        "data: {\"a\":",
        "data: 1}",
        "",
        "retry: 1000",
        "data:no-space",
    ]
    events = list(iter_sse(lines))
    assert [(e.event, e.id, e.data) for e in events] == [
        ("update", "7", "{\"a\":\n1}"),
        ("message", "7", "no-space"),
    ]
    assert events[0].json() == {"a": 1}


def _client(handler) -> ApiClient:  # type: ignore[no-untyped-def]
    return ApiClient("http://s:8421", "tok", transport=httpx.MockTransport(handler))


def test_get_unwraps_envelope_and_sends_bearer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [1, 2], "meta": {"total": 5, "limit": 2, "offset": 0}})

    with _client(handler) as client:
        env = client.get("/sessions", {"project": "p", "status": None, "limit": 2})
    assert env == Envelope(data=[1, 2], meta={"total": 5, "limit": 2, "offset": 0}, status=200)
    assert seen[0].headers["authorization"] == "Bearer tok"
    assert seen[0].url.path == "/api/v1/sessions"
    assert dict(seen[0].url.params) == {"project": "p", "limit": "2"}


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors(status: int) -> None:
    client = _client(lambda _r: httpx.Response(status, json={"error": "no", "code": "AUTH_REQUIRED"}))
    with client, pytest.raises(ApiAuthError) as info:
        client.get("/nodes")
    assert info.value.exit_code == 4


def test_not_found_and_server_errors() -> None:
    c = _client(lambda _r: httpx.Response(404, json={"error": "session x not found", "code": "NOT_FOUND"}))
    with c, pytest.raises(ApiNotFound) as nf:
        c.get("/sessions/x", what="session x")
    assert nf.value.message == "not found: session x"
    c = _client(lambda _r: httpx.Response(502, json={"error": "node offline", "code": "DISPATCH_ERROR"}))
    with c, pytest.raises(SupervisorRefused) as info:
        c.post("/sessions", {"project": "p"})
    assert (info.value.status, info.value.code, info.value.server_message) == (502, "DISPATCH_ERROR", "node offline")
    assert "node offline" in info.value.message and "DISPATCH_ERROR" in info.value.message
    c = _client(lambda _r: httpx.Response(500, text="<html>oops</html>"))
    with c, pytest.raises(SupervisorRefused) as info:
        c.get("/nodes")
    assert info.value.server_message == "<html>oops</html>"


def test_transport_errors_become_unreachable() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with _client(boom) as c, pytest.raises(ApiUnreachable):
        c.get("/nodes")


def test_stream_drop_raises_unreachable() -> None:
    class Dropping(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield b'data: {"n": 1}\n\n'
            raise httpx.ReadError("reset")

    with _client(lambda _r: httpx.Response(200, stream=Dropping())) as c:
        got = []
        with pytest.raises(ApiUnreachable):
            for event in c.stream("/events/stream", {"session_id": "s"}):
                got.append(event.json())
    assert got == [{"n": 1}]


def test_path_id_quotes_one_segment() -> None:
    assert path_id("a/b c") == "a%2Fb%20c"
