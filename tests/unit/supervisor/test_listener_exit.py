"""A supervisor whose HTTP listener stops on its own exits with code 1 (runbook "Supervisor Unreachable":
running but not listening), instead of running on deaf; a normal shutdown is not mistaken for that."""

from __future__ import annotations

import asyncio
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
