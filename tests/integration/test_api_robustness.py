"""The HTTP API never answers 5xx to input (issue 15): numeric bounds, JSON depth, 413, keep-alive.

Against the real supervisor, except the crash test, which needs a route that raises: that one runs the
real error handling in a real uvicorn on loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from tests.support.ports import free_port
from tests.support.waiting import wait_for

HUGE = (2**63, 2**64, 10**30)
PAGED = ("/api/v1/events", "/api/v1/audit", "/api/v1/remediations", "/api/v1/nodes", "/api/v1/sessions")
DEEP = 200_000


def _peer_port(r: httpx.Response) -> int:
    """The client-side port of the connection a response came on (same port: same connection)."""
    return r.extensions["network_stream"].get_extra_info("client_addr")[1]


def _deep_list(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _deep_object(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


def test_numbers_out_of_range_are_validation_errors(supervisor):
    with supervisor.client() as c:
        for path in PAGED:
            for value in HUGE:
                for param in ("offset", "limit"):
                    r = c.get(path, params={param: value})
                    assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_ERROR"), (path, param, r.text)
                    assert param in r.json()["error"]
        r = c.get("/api/v1/events", params={"offset": 1_000_000_000})
        assert r.status_code == 200 and r.json()["data"] == [], r.text
        # command timeouts too (one supervisor for both: each start costs seconds on a loaded machine)
        for body in ({"timeout_ms": 10**400}, {"timeout_ms": 2**63}, {"timeout": 1e308}, {"timeout": 86_401}):
            r = c.post("/api/v1/commands", json={"type": "session_status", "target": "alpha", **body})
            assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_ERROR"), (body, r.text)
        r = c.post("/api/v1/commands/credentials/push", json={"target_node": "n", "env_vars": {"A": "b"},
                                                               "version": 2**64})
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_ERROR"), r.text


def test_deeply_nested_json_is_refused_with_400(supervisor):
    routes = [("PUT", "/api/v1/env/manifest"), ("POST", "/api/v1/remediations"), ("POST", "/api/v1/sessions"),
              ("POST", "/api/v1/commands")]
    with supervisor.client() as c:
        for method, path in routes:
            for body in (_deep_list(DEEP), _deep_object(DEEP // 2), _deep_list(65)):
                r = c.request(method, path, content=body, headers={"content-type": "application/json"})
                assert r.status_code == 400, (method, path, len(body), r.text[:300])
                assert r.json() == {"error": "request body: JSON nested deeper than 64 levels", "code": "BAD_REQUEST"}
        assert c.get("/api/v1/nodes").status_code == 200
        # up to the limit, bodies are parsed as usual
        body = b'{"type": "session_status", "target": "alpha", "args": {"x": ' + _deep_list(62) + b"}}"  # depth 64
        r = c.post("/api/v1/commands", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and "nested" not in r.json()["error"], r.text
        r = c.put("/api/v1/env/manifest", content=_deep_object(63))
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_ERROR"), r.text  # parsed, then invalid


def test_oversized_bodies_get_413_with_the_envelope(supervisor):
    limit = 1024 * 1024
    with supervisor.client() as c:
        r = c.post("/api/v1/sessions", content=b"x" * (limit + 1), headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["code"]) == (413, "BAD_REQUEST"), r.text
        assert r.json()["error"] == f"request body too large: the limit is {limit} bytes (server.max_body_bytes)"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
            for _ in range(20):
                yield b" " * 65536

        r = c.post("/api/v1/remediations", content=chunks(), headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["code"]) == (413, "BAD_REQUEST"), r.text
        # under the server's limit, over the manifest's own (512 KiB)
        r = c.put("/api/v1/env/manifest", content=b'{"projects": {}, "pad": "' + b"p" * 600_000 + b'"}')
        assert (r.status_code, r.json()["code"]) == (413, "BAD_REQUEST"), r.text
        assert "512" in r.json()["error"] or "524288" in r.json()["error"]


def test_connection_is_kept_alive_after_error_answers(supervisor):
    with supervisor.client() as c:
        first = c.get("/healthz")
        port = _peer_port(first)
        bad = [
            ("GET", "/api/v1/nope", {}), ("PATCH", "/healthz", {}),
            ("GET", "/api/v1/events", {"params": {"offset": 2**63}}),
            ("GET", "/api/v1/audit", {"params": {"limit": "many"}}),
            ("POST", "/api/v1/sessions", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
            ("PUT", "/api/v1/env/manifest", {"content": _deep_list(DEEP)}),
            ("POST", "/api/v1/remediations", {"content": _deep_object(1000)}),
        ]
        for method, path, kw in bad:
            r = c.request(method, path, **kw)
            assert 400 <= r.status_code < 500 and set(r.json()) == {"error", "code"}, (method, path, r.text[:200])
            good = c.get("/api/v1/nodes")
            assert good.status_code == 200
            assert _peer_port(r) == _peer_port(good) == port, f"connection dropped after {method} {path}"


@pytest.fixture
def crashing_server() -> Iterator[str]:
    """The API's real error handling on a real uvicorn, with one route that raises."""
    from fastapi import FastAPI

    from halswarm.supervisor.http.errors import install_error_handling

    crashes: list[int] = []
    app = FastAPI()
    install_error_handling(app, 1024, on_internal=lambda: crashes.append(1))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom: secret detail")

    @app.get("/fine")
    async def fine() -> dict[str, int]:
        return {"crashes": len(crashes)}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "uvicorn to start", 15)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def test_connection_is_kept_alive_after_an_internal_error(crashing_server):
    with httpx.Client(base_url=crashing_server, timeout=10) as c:
        r = c.get("/boom")
        assert (r.status_code, r.json()) == (500, {"error": "internal error; see the supervisor log",
                                                   "code": "INTERNAL_ERROR"})
        good = c.get("/fine")
        assert (good.status_code, good.json()) == (200, {"crashes": 1})
        assert _peer_port(r) == _peer_port(good), "the server dropped the keep-alive connection after a 500"
