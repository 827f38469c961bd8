"""`hal-supervisor --local` also runs a local hal-agent (the README's run command)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from halswarm.supervisor.main import _local_opencode
from tests.support.ports import free_port
from tests.support.supervisor_proc import REPO
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(90)


def _alive(pid: int) -> bool:
    try:
        return b"halswarm.agent.main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_local_mode_starts_and_stops_a_local_agent(tmp_path: Path) -> None:
    state = tmp_path / "state"
    home = tmp_path / "home"
    home.mkdir()
    ws, http = free_port(), free_port()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_STATE_HOME": str(home / ".local/state"),
           # opencode, when installed, runs offline and quiet in this fresh HOME (see tests/e2e/conftest.py)
           "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1", "npm_config_offline": "true"}
    env.pop("HAL_AUTH_TOKEN", None)
    env.pop("HAL_LOCAL_AGENT", None)
    out_path = tmp_path / "out.log"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--local", "--state-dir",
                                 str(state), "--port", str(ws), "--http-port", str(http)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    agent_pid = None
    try:
        m = wait_for(lambda: re.search(r"local agent\s+pid (\d+)", out_path.read_text()), "banner", 20)
        agent_pid = int(m.group(1))
        token = (state / "operator.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        agent_token = (state / "agent.token").read_text().strip()
        assert agent_token != token  # issue 14: the agent's own token, never the operator's
        r = httpx.get(f"http://127.0.0.1:{http}/api/v1/nodes", headers={"Authorization": f"Bearer {agent_token}"})
        assert r.status_code == 401

        def node() -> dict | None:
            nodes = httpx.get(f"http://127.0.0.1:{http}/api/v1/nodes", headers=headers).json()["data"]
            return nodes[0] if nodes and nodes[0]["status"] == "online" else None

        n = wait_for(node, "the local node online", 45)
        assert n["projects"] == ["demo"]
        assert n["project_directories"]["demo"] == str(state / "projects" / "demo")
        caps = n["capabilities"]
        if _local_opencode() is not None:
            # opencode is installed: the agent started it and registered once it was up, so the
            # node offers sessions and names the running server.
            assert caps["opencode"] is True, caps
            assert caps["sessions"] == {"available": True, "reason": None}, caps
            server = caps["opencode_server"]
            assert server["mode"] == "manage" and server["state"] == "running", server
            assert server["url"].startswith("http://127.0.0.1:") and server["version"], server
            with httpx.Client(headers=headers) as c:
                r = c.post(f"http://127.0.0.1:{http}/api/v1/sessions", json={"project": "demo"}, timeout=60)
            assert r.status_code == 201, r.text
            assert r.json()["data"]["id"].startswith("ses_")
        else:  # no opencode on this machine: the node says why it has no sessions
            assert caps["opencode"] is False
            assert caps["sessions"]["available"] is False and caps["sessions"]["reason"]
        cfg = state / "agent.config.json"
        assert cfg.stat().st_mode & 0o777 == 0o600
        assert token not in cfg.read_text() and agent_token not in cfg.read_text()  # it points at its token file
        assert json.loads(cfg.read_text())["auth_token_file"] == str(state / "agent.token")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if agent_pid is not None and _alive(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)
    assert proc.returncode == 0, out_path.read_text()[-3000:]
    assert agent_pid is not None and not _alive(agent_pid)
    assert not (state / "agent" / "opencode.pid").exists()  # the agent stopped its opencode
    assert "local agent exited with 0" in out_path.read_text()
