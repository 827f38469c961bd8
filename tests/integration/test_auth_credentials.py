"""Real supervisor process + real agent-side AuthService over SupervisorConnection:
drift, push -> sync -> drift cleared (stand-in CLIs and the real claude), drift recomputed on
credential_sync, auto-push, OAuth trigger (manual_required JSON recorded by the agent, device flow),
auth.changed stored and routed, auth state surviving a supervisor restart, and no secret value
anywhere the supervisor or the agent keeps or says things (diagnostics bundle included)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from halswarm.ops import diagnostics
from tests.fakes.receivers import Receiver
from tests.support.agent_side import AuthAgent
from tests.support.api import aclient, wait_api
from tests.support.auth_tools import CLAUDE_MANUAL_REQUIRED, stand_in_tools
from tests.support.halctl import ahalctl
from tests.support.supervisor_proc import InstalledSupervisorProc
from tests.support.waiting import until

BIN = Path(__file__).resolve().parents[2] / ".tools" / "npm" / "node_modules" / ".bin"

SECRET = "sk-ant-api03-LEAKCHECK-9f8e7d6c5b4a"
SECRET2 = "ghp_LEAKCHECK2_0a1b2c3d4e5f6a7b"


@pytest_asyncio.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    sups: list[InstalledSupervisorProc] = []
    agents: list[AuthAgent] = []

    async def factory(node_id: str = "agent-node-1", *, drift_poll: float | None = None,
                      service_kwargs: dict[str, Any] | None = None,
                      **extra: Any) -> tuple[InstalledSupervisorProc, AuthAgent]:
        sup = InstalledSupervisorProc(tmp_path / f"sup-{len(sups)}", extra=extra, drift_poll=drift_poll)
        sups.append(sup)
        sup.start()
        agent = AuthAgent(sup, node_id, tmp_path / f"agent-{node_id}", service_kwargs=service_kwargs or {
            "base_env": stand_in_tools(tmp_path / f"tools-{node_id}")})
        agents.append(agent)
        await agent.start()
        return sup, agent

    yield factory
    for a in agents:
        await a.stop()
    for s in sups:
        s.stop()


async def test_push_sync_drift_cleared(make_env: Callable[..., Any]) -> None:
    sup, _ = await make_env(credentials={"version": 2, "auto_push": False})
    node = await wait_api(sup, "/nodes/agent-node-1/auth", lambda d: d["credential_sync"] == "drift_detected")
    assert node["credential_version"] == 0
    assert node["auth_states"]["claude_code"]["status"] == "unauthenticated"
    drift = await wait_api(sup, "/auth/drift", lambda d: len(d) == 1)
    assert drift[0]["node_id"] == "agent-node-1" and drift[0]["credential_sync"] == "drift_detected"

    async with aclient(sup, prefix="") as c:
        r = await c.post("/api/v1/commands/credentials/push", json={
            "target_node": "agent-node-1", "env_vars": {"ANTHROPIC_API_KEY": SECRET, "GITHUB_TOKEN": SECRET2},
            "version": 2})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["status"] == "success" and data["credential_sync"] == "in_sync"
    assert data["output"]["applied"] == ["ANTHROPIC_API_KEY", "GITHUB_TOKEN"]
    assert SECRET not in r.text
    # drift cleared, and the pushed key really reached the tools (claude now sees ANTHROPIC_API_KEY)
    assert await wait_api(sup, "/auth/drift", lambda d: d == []) == []
    node = await wait_api(sup, "/nodes/agent-node-1/auth",
                          lambda d: d["auth_states"]["claude_code"]["status"] == "authenticated")
    assert node["credential_sync"] == "in_sync" and node["credential_version"] == 2

    # halctl shows the runbook's layout
    out = await ahalctl(sup, "auth", "status", "agent-node-1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Node: agent-node-1\nCredential Sync: in_sync\nCredential Version: 2\n\n"
                                 "Tool            Status              Reason\n")
    assert "claude_code     authenticated       API key from ANTHROPIC_API_KEY" in out.stdout
    out = await ahalctl(sup, "auth", "drift")
    assert out.returncode == 0 and "Total: 0 nodes with credential drift" in out.stdout

    # validation: Go's 400s
    async with aclient(sup, prefix="") as c:
        push = "/api/v1/commands/credentials/push"
        assert (await c.post(push, json={"target_node": "agent-node-1", "env_vars": {}})).status_code == 400
        assert (await c.post(push, json={"target_node": "agent-node-1", "env_vars": {"A": ""}})).status_code == 400
        assert (await c.post(push, json={"target_node": "nope", "env_vars": {"A": "b"}})).status_code == 404
        bad = await c.post("/api/v1/commands/credentials/push", json={"target_node": "agent-node-1",
                                                                "env_vars": {"PATH": "/evil"}})
        assert bad.status_code == 502 and "may not be pushed" in bad.json()["error"]


async def test_configured_credentials_are_pushed_to_drifting_nodes(make_env: Callable[..., Any]) -> None:
    sup, agent = await make_env(credentials={"version": 3, "defaults": {"env": {"ANTHROPIC_API_KEY": SECRET}},
                                             "agents": {"agent-node-1": {"env": {"GITHUB_TOKEN": SECRET2}}}})
    node = await wait_api(sup, "/nodes/agent-node-1/auth", lambda d: d["credential_sync"] == "in_sync")
    assert node["credential_version"] == 3
    assert agent.auth is not None and sorted(agent.auth.toolenv.pushed) == ["ANTHROPIC_API_KEY", "GITHUB_TOKEN"]
    events = await wait_api(sup, "/events?node_id=agent-node-1&type=credential.*",
                            lambda d: {"credential.drift_detected", "credential.pushed", "credential.in_sync"}
                            <= {e["type"] for e in d})
    pushed = next(e for e in events if e["type"] == "credential.pushed")
    assert pushed["data"]["names"] == ["ANTHROPIC_API_KEY", "GITHUB_TOKEN"]
    assert pushed["data"]["actor"] == "supervisor:auto-push"
    # POST push without env_vars: the configured section (idempotent re-push)
    async with aclient(sup, prefix="") as c:
        r = await c.post("/api/v1/commands/credentials/push", json={"target_node": "agent-node-1"})
        assert r.status_code == 200 and r.json()["data"]["output"]["credential_version"] == 3
        r = await c.post("/api/v1/commands/credentials/push", json={})  # nobody drifts: nothing to do
        assert r.status_code == 200 and r.json()["data"] == []


async def test_oauth_trigger(make_env: Callable[..., Any]) -> None:
    sup, _ = await make_env()
    async with aclient(sup, prefix="") as c:
        r = await c.post("/api/v1/oauth/trigger", json={"node_id": "agent-node-1", "tool": "claude_code"})
        assert r.status_code == 200 and r.json()["data"] == CLAUDE_MANUAL_REQUIRED
        assert (await c.post("/api/v1/oauth/trigger", json={"node_id": "nope", "tool": "codex"})).status_code == 404
        assert (await c.post("/api/v1/oauth/trigger", json={"tool": "codex"})).status_code == 400
        r = await c.post("/api/v1/oauth/trigger", json={"node_id": "agent-node-1", "tool": "codex"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["status"] == "challenge" and data["user_code"] == "K7QH-2XWPM"
    assert data["challenge_url"] == "https://auth.openai.com/codex/device"
    # the flow ends on the agent (the stand-in "logs in" after 1 s): event + fresh state, no polling of the agent
    ev = await wait_api(sup, "/events?node_id=agent-node-1&type=auth.oauth_completed", lambda d: len(d) == 1)
    assert ev[0]["data"]["status"] == "success" and ev[0]["data"]["flow_id"] == data["flow_id"]
    await wait_api(sup, "/nodes/agent-node-1/auth", lambda d: d["auth_states"]["codex"]["status"] == "authenticated")
    # halctl --output json prints the runbook's guidance for claude_code
    out = await ahalctl(sup, "auth", "login", "agent-node-1", "claude_code", "--output", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == CLAUDE_MANUAL_REQUIRED


async def test_secrets_never_leak(make_env: Callable[..., Any], tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("websockets", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    sup, agent = await make_env(credentials={"version": 5, "defaults": {"env": {"ANTHROPIC_API_KEY": SECRET}}})
    await wait_api(sup, "/nodes/agent-node-1/auth", lambda d: d["credential_sync"] == "in_sync")
    said: list[str] = []
    async with aclient(sup, prefix="") as c:
        r = await c.post("/api/v1/commands/credentials/push", json={
            "target_node": "agent-node-1", "env_vars": {"ANTHROPIC_API_KEY": SECRET, "DEPLOY_TOKEN": SECRET2},
            "version": 5, "idempotency_key": "k1"})
        assert r.status_code == 200, r.text
        said.append(r.text)
        command_id = r.json()["data"]["command_id"]
        r = await c.post("/api/v1/commands", json={"type": "auth_refresh", "target": {"node_id": "agent-node-1"}})
        said.append(r.text)
        for path in ("/api/v1/nodes", "/api/v1/nodes/agent-node-1", "/api/v1/nodes/agent-node-1/auth",
                     "/api/v1/auth/drift?all=true", "/api/v1/audit?limit=1000", "/api/v1/events?limit=10000",
                     f"/api/v1/commands/{command_id}", "/metrics"):
            said.append((await c.get(path)).text)
        audit = json.loads(said[-4])["data"]
        assert any(a["action"] == "credential_push" for a in audit)
        # the SSE stream too (events replayed since the start)
        async with c.stream("GET", "/api/v1/events/stream?since=0", timeout=10) as resp:
            async for line in resp.aiter_lines():
                said.append(line)
                if line.startswith(": connected"):
                    break
    data_dir = agent.data_dir
    await agent.stop()
    sup.stop()
    # everything the supervisor and the agent wrote (DB, WAL, log), except the config file it was given
    # and the agent's 0600 file that keeps the pushed values across restarts (its one job)
    values = data_dir / "credentials.values.json"
    assert stat.S_IMODE(values.stat().st_mode) == 0o600 and SECRET2.encode() in values.read_bytes()
    stores = [p for p in sup.workdir.rglob("*") if p.is_file() and p != sup.config_path]
    stores += [p for p in data_dir.rglob("*") if p.is_file() and p != values]
    assert any(p.name == "supervisor.db" for p in stores) and any(p.name == "credentials.json" for p in stores)
    rows = _dump_db(sup.db_path)
    # the escalation bundle of this supervisor (config, DB, log), collected and written like halctl does;
    # collect learns SECRET from the config's credentials section (by key), SECRET2 it cannot know
    files, summary = diagnostics.core().collect(units=[], config_files=[str(sup.config_path)], token_files=[],
                                                database=str(sup.db_path), events_limit=10000)
    assert "db/recent_events.json" in files and summary["database"]["integrity_ok"] is True
    bundle = tmp_path / "bundle" / "hal-diagnostics-auth.tar.gz"
    written = diagnostics.write_bundle(bundle, {"supervisor": {"files": files, "summary": summary}},
                                       include=[sup.log_path, data_dir / "credentials.json"])
    assert written["scan"]["passed"] is True
    scan = diagnostics.scan_tarball(bundle, [SECRET, SECRET2])
    assert scan["passed"] is True and scan["known_secrets"] == 2, scan
    assert "credential_push" in files["db/recent_events.json"] or "credential." in files["db/recent_events.json"]
    for secret in (SECRET, SECRET2):
        for text in said:
            assert secret not in text
        for p in stores:
            assert secret.encode() not in p.read_bytes(), f"secret found in {p}"
        assert secret not in rows
        assert secret not in caplog.text, "secret in the agent-side logs"


def _dump_db(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


async def test_auth_changed_is_stored_and_routed(make_env: Callable[..., Any]) -> None:
    receiver = Receiver().start()
    try:
        sup, _ = await make_env(routes=[{"match": "auth.*", "target": f"webhook:{receiver.url}/auth"}])
        await wait_api(sup, "/nodes/agent-node-1/auth",
                       lambda d: d["auth_states"].get("claude_code", {}).get("status") == "unauthenticated")
        async with aclient(sup, prefix="") as c:
            r = await c.post("/api/v1/commands/credentials/push", json={
                "target_node": "agent-node-1", "env_vars": {"ANTHROPIC_API_KEY": SECRET}, "version": 1})
            assert r.status_code == 200, r.text
        # the state change (claude_code: unauthenticated -> authenticated) is a stored auth.changed event ...
        events = await wait_api(sup, "/events?type=auth.changed",
                                lambda d: any(e["data"]["auth"].get("claude_code") == "authenticated" for e in d))
        changed = next(e for e in events if e["data"]["auth"].get("claude_code") == "authenticated")
        assert changed["node_id"] == "agent-node-1" and changed["type"] == "auth.changed"
        # ... and the auth.* route delivered it to the receiver
        def routed() -> list[Any]:
            return [b for b in receiver.bodies() if isinstance(b, dict) and b.get("event", {}).get("type")
                    == "auth.changed" and b["event"]["data"]["auth"].get("claude_code") == "authenticated"]

        got = await until(routed, "the routed auth.changed at the receiver", 30)
        assert got[0]["event"]["node_id"] == "agent-node-1"
        assert all(SECRET not in json.dumps(b) for b in receiver.bodies())
    finally:
        receiver.stop()


async def test_push_sync_drift_cleared_with_the_real_claude(make_env: Callable[..., Any], tmp_path: Path) -> None:
    if not (BIN / "claude").exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("claude not installed (scripts/install-test-clis.sh)")
        pytest.skip("claude not installed (scripts/install-test-clis.sh)")
    home = tmp_path / "claude-home"
    home.mkdir()
    sup, _ = await make_env(credentials={"version": 7, "auto_push": False}, service_kwargs={
        "base_env": {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "npm_config_offline": "true"},
        "tool_paths": {"codex": "/nonexistent/codex", "opencode": "/nonexistent/opencode"}})
    node = await wait_api(sup, "/nodes/agent-node-1/auth", lambda d: "claude_code" in d["auth_states"]
                          and d["credential_sync"] == "drift_detected", timeout=60)
    assert node["auth_states"]["claude_code"]["status"] == "unauthenticated", node
    async with aclient(sup, prefix="") as c:
        r = await c.post("/api/v1/commands/credentials/push", json={
            "target_node": "agent-node-1", "env_vars": {"ANTHROPIC_API_KEY": SECRET}, "version": 7})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["credential_sync"] == "in_sync"
    assert await wait_api(sup, "/auth/drift", lambda d: d == []) == []
    node = await wait_api(sup, "/nodes/agent-node-1/auth",
                          lambda d: d["auth_states"]["claude_code"]["status"] == "authenticated", timeout=60)
    assert node["credential_version"] == 7 and node["credential_sync"] == "in_sync"
    assert "ANTHROPIC_API_KEY" in node["auth_states"]["claude_code"]["reason"]
    assert SECRET not in json.dumps(node)


async def test_auth_state_survives_a_supervisor_restart(make_env: Callable[..., Any]) -> None:
    sup, agent = await make_env(credentials={"version": 4, "auto_push": False})
    async with aclient(sup, prefix="") as c:
        r = await c.post("/api/v1/commands/credentials/push", json={
            "target_node": "agent-node-1", "env_vars": {"ANTHROPIC_API_KEY": SECRET}, "version": 4})
        assert r.status_code == 200, r.text
    before = await wait_api(sup, "/nodes/agent-node-1/auth",
                            lambda d: d["auth_states"].get("claude_code", {}).get("status") == "authenticated"
                            and d["credential_version"] == 4)
    await agent.stop()  # no agent to re-report after the restart
    sup.stop()
    sup.start()
    async with aclient(sup, prefix="") as c:
        r = await c.get("/api/v1/nodes/agent-node-1/auth")
    assert r.status_code == 200, r.text
    after = r.json()["data"]
    assert after["credential_version"] == 4 and after["credential_sync"] == "in_sync"
    assert {t: s["status"] for t, s in after["auth_states"].items()} == \
        {t: s["status"] for t, s in before["auth_states"].items()}
    assert after["auth_states"]["claude_code"]["reason"] == "API key from ANTHROPIC_API_KEY"


async def test_drift_is_recomputed_on_credential_sync(make_env: Callable[..., Any]) -> None:
    # the poll is an hour away: only the credential_sync frames can drive the watcher
    sup, _ = await make_env(drift_poll=3600.0, credentials={"version": 2, "auto_push": False})
    await wait_api(sup, "/events?node_id=agent-node-1&type=credential.*",
                   lambda d: [e["type"] for e in d] == ["credential.drift_detected"], timeout=15)
    async with aclient(sup, prefix="") as c:
        r = await c.post("/api/v1/commands/credentials/push", json={
            "target_node": "agent-node-1", "env_vars": {"GITHUB_TOKEN": SECRET2}, "version": 2})
        assert r.status_code == 200, r.text
    events = await wait_api(sup, "/events?node_id=agent-node-1&type=credential.*&order=asc",
                            lambda d: "credential.in_sync" in [e["type"] for e in d], timeout=15)
    assert [e["type"] for e in events if e["type"] != "credential.pushed"] == \
        ["credential.drift_detected", "credential.in_sync"]


async def test_auto_push_without_waiting_for_the_poll(make_env: Callable[..., Any]) -> None:
    sup, agent = await make_env(drift_poll=3600.0, credentials={"version": 3,
                                                                 "defaults": {"env": {"ANTHROPIC_API_KEY": SECRET}}})
    node = await wait_api(sup, "/nodes/agent-node-1/auth", lambda d: d["credential_sync"] == "in_sync", timeout=15)
    assert node["credential_version"] == 3
    assert agent.auth is not None and sorted(agent.auth.toolenv.pushed) == ["ANTHROPIC_API_KEY"]


async def test_claude_trigger_is_recorded_as_manual_required(make_env: Callable[..., Any]) -> None:
    sup, agent = await make_env()
    await wait_api(sup, "/nodes/agent-node-1/auth",
                   lambda d: d["auth_states"].get("claude_code", {}).get("status") == "unauthenticated")
    async with aclient(sup, prefix="") as c:
        r = await c.post("/api/v1/oauth/trigger", json={"node_id": "agent-node-1", "tool": "claude_code"})
    assert r.status_code == 200 and r.json()["data"] == CLAUDE_MANUAL_REQUIRED  # answered at once, as before
    node = await wait_api(sup, "/nodes/agent-node-1/auth",
                          lambda d: d["auth_states"]["claude_code"]["status"] == "manual_required")
    assert node["auth_states"]["claude_code"]["reason"] == CLAUDE_MANUAL_REQUIRED["reason"]
    assert [c.type for c in agent.commands] == ["oauth_trigger"]
    out = await ahalctl(sup, "auth", "status", "agent-node-1")
    assert "claude_code     manual_required" in out.stdout, out.stdout
    # a later refresh keeps it while logged out ...
    async with aclient(sup, prefix="") as c:
        r = await c.post("/api/v1/commands", json={"type": "auth_refresh", "target": {"node_id": "agent-node-1"}})
        assert r.status_code == 200, r.text
        data = (await c.get("/api/v1/nodes/agent-node-1/auth")).json()["data"]
        assert data["auth_states"]["claude_code"]["status"] == "manual_required"
        # ... until a probe shows it authenticated (here: an API key pushed)
        r = await c.post("/api/v1/commands/credentials/push", json={
            "target_node": "agent-node-1", "env_vars": {"ANTHROPIC_API_KEY": SECRET}, "version": 1})
        assert r.status_code == 200, r.text
    await wait_api(sup, "/nodes/agent-node-1/auth",
                   lambda d: d["auth_states"]["claude_code"]["status"] == "authenticated")
