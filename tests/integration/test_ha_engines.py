"""The leader's policies and dependency autostart see the whole fleet on a shared PostgreSQL (issue 21
point 2): an agent on the follower B, the leader A resumes B's idle session (the command forwarded to B)
up to `max_retries`, and a `project.status` completion B ingested makes A start the dependent project once;
after kill -9 of A, B leads with the stored retry state and marks: the cap holds and nothing starts twice.
Two real supervisor processes, a real SimAgent over WebSocket, a private PostgreSQL cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from halswarm.core.timeutil import iso
from halswarm.protocol import Command, CommandResult
from tests.integration.test_ha_leader import leader_gauge, pg_rows, policy_checks
from tests.support.agentsim import SimAgent, session_state
from tests.support.postgres import PostgresCluster
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(300)

MAX_RETRIES = 2
POLICIES = {"check_interval_seconds": 1,
            "resume_on_idle": {"enabled": True, "idle_threshold_seconds": 1, "max_retries": MAX_RETRIES,
                               "retry_reset_seconds": 3600}}
DEPENDENCIES = {"down": ["up"]}


def supervisor(tmp_path: Path, name: str, cluster: PostgresCluster, url: str) -> SupervisorProc:
    secret = tmp_path / f"{name}.password"
    secret.write_text(cluster.password + "\n")
    secret.chmod(0o600)
    return SupervisorProc(tmp_path / name, extra={"storage": {"url": url, "password_file": str(secret)},
                                                  "policies": POLICIES, "dependencies": DEPENDENCIES,
                                                  "dependencies_autostart": True})


class Agent:
    """Answers `resume` (the session stays idle) and `create_session` (a new running session) as an agent
    would, and keeps every command it got."""

    def __init__(self, sup: SupervisorProc) -> None:
        self.sim = SimAgent(sup.ws_url, sup.agent_token, "nb", [("p", "/p"), ("up", "/up"), ("down", "/down")])
        self.sim.handler = self.handle

    def handle(self, cmd: Command) -> CommandResult:
        if cmd.type == "create_session":
            out = {"id": "ses_down1", "project": cmd.args.get("project"), "status": "running"}
            return CommandResult(cmd.command_id, "success", out)
        return CommandResult(cmd.command_id, "success")

    def got(self, ctype: str) -> list[Command]:
        return [c for c in self.sim.commands if c.type == ctype]


def count(cluster: PostgresCluster, url: str, sql: str, *args: Any) -> int:
    return int(pg_rows(cluster, url, sql, *args)[0][0])


async def test_the_leader_acts_on_sessions_and_triggers_of_a_node_held_elsewhere_and_a_move_keeps_its_state(
        tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.password_database()
    a = supervisor(tmp_path, "a", pg_cluster, url)
    b = supervisor(tmp_path, "b", pg_cluster, url)
    agent: Agent | None = None
    try:
        a.start(timeout=90)
        await until(lambda: leader_gauge(a) == 1.0, "A leader (the lock was free)", 60)
        b.start(timeout=90)
        await until(lambda: leader_gauge(b) == 0.0, "B a follower", 60)

        # The agent registers with B only, with a session idle for an hour.
        agent = Agent(b)
        idle = session_state("ses_idle", "p", "idle", last_activity=iso(time.time() - 3600))
        await agent.sim.connect(sessions=[idle])

        # Dependency trigger ingested by B: project `up` completed.
        await agent.sim.send_event(1, "project.status", project="up", data={"status": "completed", "source": "test"})
        await agent.sim.wait_acked(1, timeout=30)

        # Policies: the leader A resumes B's idle session through forwarding, max_retries times, then caps.
        await until(lambda: len(agent.got("resume")) >= MAX_RETRIES, "A's resumes reaching the agent on B", 60)
        capped = "SELECT count(*) FROM policy_state WHERE session_id = 'ses_idle' AND capped_at IS NOT NULL"
        await until(lambda: count(pg_cluster, url, capped) == 1, "the cap stored", 60)
        # Dependencies: A starts `down` on B's node once.
        await until(lambda: agent.got("create_session"), "A's create_session reaching the agent on B", 60)
        assert agent.got("create_session")[0].args["project"] == "down"
        # A few more checks of A change nothing (the cap holds, the completion was acted on).
        seen = policy_checks(a)["checks"]
        await until(lambda: policy_checks(a)["checks"] >= seen + 5, "five more policy checks on A", 60)
        assert len(agent.got("resume")) == MAX_RETRIES and len(agent.got("create_session")) == 1
        ran_on_a = a.log_path.read_text(errors="replace")
        assert "policy resume_on_idle: resume ses_idle -> success" in ran_on_a
        assert "dependencies: up completed -> start down: success" in ran_on_a
        state = pg_rows(pg_cluster, url, "SELECT retry_count, last_result FROM policy_state"
                        " WHERE session_id = 'ses_idle' AND policy = 'resume_on_idle'")
        assert state == [(MAX_RETRIES, "success")]

        # The leader moves: B leads with the stored retry state and dependency marks.
        a.kill9()
        await until(lambda: leader_gauge(b) == 1.0, "B leader after kill -9 of A", 90)
        await until(lambda: policy_checks(b)["checks"] >= 5, "five policy checks on the new leader B", 60)
        assert len(agent.got("resume")) == MAX_RETRIES, "the new leader resumed past max_retries"
        assert len(agent.got("create_session")) == 1, "the new leader started the dependent again"
        assert count(pg_cluster, url, "SELECT count(*) FROM dependency_starts") == 1
        assert pg_rows(pg_cluster, url, "SELECT node_id, session_id, project FROM events"
                       " WHERE type = 'dependency.started'") == [("nb", "ses_down1", "down")]
        assert count(pg_cluster, url, "SELECT count(*) FROM events WHERE type = 'policy.retry_cap'") == 1
        assert count(pg_cluster, url, "SELECT count(*) FROM events WHERE type = 'policy.action'") == MAX_RETRIES
        snap = policy_checks(b)
        assert [(r["session_id"], r["retry_count"], r["capped"]) for r in snap["state"]] == [
            ("ses_idle", MAX_RETRIES, True)]
    finally:
        if agent is not None:
            await agent.sim.close()
        for sup in (b, a):
            sup.stop()
