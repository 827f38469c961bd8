"""The credential drift watcher is a service of the supervisor, not of its HTTP app (issue 16): with the
API disabled (`http_port: 0`) a drifting node is still detected and gets the configured credentials, and
`Supervisor.shutdown` stops the watcher. Real supervisor (in this process, to see its tasks), real
WebSocket hub on loopback, real SQLite, a protocol-speaking agent."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from pathlib import Path

from halswarm.config import parse_supervisor_config
from halswarm.protocol import Command, CommandResult, CredentialSync, encode
from halswarm.supervisor.app import Supervisor
from tests.support.agentsim import SimAgent
from tests.support.ports import free_port
from tests.support.waiting import until

SECRET = "sk-ant-api03-WATCHER-0a1b2c3d4e5f"


def stored_types(db: Path, node_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT type FROM events WHERE node_id = ? ORDER BY rowid", (node_id,))]


def applied(cmd: Command) -> CommandResult:
    if cmd.type != "credential_push":
        return CommandResult(cmd.command_id, "failure", error=f"unsupported command {cmd.type}")
    return CommandResult(cmd.command_id, "success", output={"applied": sorted(cmd.args["env_vars"]),
                                                            "credential_version": cmd.args["version"]})


async def test_drift_watcher_runs_without_http_api_and_stops_at_shutdown(tmp_path: Path) -> None:
    agent_token = secrets.token_hex(32)
    db = tmp_path / "supervisor.db"
    cfg, _ = parse_supervisor_config({
        "server": {"host": "127.0.0.1", "port": free_port(), "http_port": 0, "auth_token": agent_token},
        "database": {"path": str(db)},
        "credentials": {"version": 2, "defaults": {"env": {"ANTHROPIC_API_KEY": SECRET}}},
    })
    sup = Supervisor(cfg)
    await sup.start()
    agent = SimAgent(f"ws://127.0.0.1:{sup.hub.bound_port}/ws/agent", agent_token, "node-a")
    agent.handler = applied
    try:
        assert sup._api is None  # no HTTP app was built
        await agent.connect()
        await agent.send_raw(encode(CredentialSync(credential_version=1)))
        push = await until(lambda: next((c for c in agent.commands if c.type == "credential_push"), None),
                           what="the watcher's auto-push of the configured credentials")
        assert push.args == {"env_vars": {"ANTHROPIC_API_KEY": SECRET}, "version": 2}
        assert sup.drift_watcher.last["node-a"] == "drift_detected"
        await until(lambda: "credential.pushed" in stored_types(db, "node-a"), what="the push's stored event")
    finally:
        await agent.close()
        await sup.shutdown()

    assert not sup.drift_watcher.running
    assert [t for t in asyncio.all_tasks() if t.get_name() == "credential-drift-watcher"] == []
    types = stored_types(db, "node-a")
    assert "credential.drift_detected" in types and "credential.pushed" in types, types
    assert SECRET not in db.read_bytes().decode(errors="replace")
