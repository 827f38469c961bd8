"""OpencodeClient against a mock transport answering with the shapes recorded from opencode 1.18.33."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from halswarm.agent.opencode_client import (
    OpencodeAuthError,
    OpencodeBadRequest,
    OpencodeClient,
    OpencodeError,
    OpencodeNotFound,
    OpencodeProtocolError,
    OpencodeServerError,
    OpencodeTimeout,
    OpencodeUnavailable,
    split_model,
)

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kw) -> OpencodeClient:
    return OpencodeClient("http://127.0.0.1:4096/", transport=httpx.MockTransport(handler), **kw)


def body(request: httpx.Request) -> dict:
    return json.loads(request.content or b"{}")


async def test_create_session_sends_directory_title_and_model() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "ses_1", "directory": request.url.params["directory"]})

    async with client(handler) as c:
        sess = await c.create_session("/srv/p", title="t", model="fake/fake-model")
    assert sess == {"id": "ses_1", "directory": "/srv/p"}
    req = seen[0]
    assert (req.method, req.url.path) == ("POST", "/session")
    assert body(req) == {"title": "t", "model": {"providerID": "fake", "id": "fake-model"}}


async def test_prompt_async_body_and_204() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with client(handler) as c:
        assert await c.prompt_async("ses_1", "hello", model="openrouter/anthropic/claude", directory="/d") is None
    req = seen[0]
    assert req.url.path == "/session/ses_1/prompt_async"
    assert req.url.params["directory"] == "/d"
    assert body(req) == {
        "parts": [{"type": "text", "text": "hello"}],
        "model": {"providerID": "openrouter", "modelID": "anthropic/claude"},
    }


@pytest.mark.parametrize(
    ("status", "payload", "exc", "name", "message"),
    [
        (
            404,
            {"name": "NotFoundError", "data": {"message": "Session not found: ses_x"}},
            OpencodeNotFound,
            "NotFoundError",
            "Session not found: ses_x",
        ),
        (
            400,
            {"name": "BadRequest", "data": {"message": 'Missing key\n  at ["parts"]', "kind": "Payload"}},
            OpencodeBadRequest,
            "BadRequest",
            'Missing key\n  at ["parts"]',
        ),
        (
            500,
            {"name": "UnknownError", "data": {"message": "Unexpected server error.", "ref": "err_1"}},
            OpencodeServerError,
            "UnknownError",
            "Unexpected server error.",
        ),
    ],
)
async def test_error_mapping(status: int, payload: dict, exc: type[OpencodeError], name: str, message: str) -> None:
    async with client(lambda r: httpx.Response(status, json=payload)) as c:
        with pytest.raises(exc) as info:
            await c.get_session("ses_x")
    err = info.value
    assert (err.status, err.name, err.message) == (status, name, message)
    assert isinstance(err, OpencodeError)
    assert str(status) in str(err) and message in str(err)


async def test_401_without_json_body() -> None:
    resp = httpx.Response(401, headers={"www-authenticate": 'Basic realm="Secure Area"'}, content=b"Unauthorized")
    async with client(lambda r: resp) as c:
        with pytest.raises(OpencodeAuthError) as info:
            await c.health()
    assert info.value.status == 401 and info.value.name is None


async def test_basic_auth_header() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"healthy": True, "version": "1.18.33"})

    async with client(handler, password="secret") as c:
        assert await c.health() == {"healthy": True, "version": "1.18.33"}
    async with client(handler) as c:
        await c.health()
    assert seen == ["Basic b3BlbmNvZGU6c2VjcmV0", None]  # base64("opencode:secret")


async def test_html_fallback_is_a_protocol_error() -> None:
    html = httpx.Response(200, headers={"content-type": "text/html"}, content=b"<!doctype html>")
    async with client(lambda r: html) as c:
        with pytest.raises(OpencodeProtocolError):
            await c.health()


async def test_list_sessions_prefers_experimental_then_falls_back() -> None:
    calls: list[str] = []

    def with_experimental(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json=[{"id": "ses_1", "project": {"id": "global"}}])

    async with client(with_experimental) as c:
        assert [s["id"] for s in await c.list_sessions(["/a"])] == ["ses_1"]
    assert calls == ["/experimental/session"]

    calls.clear()

    def without(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.url.path}?{request.url.params.get('directory', '')}")
        if request.url.path == "/experimental/session":
            return httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>")
        by_dir = {"": [{"id": "ses_1"}], "/a": [{"id": "ses_1"}, {"id": "ses_2"}], "/b": [{"id": "ses_3"}]}
        return httpx.Response(200, json=by_dir[request.url.params.get("directory", "")])

    async with client(without) as c:
        assert [s["id"] for s in await c.list_sessions(["/a", "/b"])] == ["ses_1", "ses_2", "ses_3"]
        await c.list_sessions([])
    assert calls == ["/experimental/session?", "/session?", "/session?/a", "/session?/b", "/session?"]


async def test_status_abort_delete_messages_permissions() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        route = (request.method, request.url.path)
        answers = {
            ("GET", "/session/status"): {"ses_1": {"type": "busy"}},
            ("POST", "/session/ses_1/abort"): True,
            ("DELETE", "/session/ses_1"): True,
            ("GET", "/session/ses_1/message"): [{"info": {"role": "user"}, "parts": []}],
            ("GET", "/permission"): [{"id": "per_1", "sessionID": "ses_1", "permission": "bash"}],
            ("POST", "/permission/per_1/reply"): True,
        }
        if route == ("POST", "/permission/per_1/reply"):
            assert body(request) == {"reply": "once"}
        return httpx.Response(200, json=answers[route])

    async with client(handler) as c:
        assert await c.session_status_map() == {"ses_1": {"type": "busy"}}
        assert await c.abort("ses_1") is True
        assert await c.delete_session("ses_1") is True
        assert (await c.messages("ses_1"))[0]["info"]["role"] == "user"
        assert (await c.list_permissions(directory="/d"))[0]["id"] == "per_1"
        assert await c.reply_permission("per_1", "once") is True
        with pytest.raises(ValueError):
            await c.reply_permission("per_1", "yes")


async def test_timeouts_and_refused_connections() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client(slow) as c:
        with pytest.raises(OpencodeTimeout):
            await c.health()
    async with client(refused) as c:
        with pytest.raises(OpencodeUnavailable) as info:
            await c.health()
    assert info.value.status is None


@pytest.mark.process
async def test_real_timeout_against_silent_server() -> None:
    """A TCP server that accepts and never answers: the call ends within its timeout."""
    import asyncio

    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with OpencodeClient(f"http://127.0.0.1:{port}", timeout=0.3) as c:
            async with asyncio.timeout(3):
                with pytest.raises(OpencodeTimeout):
                    await c.health()
    finally:
        release.set()
        server.close()
        await server.wait_closed()


def test_split_model() -> None:
    assert split_model("fake/fake-model") == ("fake", "fake-model")
    assert split_model("a/b/c") == ("a", "b/c")
    for bad in ("nomodel", "/x", "x/"):
        with pytest.raises(ValueError):
            split_model(bad)
