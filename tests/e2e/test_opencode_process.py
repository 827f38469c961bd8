"""OpencodeProcess supervising the REAL ``opencode serve``: crash restart, event stream reconnect,
server password, port conflicts and graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.opencode_client import OpencodeAuthError, OpencodeClient
from halswarm.agent.opencode_events import GlobalEventStream
from halswarm.agent.opencode_process import OpencodeNotice, OpencodeProcess, ProcessState
from halswarm.agent.session_state import SessionReducer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def next_notice(proc: OpencodeProcess, kind: str, timeout: float = 30.0) -> OpencodeNotice:
    async with asyncio.timeout(timeout):
        while True:
            notice = await proc.notices.get()
            if notice.type == kind:
                return notice


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_kill9_restarts_and_events_reconnect(
    opencode_factory: Callable[..., OpencodeProcess],
    recorder_factory: Callable[..., Any],
    fake_llm: Any,
    oc_home: Path,
) -> None:
    workdir = oc_home / "restart"
    workdir.mkdir()
    proc = opencode_factory(oc_home, fake_llm, backoff_initial=0.2)
    recorder = None
    try:
        await proc.start()
        first = await next_notice(proc, "opencode.started", timeout=45)
        assert first.data["version"] == "1.18.33"
        tracker = SessionReducer({"restart": str(workdir)})
        stream = GlobalEventStream(lambda: proc.base_url, backoff_initial=0.1, backoff_max=1.0)
        recorder = recorder_factory(stream, tracker)
        async with asyncio.timeout(15):
            await stream.connected.wait()

        os.kill(first.data["pid"], signal.SIGKILL)
        exited = await next_notice(proc, "opencode.exited")
        assert exited.data == {"returncode": -signal.SIGKILL}
        assert (await next_notice(proc, "opencode.restarting")).data == {"delay": 0.2}
        second = await next_notice(proc, "opencode.started", timeout=45)
        assert second.data["pid"] != first.data["pid"]
        assert gone(first.data["pid"])
        assert proc.state is ProcessState.RUNNING and proc.restarts == 1

        # The consumer follows the server to its new port and sees new events.
        await recorder.wait(lambda: stream.connections >= 2, "event stream reconnect", timeout=30)
        assert stream.current_url == second.data["url"]
        async with OpencodeClient(second.data["url"]) as client:
            sid = (await client.create_session(str(workdir), title="after restart"))["id"]
        state = await recorder.wait(lambda: tracker.get(sid), "session.created from the new server")
        assert state.project == "restart" and state.title == "after restart"
        assert sum(e.type == "server.connected" for e in recorder.events) == 2
    finally:
        if recorder is not None:
            await recorder.stop()
        await proc.stop()
    assert proc.state is ProcessState.STOPPED


async def test_password_protects_every_route(
    opencode_factory: Callable[..., OpencodeProcess], tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("ochome-pw")
    proc = opencode_factory(home, None, password="s3cret-pw")
    try:
        await proc.start()
        async with asyncio.timeout(45):
            url = await proc.wait_running()  # the health wait used the password too
        async with OpencodeClient(url, password="s3cret-pw") as client:
            assert (await client.health())["healthy"] is True
            sid = (await client.create_session(str(home), title="pw"))["id"]
            assert (await client.get_session(sid))["id"] == sid
        for password in (None, "wrong"):
            async with OpencodeClient(url, password=password) as client:
                with pytest.raises(OpencodeAuthError) as info:
                    await client.health()
                assert info.value.status == 401
        stream = GlobalEventStream(url, password="s3cret-pw")
        async with asyncio.timeout(15), contextlib.aclosing(stream.events()) as events:
            first = await anext(events)
        assert first.type == "server.connected"
    finally:
        await proc.stop()


async def test_port_in_use_fails_start_then_graceful_stop(
    opencode_factory: Callable[..., OpencodeProcess], tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("ochome-port")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = opencode_factory(home, None, backoff_initial=30)
        proc.port = port
        try:
            await proc.start()
            failed = await next_notice(proc, "opencode.start_failed", timeout=30)
            assert "exited with code 1" in failed.data["reason"]
            assert "ServeError" in failed.data["reason"]  # opencode's last output line
            async with asyncio.timeout(10):
                await proc.wait_state(ProcessState.BACKOFF)
        finally:
            await proc.stop()
    assert proc.state is ProcessState.STOPPED

    # Now free: it starts on that port, and SIGTERM stops it quickly.
    proc = opencode_factory(home, None)
    proc.port = port
    try:
        await proc.start()
        async with asyncio.timeout(45):
            assert await proc.wait_running() == f"http://127.0.0.1:{port}"
        pid = proc.pid
        assert pid is not None
    finally:
        t0 = time.monotonic()
        await proc.stop()
        took = time.monotonic() - t0
    assert gone(pid)
    assert proc.last_returncode is not None and proc.last_returncode != -signal.SIGKILL  # SIGTERM sufficed
    assert took < 5
