"""OpencodeProcess state machine, restarts and stop escalation, with a small stand-in ``opencode``.

The stand-in is a Python script that behaves like ``opencode serve`` where it matters: prints the
"listening on http://127.0.0.1:PORT" line and answers ``GET /global/health``.  Its behaviour is chosen
with ``FAKE_OC_MODE``.  The real binary is exercised in tests/e2e/.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from halswarm.agent.opencode_process import (
    InvalidTransition,
    OpencodeNotice,
    OpencodeProcess,
    ProcessState,
)

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]  # starts stand-in opencode processes

FAKE_OPENCODE = textwrap.dedent(
    """\
    import base64, json, os, signal, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    mode = os.environ.get("FAKE_OC_MODE", "ok")
    args = sys.argv[1:]
    assert args[:1] == ["serve"], args
    port = int(args[args.index("--port") + 1])
    pw = os.environ.get("OPENCODE_SERVER_PASSWORD")
    with open(os.environ["FAKE_OC_LOG"], "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "args": args, "pw": pw,
                             "fetch": os.environ.get("OPENCODE_DISABLE_MODELS_FETCH")}) + "\\n")
    if mode == "crash":
        print("Error: Unexpected error", flush=True)
        sys.exit(1)
    if mode == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if pw and self.headers.get("Authorization") != "Basic " + base64.b64encode(
                    ("opencode:" + pw).encode()).decode():
                self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers(); return
            if mode == "unhealthy" or self.path != "/global/health":
                self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers(); return
            data = json.dumps({"healthy": True, "version": "0.0.0-fake"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    if mode != "silent":
        print("opencode server listening on http://127.0.0.1:%d" % srv.server_address[1], flush=True)
    srv.serve_forever()
    """
)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    script = tmp_path / "opencode"
    script.write_text(f"#!{sys.executable}\n" + FAKE_OPENCODE)
    script.chmod(0o755)
    return script


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return tmp_path / "spawns.jsonl"


def make(fake_bin: Path, log_file: Path, mode: str = "ok", **kw) -> OpencodeProcess:
    env = {"FAKE_OC_MODE": mode, "FAKE_OC_LOG": str(log_file)}
    env.update(kw.pop("env", {}))
    kw.setdefault("startup_timeout", 5.0)
    kw.setdefault("stop_grace", 1.0)
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.2)
    return OpencodeProcess(str(fake_bin), env=env, **kw)


def spawns(log_file: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once reaped, which asyncio does.
    return True


async def next_notice(proc: OpencodeProcess, kind: str, timeout: float = 10) -> OpencodeNotice:
    async with asyncio.timeout(timeout):
        while True:
            notice = await proc.notices.get()
            if notice.type == kind:
                return notice


async def test_start_run_stop(fake_bin: Path, log_file: Path) -> None:
    seen: list[OpencodeNotice] = []
    proc = make(fake_bin, log_file, on_notice=seen.append, password="pw")
    try:
        await proc.start()
        async with asyncio.timeout(10):
            url = await proc.wait_running()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert proc.base_url == url and proc.version == "0.0.0-fake"
        pid = proc.pid
        assert pid is not None
        async with httpx.AsyncClient(auth=("opencode", "pw")) as c:
            assert (await c.get(url + "/global/health")).status_code == 200
        spawn = spawns(log_file)[0]
        assert spawn["args"] == ["serve", "--hostname", "127.0.0.1", "--port", "0"]
        assert spawn["pw"] == "pw" and spawn["fetch"] == "1"
    finally:
        await proc.stop()
    assert proc.state is ProcessState.STOPPED
    assert proc.base_url is None
    assert not alive(pid)
    assert list(proc.history) == [
        ProcessState.STOPPED,
        ProcessState.STARTING,
        ProcessState.RUNNING,
        ProcessState.STOPPING,
        ProcessState.STOPPED,
    ]
    assert [n.type for n in seen] == ["opencode.started"]
    assert seen[0].data["pid"] == pid and seen[0].data["url"] == url


async def test_restart_after_crash_with_notices(fake_bin: Path, log_file: Path) -> None:
    proc = make(fake_bin, log_file)
    try:
        await proc.start()
        first = await next_notice(proc, "opencode.started")
        os.kill(first.data["pid"], signal.SIGKILL)
        exited = await next_notice(proc, "opencode.exited")
        assert exited.data == {"returncode": -signal.SIGKILL}
        restarting = await next_notice(proc, "opencode.restarting")
        assert restarting.data == {"delay": 0.05}
        second = await next_notice(proc, "opencode.started")
        assert second.data["pid"] != first.data["pid"]
        assert proc.restarts == 1
        assert ProcessState.BACKOFF in proc.history
    finally:
        await proc.stop()


async def test_crash_loop_backs_off_exponentially(fake_bin: Path, log_file: Path) -> None:
    proc = make(fake_bin, log_file, mode="crash", backoff_initial=0.01, backoff_max=0.04)
    try:
        await proc.start()
        delays = []
        failed = await next_notice(proc, "opencode.start_failed")
        assert "exited with code 1 during startup" in failed.data["reason"]
        assert "Unexpected error" in failed.data["reason"]  # last output line is quoted
        for _ in range(4):
            delays.append((await next_notice(proc, "opencode.restarting")).data["delay"])
        assert delays[:4] in ([0.01, 0.02, 0.04, 0.04], [0.02, 0.04, 0.04, 0.04])
        assert proc.state in (ProcessState.BACKOFF, ProcessState.STARTING)
        assert proc.base_url is None
    finally:
        await proc.stop()
    assert proc.state is ProcessState.STOPPED


async def test_stop_right_after_a_failed_start(fake_bin: Path, log_file: Path) -> None:
    """stop() landing while the supervisor cleans up a failed start must not confuse the state machine."""
    for _ in range(5):
        proc = make(fake_bin, log_file, mode="crash", backoff_initial=5)
        await proc.start()
        await next_notice(proc, "opencode.start_failed")
        await proc.stop()
        assert proc.state is ProcessState.STOPPED
        assert list(proc.history)[-2:] == [ProcessState.STOPPING, ProcessState.STOPPED]


async def test_backoff_resets_after_stable_run(fake_bin: Path, log_file: Path) -> None:
    proc = make(fake_bin, log_file, stable_after=0.0, backoff_initial=0.05)
    try:
        await proc.start()
        for _ in range(3):
            started = await next_notice(proc, "opencode.started")
            os.kill(started.data["pid"], signal.SIGKILL)
            assert (await next_notice(proc, "opencode.restarting")).data["delay"] == 0.05
    finally:
        await proc.stop()


async def test_not_installed_is_a_state_not_a_loop(tmp_path: Path) -> None:
    seen: list[OpencodeNotice] = []
    proc = OpencodeProcess(str(tmp_path / "no-such-opencode"), on_notice=seen.append)
    await proc.start()
    async with asyncio.timeout(5):
        await proc.wait_state(ProcessState.NOT_INSTALLED)
        with pytest.raises(RuntimeError, match="not found"):
            await proc.wait_running()
    assert [n.type for n in seen] == ["opencode.start_failed"]
    assert "opencode binary not found" in seen[0].data["reason"]
    assert proc.restarts == 0
    await proc.stop()
    assert proc.state is ProcessState.STOPPED

    by_name = OpencodeProcess("definitely-not-an-opencode-binary-xyz")
    await by_name.start()
    async with asyncio.timeout(5):
        await by_name.wait_state(ProcessState.NOT_INSTALLED)
    await by_name.stop()


async def test_missing_cwd_is_a_failed_start_not_missing_binary(fake_bin: Path, log_file: Path, tmp_path: Path) -> None:
    proc = make(fake_bin, log_file, cwd=str(tmp_path / "no-such-dir"), backoff_initial=5)
    try:
        await proc.start()
        failed = await next_notice(proc, "opencode.start_failed")
        assert "cannot spawn" in failed.data["reason"]
        async with asyncio.timeout(5):
            await proc.wait_state(ProcessState.BACKOFF)
    finally:
        await proc.stop()


async def test_sigkill_after_grace_when_sigterm_ignored(fake_bin: Path, log_file: Path) -> None:
    proc = make(fake_bin, log_file, mode="ignore_term", stop_grace=0.3)
    await proc.start()
    async with asyncio.timeout(10):
        await proc.wait_running()
    pid = proc.pid
    assert pid is not None
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await proc.stop()
    assert 0.25 <= loop.time() - t0 < 5
    assert proc.last_returncode == -signal.SIGKILL
    assert not alive(pid)


async def test_startup_timeout_without_listening_line(fake_bin: Path, log_file: Path) -> None:
    proc = make(fake_bin, log_file, mode="silent", startup_timeout=0.5, backoff_initial=5)
    try:
        await proc.start()
        failed = await next_notice(proc, "opencode.start_failed")
        assert "not ready within" in failed.data["reason"]
        pid = spawns(log_file)[0]["pid"]
        await next_notice(proc, "opencode.restarting")
        assert not alive(pid)  # the stuck child was killed before backing off
    finally:
        await proc.stop()


async def test_fixed_port_unhealthy_times_out(fake_bin: Path, log_file: Path) -> None:
    proc = make(fake_bin, log_file, mode="unhealthy", startup_timeout=0.6, backoff_initial=5)
    try:
        await proc.start()
        failed = await next_notice(proc, "opencode.start_failed")
        assert "not ready" in failed.data["reason"]
    finally:
        await proc.stop()


async def test_health_failures_kill_a_hung_server(fake_bin: Path, log_file: Path) -> None:
    """Running, then SIGSTOP (alive but not answering): killed after N failed checks, then restarted."""
    proc = make(fake_bin, log_file, health_interval=0.2, health_failures=2)
    try:
        await proc.start()
        first = await next_notice(proc, "opencode.started")
        os.kill(first.data["pid"], signal.SIGSTOP)
        exited = await next_notice(proc, "opencode.exited")
        assert exited.data["returncode"] is not None
        second = await next_notice(proc, "opencode.started")
        assert second.data["pid"] != first.data["pid"]
    finally:
        await proc.stop()


async def test_attach_mode(fake_bin: Path, log_file: Path) -> None:
    server = make(fake_bin, log_file)
    await server.start()
    try:
        async with asyncio.timeout(10):
            url = await server.wait_running()
        watcher = OpencodeProcess(
            manage=False, base_url=url, health_interval=0.1, health_failures=2, backoff_initial=0.05
        )
        await watcher.start()
        try:
            started = await next_notice(watcher, "opencode.started")
            assert started.data["url"] == url and started.data["version"] == "0.0.0-fake"
            assert watcher.pid is None
            await server.stop()
            exited = await next_notice(watcher, "opencode.exited")
            assert exited.data == {"returncode": None}
            assert "stopped answering" in (watcher.last_error or "")
        finally:
            await watcher.stop()
        assert len(spawns(log_file)) == 1  # attach mode never spawns
    finally:
        await server.stop()


def test_transitions_are_checked() -> None:
    proc = OpencodeProcess("opencode")
    with pytest.raises(InvalidTransition):
        proc._set_state(ProcessState.RUNNING)
    with pytest.raises(ValueError):
        OpencodeProcess(manage=False)


async def test_stop_before_start_and_twice(fake_bin: Path, log_file: Path) -> None:
    proc = make(fake_bin, log_file)
    await proc.stop()
    await proc.start()
    await proc.stop()  # possibly before the task even ran
    await proc.stop()
    assert proc.state is ProcessState.STOPPED
    for spawn in spawns(log_file):
        assert not alive(spawn["pid"])


def test_env_building(fake_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCODE_SERVER_PASSWORD", "leaked")
    monkeypatch.setenv("SOME_VAR", "x")
    env = OpencodeProcess(str(fake_bin), env={"HOME": "/tmp/h"}).build_env()
    assert "OPENCODE_SERVER_PASSWORD" not in env
    assert env["OPENCODE_DISABLE_MODELS_FETCH"] == "1" and env["OPENCODE_DISABLE_AUTOUPDATE"] == "1"
    assert env["HOME"] == "/tmp/h" and env["SOME_VAR"] == "x"
    env = OpencodeProcess(str(fake_bin), password="pw", inherit_env=False).build_env()
    assert env["OPENCODE_SERVER_PASSWORD"] == "pw" and "SOME_VAR" not in env
