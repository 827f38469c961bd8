"""Dependencies in the real supervisor: cycles refused at validation, ready/blocked in the API, and a
completed upstream starting its ready dependents (session completed, or a project.status event)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from halswarm.protocol import Command, CommandResult
from tests.support.agentsim import SimAgent, session_state
from tests.support.supervisor_proc import REPO
from tests.support.waiting import until

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


async def test_completed_upstream_starts_ready_dependents(make_supervisor: Any) -> None:
    sup = make_supervisor(dependencies=DEPS, dependencies_autostart=True).start()
    projects = [(p, f"/srv/{p}") for p in ("core", "api", "web", "docs")]
    agent = SimAgent(sup.ws_url, sup.agent_token, "dep-node", projects)
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
            # The event is stored by the ingest writer, a moment after the state changed.
            started = await until(lambda: c.get("/api/v1/events", params={"type": "dependency.started"}
                                                ).json()["data"])
            assert [(e["project"], e["data"]["upstream"]) for e in started] == [("api", "core")]
            assert started[0]["session_id"] == "ses_api_1"
            audit = await until(lambda: c.get("/api/v1/audit", params={"actor": "dependencies"}).json()["data"])
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


def test_progress_md_edit_in_a_real_agent_starts_the_ready_dependent(make_supervisor: Any, tmp_path: Path) -> None:
    """The real `hal-agent` process watches `.context/PROGRESS.md`: the status line turning `completed`
    travels as a `project.status` event and the supervisor starts the ready dependent on that agent
    (opencode is the loopback fake; the session is really created through it)."""
    from tests.support.agent_proc import AgentProc, FakeOpencode, api_get
    from tests.support.waiting import wait_for

    sup = make_supervisor(dependencies={"api": ["core"]}, dependencies_autostart=True).start()
    core, api = tmp_path / "core", tmp_path / "api"
    for d in (core, api):
        (d / ".context").mkdir(parents=True)
    progress = core / ".context" / "PROGRESS.md"
    progress.write_text("# Progress\n\nStatus: in progress\n")
    fake = FakeOpencode().start()
    agent = AgentProc(tmp_path / "agent", sup.ws_url, sup.agent_token, node_id="node-deps",
                      projects=[("core", str(core)), ("api", str(api))], opencode_port=fake.port)
    try:
        agent.start()
        agent.wait_online(sup, sessions_available=True)

        def statuses() -> list[str]:
            return [e["data"]["status"] for e in api_get(sup, "/api/v1/events", type="project.status")]

        wait_for(lambda: statuses() == ["in_progress"], "in_progress status event")
        deps = {p["project"]: p for p in api_get(sup, "/api/v1/dependencies")["projects"]}
        assert deps["api"]["state"] == "blocked" and deps["api"]["blocked_by"] == ["core"]
        assert fake.prompts == []

        progress.write_text("# Progress\n\n- **Status:** completed\n")
        started = wait_for(lambda: api_get(sup, "/api/v1/events", type="dependency.started"), "dependent started")
        assert [(e["project"], e["data"]["upstream"]) for e in started] == [("api", "core")]
        assert statuses() == ["in_progress", "completed"]
        ev = api_get(sup, "/api/v1/events", type="project.status")[-1]
        assert ev["project"] == "core" and ev["node_id"] == "node-deps"
        assert ev["data"]["previous"] == "in_progress" and ev["data"]["source"] == ".context/PROGRESS.md"
        # the session was created through the agent in the dependent's directory, with the upstream prompt
        assert [s["directory"] for s in fake.sessions.values()] == [str(api)]
        assert len(fake.prompts) == 1 and "core" in fake.prompts[0][1]
        deps = {p["project"]: p for p in api_get(sup, "/api/v1/dependencies")["projects"]}
        assert deps["core"]["state"] == "completed" and deps["api"]["ready"]
    finally:
        agent.cleanup()
        fake.stop()
