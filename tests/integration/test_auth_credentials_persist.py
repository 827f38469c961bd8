"""Pushed credentials survive a restart of the real hal-agent process (issue 15).

Real supervisor process, real ``hal-agent`` process (stand-in tool CLIs on its PATH, no opencode):
a push the supervisor does NOT hold in its config (``credentials`` has only the version, auto_push
off) is applied, the agent is killed with SIGKILL (no shutdown path) and started again: it comes back
in sync with the same version, without a new push, and the value reached the tools again (the
stand-in claude reports the API key from its environment). An older push is refused and changes
nothing. The value is only in the 0600 values file: not in the agent's log, the other state files,
the supervisor's database or its answers.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_proc import AgentProc, api_get
from tests.support.auth_tools import stand_in_tools
from tests.support.supervisor_proc import InstalledSupervisorProc
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

SECRET = "sk-ant-api03-PERSIST-4c5d6e7f8a9b"
NODE = "persist-node"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[InstalledSupervisorProc, AgentProc]]:
    sup = InstalledSupervisorProc(tmp_path / "sup", extra={"credentials": {"version": 3, "auto_push": False}})
    env = stand_in_tools(tmp_path / "tools") | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    agent = AgentProc(tmp_path / "agent", sup.ws_url, sup.agent_token, node_id=NODE, env=env, clean_env=True,
                      extra={"auth_report_interval_sec": 3600})
    try:
        sup.start()
        agent.start()
        agent.wait_online(sup, timeout=60)
        yield sup, agent
    finally:
        agent.cleanup()
        sup.stop()


def auth_of(sup: InstalledSupervisorProc) -> dict[str, Any]:
    return api_get(sup, f"/api/v1/nodes/{NODE}/auth")


def _epoch(v: Any) -> float:
    if isinstance(v, int | float):
        return float(v)
    return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp() if v else 0.0


def claude_has_key(sup: InstalledSupervisorProc, version: int, since: float = 0.0) -> dict[str, Any] | None:
    """The node's auth with claude_code authenticated by the pushed key, probed at or after ``since``."""
    a = auth_of(sup)
    claude = a["auth_states"].get("claude_code", {})
    ok = a["credential_version"] == version and claude.get("status") == "authenticated"
    fresh = _epoch(claude.get("checked_at")) >= since
    return a if ok and fresh and claude.get("reason") == "API key from ANTHROPIC_API_KEY" else None


def push(sup: InstalledSupervisorProc, version: int, value: str = SECRET) -> Any:
    with sup.client() as c:
        return c.post("/api/v1/commands/credentials/push", json={
            "target_node": NODE, "env_vars": {"ANTHROPIC_API_KEY": value}, "version": version})


def test_pushed_credentials_survive_an_agent_kill_and_restart(stack: tuple[InstalledSupervisorProc, AgentProc]) -> None:
    sup, agent = stack
    wait_for(lambda: auth_of(sup)["credential_sync"] == "drift_detected", "drift before the push", 30)
    r = push(sup, 3)
    assert r.status_code == 200 and r.json()["data"]["credential_sync"] == "in_sync", r.text
    wait_for(lambda: claude_has_key(sup, 3), "claude_code authenticated by the pushed key", 30)

    values = agent.data_dir / "credentials.values.json"
    assert stat.S_IMODE(values.stat().st_mode) == 0o600
    assert json.loads(values.read_text()) | {"applied_at": None} == {
        "version": 3, "env": {"ANTHROPIC_API_KEY": SECRET}, "applied_at": None}

    agent.kill9()  # no shutdown path: what was acknowledged must already be on disk
    restarted = time.time()
    agent.start()
    # A probe by the restarted process (not the state reported before the kill) sees the key.
    after = wait_for(lambda: claude_has_key(sup, 3, restarted), "the restored key reaching the tools", 60)
    assert after["credential_sync"] == "in_sync"
    with sup.client() as c:
        audit = c.get("/api/v1/audit", params={"action": "credential_push", "limit": 100}).json()["data"]
    assert len(audit) == 1  # in sync again without another push
    assert "restored pushed credentials version 3: 1 variable(s) (ANTHROPIC_API_KEY)" in agent.log_text()

    # An older push never replaces the newer one the agent holds.
    r = push(sup, 2, "sk-ant-api03-OLDER-000000000000")
    assert r.status_code == 502 and "version 2 is older than version 3" in r.json()["error"], r.text
    assert json.loads(values.read_text())["env"] == {"ANTHROPIC_API_KEY": SECRET}
    assert auth_of(sup)["credential_version"] == 3

    # The value only in the values file.
    agent.stop()
    others = [p for p in agent.workdir.rglob("*") if p.is_file() and p != values]
    assert others and not [p for p in others if SECRET.encode() in p.read_bytes()]
    sup.stop()
    assert not [p for p in sup.workdir.rglob("*") if p.is_file() and p != sup.config_path
                and SECRET.encode() in p.read_bytes()]
