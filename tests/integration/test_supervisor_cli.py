"""`hal-supervisor` as an operator starts it: --validate, --local, and refusals with one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
GO = REPO / "tests/fixtures/configs/go"


def env_with(extra: dict | None = None) -> dict[str, str]:
    """This environment without HAL_AUTH_TOKEN (it would override the configs' tokens), plus `extra`."""
    return {k: v for k, v in os.environ.items() if k != "HAL_AUTH_TOKEN"} | (extra or {})


def run(*args: str, timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "halswarm.supervisor.main", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env_with(env))


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


def test_validate_go_example_and_invalid(tmp_path):
    ok = run("--config", str(GO / "supervisor.config.example.json"), "--validate")
    assert ok.returncode == 0 and "is a valid supervisor config" in ok.stdout
    bad = run("--config", str(GO / "supervisor-invalid.config.json"), "--validate")
    assert bad.returncode == 1
    assert "server.auth_token: is required" in bad.stdout + bad.stderr
    cfg = write(tmp_path / "s.json", {"server": {"port": 70000, "auth_token": "a" * 40, "bogus": 1}})
    res = run("--config", str(cfg), "--validate")
    assert res.returncode == 1 and "server.port:" in res.stdout
    loose = write(tmp_path / "u.json", {"server": {"auth_token": "a" * 40, "bogus": 1}})
    assert run("--config", str(loose), "--validate").returncode == 0
    strict = run("--config", str(loose), "--validate", "--strict")
    assert strict.returncode == 1 and "server.bogus" in strict.stdout


def test_refuses_to_start_with_invalid_config(tmp_path):
    cfg = write(tmp_path / "s.json", {"server": {"auth_token": "CHANGE_ME_SHARED_TOKEN"}})
    res = run("--config", str(cfg))
    assert res.returncode == 1 and "placeholder" in res.stderr and "Traceback" not in res.stderr


def test_refuses_corrupt_database_naming_restore_and_remediation(tmp_path):
    db = tmp_path / "supervisor.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    cfg = write(tmp_path / "s.json", {"server": {"auth_token": "a" * 40, "port": free_port(),
                                                 "http_port": free_port()}, "database": {"path": str(db)}})
    res = run("--config", str(cfg))
    assert res.returncode == 1
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "halctl restore" in line[0] and "supervisor-db-corruption" in line[0]
    assert "Traceback" not in res.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        cfg = write(tmp_path / "s.json", {"server": {"auth_token": "a" * 40, "host": "127.0.0.1",
                                                     "port": busy.getsockname()[1], "http_port": free_port()},
                                          "database": {"path": str(tmp_path / "x.db")}})
        res = run("--config", str(cfg))
    finally:
        busy.close()
    assert res.returncode == 1 and "cannot listen" in res.stderr and "Traceback" not in res.stderr


def test_token_from_env_overrides_the_file(tmp_path):
    ws, http = free_port(), free_port()
    cfg = write(tmp_path / "s.json", {"server": {"auth_token": "a" * 40, "host": "127.0.0.1", "port": ws,
                                                 "http_port": http}, "database": {"path": str(tmp_path / "e.db")}})
    env = {k: v for k, v in os.environ.items()} | {"HAL_AUTH_TOKEN": "e" * 48}
    proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(cfg)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{http}/readyz")
        # The shared token is an agent token (issue 14): checked on the agent port, never the API.
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{ws}/ws/agent", additional_headers={"Authorization": "Bearer " + "e" * 48}):
            pass
        with pytest.raises(InvalidStatus) as info, connect(f"ws://127.0.0.1:{ws}/ws/agent",
                                                           additional_headers={"Authorization": "Bearer " + "a" * 40}):
            pass
        assert info.value.response.status_code == 401
        url = f"http://127.0.0.1:{http}/api/v1/nodes"
        assert httpx.get(url, headers={"Authorization": "Bearer " + "e" * 48}).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_local_mode_generates_token_and_prints_halctl_instructions(tmp_path):
    banner: list[str] = []
    state = tmp_path / "state"
    ws, http = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--local", "--state-dir", str(state),
                             "--port", str(ws), "--http-port", str(http)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_http(f"http://127.0.0.1:{http}/readyz")
        token = (state / "operator.token").read_text().strip()
        assert len(token) == 64 and (state / "operator.token").stat().st_mode & 0o777 == 0o600
        agent_token = (state / "agent.token").read_text().strip()
        assert len(agent_token) == 64 and (state / "agent.token").stat().st_mode & 0o777 == 0o600
        assert (state / "supervisor.db").exists()
        r = httpx.get(f"http://127.0.0.1:{http}/api/v1/nodes", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        r = httpx.get(f"http://127.0.0.1:{http}/api/v1/nodes", headers={"Authorization": f"Bearer {agent_token}"})
        assert r.status_code == 401  # the local agent's token is no operator credential
        assert proc.stdout is not None
        while not banner or banner[-1].strip() != "Stop with Ctrl-C.":  # bounded by the test timeout
            line = proc.stdout.readline()
            assert line, "".join(banner)
            banner.append(line)
        # The banner's commands, pasted as printed into another shell elsewhere (venv not on PATH).
        start = next(i for i, ln in enumerate(banner) if ln.startswith("Point halctl at it"))
        commands = [ln.strip() for ln in banner[start + 1:] if ln.strip() and not ln.startswith("Stop")]
        assert commands[-1].endswith("halctl nodes list"), commands
        shell_env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_") and k != "PYTHONPATH"}
        shell_env |= {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # the worktree's code, as installed
        pasted = subprocess.run(["bash", "-c", "\n".join(commands)], cwd=tmp_path, env=shell_env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert pasted.returncode == 0, "\n".join(commands) + pasted.stdout + pasted.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    out = "".join(banner) + out
    assert proc.returncode == 0
    assert "HALCTL_AUTH_TOKEN" in out and f"http://127.0.0.1:{http}" in out and "operator.token" in out
    assert token not in out and agent_token not in out  # the banner points at the files, never prints secrets


def _wait_http(url: str, timeout: float = 20) -> None:
    wait_for(lambda: httpx.get(url, timeout=1).status_code == 200, f"200 from {url}", timeout)


def test_json_logs_and_log_level_flags_override_the_config(tmp_path):
    """--log-level debug --log-format json beat the config's warning/text: every stderr line is one JSON
    object with level and message, and debug lines are there."""
    http_port = free_port()
    cfg = write(tmp_path / "s.json", {"server": {"auth_token": "a" * 40, "port": free_port(), "http_port": http_port},
                                      "database": {"path": str(tmp_path / "s.db")},
                                      "log": {"level": "warning", "format": "text"}})
    err_path = tmp_path / "stderr.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(cfg),
                                 "--log-level", "debug", "--log-format", "json"],
                                stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env_with())
    try:
        def ready() -> bool:
            assert proc.poll() is None, err_path.read_text()
            return httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status_code == 200

        wait_for(ready, "the supervisor ready", 30)
        assert httpx.get(f"http://127.0.0.1:{http_port}/api/v1/nodes", timeout=5).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0
    lines = err_path.read_text().splitlines()
    assert len(lines) > 3
    docs = []
    for line in lines:
        doc = json.loads(line)  # a non-JSON line fails here
        assert isinstance(doc, dict) and isinstance(doc.get("level"), str) and isinstance(doc.get("msg"), str), line
        docs.append(doc)
    levels = {d["level"] for d in docs}
    assert "debug" in levels and "info" in levels, levels
    assert any(d["msg"] == "supervisor stopped" for d in docs)
    assert all({"ts", "time", "logger"} <= set(d) for d in docs)


# ----- Type=notify: READY=1 only once it serves, never for a refused start -----

def _notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock, str(path)


def _datagrams(sock: socket.socket, until: str, timeout: float) -> list[str]:
    """Datagrams received until one holds `until` (or the timeout)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            break
    return got


def test_notifies_ready_only_when_serving_and_stopping_on_sigterm(tmp_path):
    sock, addr = _notify_socket(tmp_path)
    http_port = free_port()
    cfg = write(tmp_path / "s.json", {"server": {"auth_token": "a" * 40, "host": "127.0.0.1", "port": free_port(),
                                                 "http_port": http_port},
                                      "database": {"path": str(tmp_path / "s.db")}})
    proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(cfg)], cwd=REPO,
                            env=env_with({"NOTIFY_SOCKET": addr}), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        got = _datagrams(sock, "READY=1", 30)
        assert got and "READY=1" in got[-1], got
        assert got[0].startswith("STATUS=starting"), got  # shown while the database is checked
        assert f"HTTP API on 127.0.0.1:{http_port}" in got[-1]
        # READY=1 means serving: the API answers at once, no polling
        assert httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        stopping = _datagrams(sock, "STOPPING=1", 15)
        assert stopping and stopping[-1].startswith("STOPPING=1"), stopping
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        sock.close()


def test_refused_start_never_notifies_ready(tmp_path):
    sock, addr = _notify_socket(tmp_path)
    db = tmp_path / "supervisor.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    cfg = write(tmp_path / "s.json", {"server": {"auth_token": "a" * 40, "port": free_port(),
                                                 "http_port": free_port()}, "database": {"path": str(db)}})
    try:
        res = run("--config", str(cfg), env={"NOTIFY_SOCKET": addr})
        assert res.returncode == 1 and "failed its integrity check" in res.stderr
        got = _datagrams(sock, "READY=1", 0.5)
        assert got and all("READY=1" not in d for d in got), got
    finally:
        sock.close()
