"""Dependencies in the real supervisor: cycles refused at validation, ready/blocked in the API, and a
completed upstream starting its ready dependents (session completed, or a project.status event)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from halswarm.protocol import Command, CommandResult
from tests.support.agentsim import SimAgent, session_state
from tests.support.supervisor_proc import REPO

TOKEN = "d" * 48
DEPS = {"api": ["core"], "web": {"depends_on": ["api", "core"]}, "docs": []}


def test_cycle_is_rejected_at_validation_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "sup.json"
    cfg.write_text(json.dumps({"auth_token": TOKEN, "dependencies": {"core": ["web"], "api": ["core"],
                                                                     "web": {"depends_on": ["api"]}}}))
    cfg.chmod(0o600)
    p = subprocess.run([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(cfg), "--validate"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 1
    assert "dependencies.api: cycle detected: api -> core -> web -> api" in p.stdout + p.stderr


async def until(pred: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.1)


async def test_completed_upstream_starts_ready_dependents(make_supervisor: Any) -> None:
    sup = make_supervisor(dependencies=DEPS, dependencies_autostart=True).start()
    projects = [(p, f"/srv/{p}") for p in ("core", "api", "web", "docs")]
    agent = SimAgent(sup.ws_url, sup.token, "dep-node", projects)
    created: list[str] = []

    def handler(cmd: Command) -> CommandResult:
        if cmd.type == "create_session":
            created.append(cmd.args["project"])
            return CommandResult(cmd.command_id, "success",
                                 session_state(f"ses_{cmd.args['project']}_{len(created)}", cmd.args["project"],
                                               "running"))
        return CommandResult(cmd.command_id, "failure", None, "unexpected")

    agent.handler = handler
    await agent.connect(sessions=[session_state("ses_core", "core", "running"),
                                  session_state("ses_old", "docs", "completed")])
    try:
        with sup.client() as c:
            def states() -> dict[str, Any]:
                data = c.get("/api/v1/dependencies").json()["data"]
                return {p["project"]: p for p in data["projects"]} | {"_autostart": data["autostart"]}

            st = states()
            assert st["_autostart"] is True
            assert st["core"]["state"] == "running" and st["core"]["ready"]
            assert st["api"]["state"] == "blocked" and st["api"]["blocked_by"] == ["core"]
            assert st["web"]["blocked_by"] == ["api", "core"] and st["docs"]["state"] == "completed"
            await asyncio.sleep(2.5)
            assert created == []  # docs was already complete before: nothing to start

            # core completes (its session) -> api starts; web still waits for api.
            await agent.send_event(1, "session.state", session_id="ses_core", project="core",
                                   data=session_state("ses_core", "core", "completed"))
            await until(lambda: created == ["api"])
            st = await until(lambda: (s := states())["api"]["state"] == "running" and s)
            assert st["core"]["state"] == "completed" and st["web"]["blocked_by"] == ["api"]
            started = c.get("/api/v1/events", params={"type": "dependency.started"}).json()["data"]
            assert [(e["project"], e["data"]["upstream"]) for e in started] == [("api", "core")]
            assert started[0]["session_id"] == "ses_api_1"
            audit = c.get("/api/v1/audit", params={"actor": "dependencies"}).json()["data"]
            assert [a["action"] for a in audit] == ["create_session"]

            # api completes by its PROGRESS.md status (project.status event) -> web starts.
            await agent.send_event(2, "project.status", project="api",
                                   data={"status": "completed", "source": ".context/PROGRESS.md"})
            await until(lambda: created == ["api", "web"])
            await asyncio.sleep(2.5)
            assert created == ["api", "web"]  # once
            data = c.get("/api/v1/dependencies").json()["data"]
            assert [r["project"] for r in data["recent_starts"]] == ["web", "api"]
    finally:
        await agent.close()
