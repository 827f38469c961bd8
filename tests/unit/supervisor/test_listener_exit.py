"""A supervisor whose HTTP listener stops on its own exits with code 1 (runbook "Supervisor Unreachable":
running but not listening), instead of running on deaf; a normal shutdown is not mistaken for that."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from halswarm.config.supervisor import parse_supervisor_config
from halswarm.supervisor.app import Supervisor
from tests.support.ports import free_port

pytestmark = pytest.mark.process  # binds loopback ports

TOKEN = "t" * 40


def _config(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg, _ = parse_supervisor_config({
        "auth_token": TOKEN,
        "server": {"host": "127.0.0.1", "port": free_port(), "http_port": free_port()},
        "database": {"path": str(tmp_path / "supervisor.db")},
    })
    return cfg


async def test_listener_that_stops_serving_ends_the_process_with_code_1(tmp_path: Path) -> None:
    sup = Supervisor(_config(tmp_path))
    await sup.start()
    try:
        url = f"http://127.0.0.1:{sup.config.http_port}/healthz"
        async with httpx.AsyncClient() as c:
            assert (await c.get(url)).status_code == 200
        assert sup._api is not None
        sup._api.should_exit = True  # uvicorn's serve loop ends without our shutdown asking for it
        await asyncio.wait_for(sup.wait_stopped(), 15)
        assert sup.exit_code == 1
    finally:
        await sup.shutdown()


async def test_a_normal_shutdown_exits_0(tmp_path: Path) -> None:
    sup = Supervisor(_config(tmp_path))
    await sup.start()
    sup.request_stop()
    await sup.shutdown()
    assert sup.exit_code == 0
    assert sup.lifecycle.state.value == "stopped"


async def test_failed_agent_listener_is_reported_once_and_turns_readyz_503(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The agent listener destroyed under a running supervisor (what ``ss -K`` does): every accept()
    fails with EINVAL on a socket that stays readable. Before, asyncio logged one traceback per loop turn
    (thousands a second, ~1 MB of log a second); now one error, /readyz 503 naming the hub, and the HTTP
    API keeps answering for the operator."""
    import socket

    sup = Supervisor(_config(tmp_path))
    await sup.start()
    try:
        listening = sup.hub._server.sockets[0]  # type: ignore[union-attr]
        raw = socket.socket(fileno=listening.fileno())
        try:
            raw.shutdown(socket.SHUT_RDWR)
        finally:
            raw.detach()
        with caplog.at_level(logging.ERROR):
            async with httpx.AsyncClient() as c:
                base = f"http://127.0.0.1:{sup.config.http_port}"
                deadline = asyncio.get_running_loop().time() + 10
                while (r := await c.get(f"{base}/readyz")).status_code != 503:
                    assert asyncio.get_running_loop().time() < deadline, r.text
                    await asyncio.sleep(0.05)
                assert "agent listener failed" in r.json()["components"]["websocket_hub"]["error"], r.text
                await asyncio.sleep(0.5)  # long enough for thousands of loop turns
                assert (await c.get(f"{base}/healthz")).status_code == 200
        loop_errors = [r for r in caplog.records if "Exception in callback" in r.getMessage()]
        ours = [r for r in caplog.records if "agent listener on" in r.getMessage()]
        assert not loop_errors, f"{len(loop_errors)} loop tracebacks"
        assert len(ours) == 1, [r.getMessage() for r in ours]
        assert sup.exit_code == 0 and not sup.hub.serving
    finally:
        await sup.shutdown()
