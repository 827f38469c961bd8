"""The REAL hal-agent against the REAL supervisor, without a real opencode: registration, capabilities,
heartbeats, graceful stop, commands that cannot run, and the event path through a fake opencode."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.agent_proc import FakeOpencode, api_get, assert_gap_free, node, node_status
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def sup(make_supervisor):  # type: ignore[no-untyped-def]
    return make_supervisor(server={"heartbeat_interval_sec": 1, "heartbeat_timeout_count": 3}).start()


def events(sup, **params):  # type: ignore[no-untyped-def]
    return api_get(sup, "/api/v1/events", limit=1000, **params)


def test_registers_with_projects_capabilities_and_heartbeats(sup, make_agent, tmp_path: Path) -> None:
    alpha = tmp_path / "alpha"
    alpha.mkdir()
    agent = make_agent(sup, "reg", projects=[("alpha", str(alpha)), ("ghost", str(tmp_path / "ghost"))],
                       manage=False)  # attach to a port where nothing listens
    agent.start()
    n = agent.wait_online(sup)
    assert n["projects"] == ["alpha"]  # the missing directory is not offered
    assert n["project_directories"] == {"alpha": str(alpha)}
    assert n["version"] and n["hostname"]
    caps = n["capabilities"]
    assert caps["opencode"] is False
    assert caps["sessions"]["available"] is False
    assert f"no opencode server answers at 127.0.0.1:{agent.opencode_port}" in caps["sessions"]["reason"]
    assert caps["opencode_server"]["mode"] == "attach"
    assert caps["projects_invalid"] == [{"name": "ghost", "directory": str(tmp_path / "ghost"),
                                         "reason": "directory does not exist"}]
    assert set(caps["tools"]) == {"opencode", "claude_code", "codex"}
    spec_keys = {"cpu_percent", "ram_used_mb", "ram_total_mb", "disk_used_gb", "disk_total_gb"}
    outbox_keys = {"outbox_pending", "outbox_max_events", "outbox_refused_total"}  # from the first heartbeat
    assert spec_keys <= set(n["resources"]) <= spec_keys | outbox_keys
    res = wait_for(lambda: (r := node(sup, "node-reg")["resources"]).keys() >= outbox_keys and r, "outbox in resources")
    assert res["outbox_max_events"] == 100000 and res["outbox_refused_total"] == 0

    warn = wait_for(lambda: events(sup, node_id="node-reg", type="agent.warning"), "agent.warning stored")
    assert "project ghost" in warn[0]["data"]["message"] and warn[0]["seq"] == 1

    first = n["last_heartbeat"]
    wait_for(lambda: node(sup, "node-reg")["last_heartbeat"] != first, "a heartbeat (interval 1 s)", 10)
    assert node_status(sup, "node-reg") == "online"

    # Tool auth is probed and reported by the agent's AuthService, per tool, with a reason.
    auth = wait_for(lambda: (api_get(sup, "/api/v1/nodes/node-reg/auth")["auth_states"] or None),
                    "auth_state reported", 60)
    assert set(auth) == {"opencode", "claude_code", "codex"}
    for state in auth.values():
        assert state["status"] in {"authenticated", "unauthenticated", "not_installed", "error", "manual_required"}
        assert state["checked_at"]


def test_missing_opencode_binary_still_registers_and_says_why(sup, make_agent, tmp_path: Path) -> None:
    proj = tmp_path / "p"
    proj.mkdir()
    agent = make_agent(sup, "nobin", projects=[("p", str(proj))], manage=True,
                       binary=str(tmp_path / "no-such-opencode"))
    agent.start()
    n = agent.wait_online(sup)
    caps = n["capabilities"]
    assert caps["opencode"] is False and caps["opencode_server"]["state"] == "not_installed"
    assert "opencode is not installed" in caps["sessions"]["reason"]
    warn = wait_for(lambda: events(sup, node_id="node-nobin", type="agent.warning"), "warning")
    assert "opencode is not installed" in warn[0]["data"]["message"]

    with sup.client() as c:
        r = c.post("/api/v1/sessions", json={"project": "p", "prompt": "hi"})
        assert r.status_code == 502
        assert "opencode is not available on this node: opencode is not installed" in r.json()["error"]
        # Commands that do not need opencode still work on such a node.
        r = c.post("/api/v1/commands", json={"type": "auth_refresh", "target": {"node_id": "node-nobin"}})
        assert r.json()["data"]["status"] == "success", r.json()
        r = c.post("/api/v1/commands", json={"type": "session_status", "target": {"node_id": "node-nobin"},
                                             "args": {"session_id": "ses_x"}})
        assert r.json()["data"]["error"] == "session ses_x not found on this node"


def test_sigterm_stops_cleanly_and_the_node_goes_offline(sup, make_agent) -> None:
    agent = make_agent(sup, "term").start()
    agent.wait_online(sup)
    started = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - started < 10
    wait_for(lambda: node_status(sup, "node-term") == "offline", "node offline", 3)
    log = agent.log_text()
    assert "hal-agent stopped" in log and "Traceback" not in log


def test_events_from_opencode_reach_the_supervisor_in_order(sup, make_agent, tmp_path: Path) -> None:
    proj = tmp_path / "p"
    proj.mkdir()
    fake = FakeOpencode().start()
    try:
        seeded = fake.add_session(str(proj), title="existing")
        fake.add_session("/somewhere/else", title="foreign")
        agent = make_agent(sup, "flow", projects=[("p", str(proj))], opencode_port=fake.port)
        agent.start()
        n = agent.wait_online(sup, sessions_available=True)
        assert n["capabilities"]["opencode"] is True
        # the session that existed before the agent started is in the register snapshot
        s = api_get(sup, f"/api/v1/sessions/{seeded['id']}")
        assert s["project"] == "p" and s["status"] == "idle" and s["title"] == "existing"
        assert [x["id"] for x in api_get(sup, "/api/v1/sessions")] == [seeded["id"]]  # foreign one skipped

        sid = seeded["id"]
        ids = [fake.emit("message.part.updated", {"sessionID": sid, "part": {"n": i}}, str(proj)) for i in range(50)]
        fake.emit("plugin.added", {"name": "noise"}, str(proj))
        stored = wait_for(lambda: len(events(sup, type="message.part.updated")) == 50 and
                          events(sup, type="message.part.updated"), "50 events stored")
        assert [e["event_id"] for e in stored] == ids
        assert [e["data"]["part"]["n"] for e in stored] == list(range(50))
        assert all(e["project"] == "p" and e["session_id"] == sid for e in stored)
        assert events(sup, type="plugin.added") == []
        assert_gap_free(sup, "node-flow")

        # a command through the real process against the fake server
        with sup.client() as c:
            r = c.post("/api/v1/sessions", json={"project": "p", "prompt": "hello"})
            assert r.status_code == 201, r.text
            new = r.json()["data"]
            assert new["project"] == "p" and new["node_id"] == "node-flow"
        assert fake.prompts == [(new["id"], "hello")]
        wait_for(lambda: api_get(sup, f"/api/v1/sessions/{new['id']}")["status"] == "idle", "turn over")
        with sup.client() as c:
            r = c.delete(f"/api/v1/sessions/{new['id']}")
            assert r.status_code == 200 and r.json()["data"]["output"]["status"] == "killed"
        wait_for(lambda: api_get(sup, f"/api/v1/sessions/{new['id']}")["status"] == "killed", "killed")
    finally:
        fake.stop()
