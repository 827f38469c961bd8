"""Policies in the real supervisor process, with a protocol-speaking agent answering the commands.

The scenario drives a `Fleet`: something that can put sessions into the states the policies act on
and answers resume / handover / kill_session like hal-agent does (docs/protocol.md). `SimFleet` uses
tests/support/agentsim.py; a fleet backed by the real hal-agent + opencode + fake LLM can implement
the same four methods and run the same scenario.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from halswarm.protocol import Command
from tests.support.agentsim import SimAgent
from tests.support.simfleet import SimFleet
from tests.support.waiting import until

POLICIES = {
    "check_interval_seconds": 1,
    "resume_on_idle": {"enabled": True, "idle_threshold_seconds": 4, "max_retries": 2, "retry_reset_seconds": 3600,
                       "message": "Continue with the next step of .context/CURRENT_TASK.md"},
    "restart_on_compaction": {"enabled": True, "compaction_threshold": 2, "max_retries": 2},
    "kill_on_cost": {"enabled": True, "cost_threshold_usd": 5.0, "max_retries": 1},
}


class Fleet(Protocol):
    commands: list[Command]

    async def idle_session(self) -> str: ...
    async def compacted_session(self) -> str: ...
    async def costly_session(self) -> str: ...
    async def unresponsive_session(self) -> str: ...


def events(c: Any, etype: str) -> list[dict[str, Any]]:
    return c.get("/api/v1/events", params={"type": etype, "limit": 1000}).json()["data"]


async def test_policies_act_once_audit_route_and_survive_restart(make_supervisor: Any) -> None:
    sup = make_supervisor(policies=POLICIES).start()
    fleet = SimFleet(sup)
    await fleet.connect()
    try:
        idle = await fleet.idle_session()
        compacted = await fleet.compacted_session()
        costly = await fleet.costly_session()
        stubborn = await fleet.unresponsive_session()

        # Idle: resumed once with the configured prompt, not on every 1 s check.
        await until(lambda: fleet.sent("resume", idle) == 1)
        first = next(c for c in fleet.commands if c.type == "resume" and c.target.session_id == idle)
        assert first.args["message"].startswith("Continue with the next step")
        await asyncio.sleep(2.5)
        assert fleet.sent("resume", idle) == 1
        # Compacted: handed over once; the new session replaces it. Costly: killed once.
        await until(lambda: fleet.sent("handover", compacted) == 1 and fleet.sent("kill_session", costly) == 1)
        # Unresponsive: two failed resumes, then the cap; nothing more until retry_reset_seconds.
        await until(lambda: fleet.sent("resume", stubborn) == 2)
        with sup.client() as c:
            caps = await until(lambda: [e for e in events(c, "policy.retry_cap") if e["session_id"] == stubborn])
            assert len(caps) == 1 and caps[0]["data"]["reason"] == "max_retries_reached"
            assert caps[0]["data"]["last_error"] == "opencode did not accept the prompt"
            # Idle: each resume "worked" (the session answered, then went idle again), yet a resume is an
            # action like any other: the second one uses up max_retries, the third is stopped by the cap.
            caps = await until(lambda: (e := events(c, "policy.retry_cap")) and len(e) == 2 and e,
                               "the cap for the session whose resumes worked", 30)
            worked = next(e["data"] for e in caps if e["session_id"] == idle)
            assert worked["last_result"] == "success" and worked["last_error"] is None and worked["retry_count"] == 2
            assert fleet.sent("resume", idle) == 2
            actions = events(c, "policy.action")
            by = {(e["session_id"], e["data"]["action"], e["data"]["result"]) for e in actions}
            assert {(idle, "resume", "success"), (compacted, "handover", "success"),
                    (costly, "kill_session", "success"), (stubborn, "resume", "failure")} <= by
            assert all(e["node_id"] == "policy-node" and e["project"] == "alpha" for e in actions)
            sessions = {s["id"]: s for s in c.get("/api/v1/sessions").json()["data"]}
            assert sessions[compacted]["status"] == "killed" and sessions[costly]["status"] == "killed"
            assert len([s for s in sessions.values() if s["status"] == "running"]) == 1  # the handover's successor
            audit = c.get("/api/v1/audit", params={"actor": "policy", "limit": 100}).json()["data"]
            assert {a["action"] for a in audit} >= {"resume", "handover", "kill_session"}
            assert all(a["args"]["policy"] in ("resume_on_idle", "restart_on_compaction", "kill_on_cost")
                       for a in audit)
            state = {(r["session_id"], r["policy"]): r for r in c.get("/api/v1/policies").json()["data"]["state"]}
            assert state[(stubborn, "resume_on_idle")]["retry_count"] == 2 and state[(stubborn, "resume_on_idle")][
                "capped"]
        await asyncio.sleep(1.5)
        assert fleet.sent("resume", stubborn) == 2 and fleet.sent("resume", idle) == 2
        with sup.client() as c:
            assert len(events(c, "policy.retry_cap")) == 2  # once per capped session, not on every check
        assert fleet.sent("handover", compacted) == 1 and fleet.sent("kill_session", costly) == 1

        # Restart: the retry state comes back from the database.
        await fleet.close()
        assert sup.stop() == 0
        sup.start()
        fleet.agent = SimAgent(sup.ws_url, sup.agent_token, "policy-node", [("alpha", "/srv/alpha")])
        fleet.agent.handler = fleet.handle
        fleet.commands = fleet.agent.commands
        await fleet.connect()
        with sup.client() as c:
            data = c.get("/api/v1/policies").json()["data"]
            assert data["enabled"] and data["running"] and data["check_interval_seconds"] == 1
            assert data["policies"]["resume_on_idle"]["idle_threshold_seconds"] == 4
            row = next(r for r in data["state"] if r["session_id"] == stubborn)
            assert row["retry_count"] == 2 and row["capped"] and row["blocked_until"]
            await asyncio.sleep(2.5)
            assert fleet.sent("resume", stubborn) == 0 and fleet.sent("resume", idle) == 0  # still capped
            assert len(events(c, "policy.retry_cap")) == 2
    finally:
        await fleet.close()
